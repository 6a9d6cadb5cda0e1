"""The three inference services over real HTTP: protocols, clients, bad input, degradation, cache, log."""

from __future__ import annotations

import json
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.route_inventory import inventory_problems
from tests.serving.conftest import FAMILIES, REPO, VALID_ROWS, Server, _env

pytestmark = pytest.mark.serving


def v1(server: Server, instances: Any, **kw: Any) -> httpx.Response:
    url = f"{server.url}/v1/models/{server.family}:predict"
    kw["headers"] = {**server.auth, **kw.get("headers", {})}
    return httpx.post(url, json={"instances": instances}, timeout=10, **kw)


def v2(server: Server, inputs: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{server.family}/infer", json={"inputs": inputs}, headers=server.auth,
                      timeout=10)


def outputs(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def known_customers(home: Path, n: int = 3) -> list[int]:
    import pandas as pd

    frame = pd.read_parquet(home / "feast" / "sources" / "customer_features.parquet", columns=["customer_id"])
    return [int(c) for c in frame["customer_id"].drop_duplicates().head(n)]


def test_both_protocols_for_all_three_models_with_batches(servers: dict[str, Server], home: Path) -> None:
    fc, seg, rec = (servers[f] for f in FAMILIES)
    customers = known_customers(home)

    r = v1(fc, [{"category": "kitchen", "horizon": 3}, {"category": "garden"}])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == r.headers["x-model-version"] == "1"
    assert [len(p["forecasts"]) for p in body["predictions"]] == [3, 8]
    week = body["predictions"][0]["forecasts"][0]
    assert week["units_lower"] <= week["units"] <= week["units_upper"] and week["units"] > 0
    out = outputs(v2(fc, [{"name": "category", "datatype": "BYTES", "shape": [2], "data": ["kitchen", "toys_games"]},
                          {"name": "horizon", "datatype": "INT64", "shape": [1], "data": [4]}]))
    assert out["units"]["shape"] == [8] and out["category"]["data"][:4] == ["kitchen"] * 4
    assert out["step"]["data"] == [1, 2, 3, 4, 1, 2, 3, 4]

    r = v1(seg, [{"customer_id": customers[0]},
                 {"frequency": 40.0, "tenure_days": 500.0, "basket_lines": 30.0, "units_per_line": 24.0,
                  "unit_price": 1.5},
                 {"customer_id": 10**12}])
    assert r.status_code == 200, r.text
    a, b, c = r.json()["predictions"]
    assert not a["cold_start"] and not a["degraded"] and a["segment"]
    assert b["segment"] == "wholesale"  # big baskets of cheap units
    assert c["cold_start"] and not c["degraded"]  # unknown customer: documented cold start, not an error
    out = outputs(v2(seg, [{"name": "customer_id", "datatype": "INT64", "shape": [2], "data": customers[:2]}]))
    assert len(out["segment"]["data"]) == 2 and out["degraded"]["data"] == [False, False]

    r = v1(rec, [{"customer_id": customers[0], "k": 5}, {"customer_id": 10**12, "k": 3, "country": "France"}])
    assert r.status_code == 200, r.text
    warm, cold = r.json()["predictions"]
    assert len(warm["items"]) == 5 and not warm["cold_start"]
    assert len(cold["items"]) == 3 and cold["cold_start"]
    out = outputs(v2(rec, [{"name": "customer_id", "datatype": "INT64", "shape": [3], "data": customers},
                           {"name": "k", "datatype": "INT32", "shape": [1], "data": [4]}]))
    assert out["stock_codes"]["shape"] == [3, 4] and len(out["stock_codes"]["data"]) == 12

    for server in (fc, seg, rec):  # metadata describes the real tensors
        meta = httpx.get(f"{server.url}/v2/models/{server.family}", headers=server.auth, timeout=5).json()
        assert meta["inputs"] and meta["outputs"] and all(t["datatype"] for t in meta["inputs"] + meta["outputs"])


def test_direct_json_route_answers_as_kserve_does(servers: dict[str, Server], home: Path) -> None:
    """Plain JSON V2 requests are answered by our middleware; the same request with a (here empty)
    `parameters` object goes through kserve's decoder and encoder. Both answers are the same."""
    rec = servers["product-recommendation"]
    inputs = [{"name": "customer_id", "datatype": "INT64", "shape": [2], "data": known_customers(home, 2)},
              {"name": "k", "datatype": "INT32", "shape": [1], "data": [3]}]
    url = f"{rec.url}/v2/models/{rec.family}/infer"
    direct = httpx.post(url, json={"inputs": inputs, "id": "same"}, headers=rec.auth, timeout=10)
    through = httpx.post(url, json={"inputs": inputs, "id": "same", "parameters": {}}, headers=rec.auth, timeout=10)
    assert direct.status_code == through.status_code == 200, (direct.text, through.text)
    assert direct.headers["x-model-version"] == through.headers["x-model-version"]
    a, b = direct.json(), through.json()
    assert {k: a[k] for k in ("id", "model_name", "model_version")} == {k: b[k] for k in ("id", "model_name",
                                                                                        "model_version")}
    assert [{k: o[k] for k in ("name", "shape", "datatype", "data")} for o in a["outputs"]] == \
        [{k: o[k] for k in ("name", "shape", "datatype", "data")} for o in b["outputs"]]
    wrong = {"inputs": [{**inputs[0], "datatype": "FP32"}, inputs[1]]}
    for body in (wrong, {**wrong, "parameters": {}}):  # the same 400 naming the input either way
        r = httpx.post(url, json=body, headers=rec.auth, timeout=10)
        assert r.status_code == 400 and "inputs.customer_id" in r.json()["error"], r.text


def test_third_party_clients_work_unchanged(servers: dict[str, Server], home: Path) -> None:
    import asyncio

    import numpy as np
    import tritonclient.http as triton
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    rec = servers["product-recommendation"]
    client = triton.InferenceServerClient(url=f"127.0.0.1:{rec.port}")
    assert client.is_model_ready(rec.family)
    customer = triton.InferInput("customer_id", [2], "INT64")
    customer.set_data_from_numpy(np.array(known_customers(home, 2), dtype=np.int64), binary_data=False)
    k = triton.InferInput("k", [1], "INT32")
    k.set_data_from_numpy(np.array([6], dtype=np.int32), binary_data=False)
    result = client.infer(rec.family, [customer, k], headers={"Content-Type": "application/json", **rec.auth},
                          outputs=[triton.InferRequestedOutput("stock_codes", binary_data=False)])
    assert result.as_numpy("stock_codes").shape == (2, 6)
    meta = client.get_model_metadata(rec.family, headers=rec.auth)
    assert {i["name"] for i in meta["inputs"]} == {"customer_id", "k", "country"}

    fc = servers["demand-forecast"]
    forecasts = triton.InferenceServerClient(url=f"127.0.0.1:{fc.port}")
    category = triton.InferInput("category", [1], "BYTES")
    category.set_data_from_numpy(np.array([b"kitchen"], dtype=object), binary_data=False)
    default = forecasts.infer(fc.family, [category], headers=fc.auth)  # tritonclient's default: no outputs, no type
    units = default.as_numpy("units")
    assert units.shape[0] >= 1 and default.get_response()["model_version"] == "1"
    category.set_data_from_numpy(np.array([b"kitchen"], dtype=object), binary_data=True)
    picked = forecasts.infer(fc.family, [category], outputs=[triton.InferRequestedOutput("units", binary_data=True)],
                             headers=fc.auth)
    assert [o["name"] for o in picked.get_response()["outputs"]] == ["units"]  # binary both ways, one output
    assert np.allclose(picked.as_numpy("units"), units)

    headers: dict[str, str] = {}

    async def kserve_call() -> Any:
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=10))
        try:
            req = InferRequest(model_name=fc.family, infer_inputs=[
                InferInput("category", [1], "BYTES", ["home_decor"]),
                InferInput("horizon", [1], "INT64", [2]),
            ])
            return await rest.infer(fc.url, req, model_name=fc.family, headers=fc.auth, response_headers=headers)
        finally:
            await rest.close()

    response = asyncio.run(kserve_call())
    got = {o.name: o for o in response.outputs}
    assert got["units"].shape == [2] and headers["x-model-version"] == "1"


# ---------------------------------------------------------------- malformed input
def corpus() -> list[tuple[str, str, Any]]:
    """(family, protocol, body) cases, each of which must get a 4xx naming what is wrong."""
    cases: list[tuple[str, str, Any]] = []
    bad_values: list[Any] = [None, "x", "", -1, 0, 1.5, True, [], {}, [1], {"a": 1}, 10**30, -10**30, "NaN", "1e999"]
    rows = VALID_ROWS
    for family, good in rows.items():
        for key in good:
            for value in bad_values:
                if (isinstance(good[key], float) and value in (0, 1.5)) or (key == "customer_id" and value == 0):
                    continue  # valid there
                row = {**good, key: value}
                cases.append((family, "v1", {"instances": [row]}))
            if key in ("category", "customer_id") or isinstance(good[key], float):  # required fields
                cases.append((family, "v1", {"instances": [{k: v for k, v in good.items() if k != key}]}))
        cases += [
            (family, "v1", {"instances": [{**good, "extra": 1}]}),
            (family, "v1", {"instances": []}),
            (family, "v1", {"instances": [good] * 1001}),
            (family, "v1", {"instances": good}),
            (family, "v1", {"instance": [good]}),
            (family, "v1", {"instances": [good], "other": 1}),
            (family, "v1", [good]),
            (family, "v1", "just a string"),
            (family, "v1", 42),
            (family, "v1", None),
            (family, "v1", {"instances": [[1, 2, 3]]}),
            (family, "v1", {"instances": ["row"]}),
            (family, "raw", b"{not json"),
            (family, "raw", b"\xff\xfe\x00garbage"),
            (family, "raw", b""),
            (family, "raw", b'{"instances": [{"category": NaN}]}'),
            (family, "big", b'{"instances": [' + b'{"k": 1},' * 400_000 + b'{"k": 1}]}'),
            (family, "v2", {"inputs": [{"name": "nope", "datatype": "INT64", "shape": [1], "data": [1]}]}),
            (family, "v2", {"inputs": []}),
            (family, "v2", {"inputs": "x"}),
            (family, "v2", {"inputs": [{"name": "x"}]}),
            (family, "v2", {"inputs": [{"name": list(good)[0], "datatype": "FP64", "shape": [2], "data": [1.0]}]}),
            (family, "v2", {"inputs": [{"name": list(good)[0], "datatype": "WEIRD", "shape": [1], "data": [1]}]}),
            (family, "v2", {"inputs": [{"name": list(good)[0], "datatype": "INT64", "shape": [-1], "data": [1]}]}),
            (family, "v2", {"inputs": [{"name": list(good)[0], "datatype": "BYTES", "shape": [1], "data": [[1]]}]}),
            (family, "v2", {"inputs": [{"name": list(good)[0], "datatype": "INT64", "shape": [1], "data": "x"}]}),
            (family, "v2", {}),
            (family, "v2", {"inputs": [{"name": list(good)[0], "datatype": "INT64", "shape": [1],
                                        "data": [1]}] * 2}),
        ]
    cases += [
        ("demand-forecast", "v1", {"instances": [{"category": "no_such_category"}]}),
        ("demand-forecast", "v1", {"instances": [{"category": "kitchen", "horizon": 27}]}),
        ("product-recommendation", "v1", {"instances": [{"customer_id": 1, "k": 101}]}),
        ("customer-segmentation", "v1", {"instances": [{"customer_id": 1, "frequency": 2.0}]}),
        ("unknown-model", "v1", {"instances": [{"x": 1}]}),
        ("unknown-model", "v2", {"inputs": []}),
    ]
    return cases


def test_malformed_input_corpus_gets_4xx_and_the_servers_stay_healthy(servers: dict[str, Server]) -> None:
    cases = corpus()
    assert len(cases) >= 200
    failures = []
    with httpx.Client(timeout=20, headers=servers["demand-forecast"].auth) as http:
        for family, protocol, body in cases:
            server = servers.get(family, servers["demand-forecast"])
            if protocol in ("v1", "raw", "big"):
                url = f"{server.url}/v1/models/{family}:predict"
            else:
                url = f"{server.url}/v2/models/{family}/infer"
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = http.post(url, content=content, headers={"content-type": "application/json"})
            if not 400 <= r.status_code < 500 or r.status_code == 422 or set(r.json()) != {"error"}:
                failures.append((family, protocol, str(body)[:120], r.status_code, r.text[:200]))
            elif family != "unknown-model" and protocol != "big":
                assert "Traceback" not in r.text
    assert not failures, f"{len(failures)} of {len(cases)} cases were not 4xx: {failures[:10]}"
    for server in servers.values():
        assert server.ready()
        assert v1(server, _good(server.family)).status_code == 200


def test_error_messages_name_the_field(servers: dict[str, Server]) -> None:
    fc, rec = servers["demand-forecast"], servers["product-recommendation"]
    r = v1(fc, [{"category": "kitchen", "horizon": "soon"}])
    assert r.status_code == 400 and "instances[0].horizon" in r.text
    r = v1(fc, [{"category": "kitchen"}, {"category": "atlantis"}])
    assert r.status_code == 400 and "instances[1].category" in r.text and "atlantis" in r.text
    r = v1(rec, [{"customer_id": 1, "k": 0}])
    assert r.status_code == 400 and "instances[0].k" in r.text
    r = v1(rec, [{"customer_id": 1, "colour": "red"}])
    assert r.status_code == 400 and "colour" in r.text
    r = httpx.post(f"{rec.url}/v1/models/{rec.family}:predict", content=b"x" * 2_000_000, headers=rec.auth,
                   timeout=10)
    assert r.status_code == 413 and "body" in r.text

    def chunked() -> Any:  # no content-length: the limit must hold while streaming
        for _ in range(40):
            yield b"x" * 50_000

    r = httpx.post(f"{rec.url}/v1/models/{rec.family}:predict", content=chunked(), headers=rec.auth, timeout=10)
    assert r.status_code == 413 and "body" in r.text


def _binary(inputs: list[tuple[dict[str, Any], bytes]]) -> tuple[bytes, dict[str, str]]:
    """A V2 binary-extension body: the JSON header, then each tensor's bytes; and its headers."""
    header = json.dumps({"inputs": [t for t, _ in inputs]}).encode()
    return header + b"".join(data for _, data in inputs), {"inference-header-content-length": str(len(header)),
                                                           "content-type": "application/octet-stream"}


def _category(name: bytes, size: int | None = None, shape: list[int] | None = None) -> tuple[dict[str, Any], bytes]:
    data = struct.pack("<I", len(name)) + name
    return ({"name": "category", "shape": shape or [1], "datatype": "BYTES",
             "parameters": {"binary_data_size": len(data) if size is None else size}}, data)


def test_binary_extension_and_odd_routes_answer_4xx_in_one_shape(servers: dict[str, Server]) -> None:
    fc = servers["demand-forecast"]
    infer = f"{fc.url}/v2/models/{fc.family}/infer"
    body, headers = _binary([_category(b"kitchen")])
    r = httpx.post(infer, content=body, headers={**headers, **fc.auth}, timeout=10)
    assert r.status_code == 200, r.text  # a well-formed binary request still reaches kserve's decoder
    horizon = ({"name": "horizon", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 4}},
               struct.pack("<i", 4))
    cases: list[tuple[bytes, dict[str, str], str]] = [
        (body, {**headers, "inference-header-content-length": "abc"}, "inference-header-content-length"),
        (body, {**headers, "inference-header-content-length": ""}, "inference-header-content-length"),
        (body, {**headers, "inference-header-content-length": "-5"}, "inference-header-content-length"),
        (body, {**headers, "inference-header-content-length": "99999"}, "inference-header-content-length"),
        (*_binary([_category(b"kitchen", size=500)]), "binary_data_size"),
        (*_binary([_category(b"kitchen", size=3)]), "BYTES element 0"),
        (body + b"extra", headers, "body: 5 bytes follow the last binary tensor"),
        (*_binary([_category(b"kitchen", size=-1)]), "binary_data_size"),
        (*_binary([({"name": "category", "shape": [1], "datatype": "BYTES",
                     "parameters": {"binary_data_size": 8}}, struct.pack("<I", 0x7FFFFFFF) + b"abcd")]), "BYTES"),
        (*_binary([_category(b"kitchen", shape=[2])]), "BYTES elements"),
        (*_binary([_category(b"kitchen"), horizon]), "inputs[1].parameters.binary_data_size"),
    ]
    for content, hdrs, names in cases:
        r = httpx.post(infer, content=content, headers={**hdrs, **fc.auth}, timeout=10)
        assert r.status_code == 400 and set(r.json()) == {"error"} and names in r.json()["error"], (hdrs, r.text)
    version = v1(fc, _good(fc.family)).headers["x-model-version"]
    routes = [
        ("POST", f"/v2/models/{fc.family}/versions/{version}/infer", 200),
        ("GET", f"/v2/models/{fc.family}/versions/{version}/ready", 200),
        ("POST", f"/v2/models/{fc.family}/versions/999/infer", 404),
        ("GET", f"/v2/models/{fc.family}/versions/999/ready", 404),
        ("POST", f"/v1/models/{fc.family}:explain", 404),
        ("POST", f"/v2/repository/models/{fc.family}/unload", 404),
        ("POST", f"/v2/repository/models/{fc.family}/load", 404),
        ("GET", "/v2/repository/index", 404),
    ]
    good = {"inputs": [{"name": "category", "shape": [1], "datatype": "BYTES", "data": ["kitchen"]}]}
    for method, path, expected in routes:
        r = httpx.request(method, f"{fc.url}{path}", json=good if method == "POST" else None, headers=fc.auth,
                          timeout=10)
        assert r.status_code == expected, (path, r.text)
        if expected >= 400:
            assert set(r.json()) == {"error"}, (path, r.text)
    assert fc.ready() and v1(fc, _good(fc.family)).status_code == 200  # nothing took the model out of service


def test_half_sent_bodies_are_cut_after_the_timeout_while_others_are_answered(servers: dict[str, Server]) -> None:
    """200 clients send headers and half a body, then nothing; valid requests keep getting answers, and every slow
    connection gets 408 and is closed after the body timeout (3 s in these tests); 50 more without a key get 401
    and lose their connection at once."""
    import socket

    rec = servers["product-recommendation"]
    path = f"/v1/models/{rec.family}:predict"
    key = rec.auth["authorization"]
    slow, strangers = [], []
    for i in range(250):
        sock = socket.create_connection(("127.0.0.1", rec.port), timeout=15)
        header = f"Authorization: {key}\r\n" if i < 200 else ""
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{header}"
                     f"Content-Length: 100\r\n\r\n{{\"instances\": [".encode())
        (slow if i < 200 else strangers).append(sock)
    for sock in strangers:
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 401") and b"www-authenticate: bearer" in data.lower(), data[:300]
        sock.close()
    started = time.monotonic()
    with httpx.Client(timeout=10, headers=rec.auth) as http:
        answered = [http.post(f"{rec.url}{path}", json={"instances": _good(rec.family)}).status_code
                    for _ in range(100)]
    assert answered == [200] * 100
    closed = []
    for sock in slow:
        data = b""
        while chunk := sock.recv(4096):  # the server closes: recv returns b""
            data += chunk
        closed.append(time.monotonic() - started)
        assert data.startswith(b"HTTP/1.1 408") and b"body" in data, data[:200]
        sock.close()
    assert max(closed) < 3 + 10, max(closed)


def _good(family: str) -> list[dict[str, Any]]:
    return [VALID_ROWS[family]]


# ---------------------------------------------------------------- degradation, cache, log, readiness
def metric(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=server.auth, timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(servers: dict[str, Server],
                                                                      home: Path) -> None:
    """Rows of concurrent requests go to the model together (zm_batch_rows) and every client gets
    exactly the answer it gets alone: its own rows, in order, whatever else shared the call."""
    import asyncio

    customers = known_customers(home, 40)
    requests = {
        "customer-segmentation": [[{"customer_id": c}] if i % 3 else [{"customer_id": c}, {"customer_id": 10**12 + i}]
                                  for i, c in enumerate(customers)],
        "product-recommendation": [[{"customer_id": c, "k": 1 + i % 4}] if i % 3
                                   else [{"customer_id": c, "k": 3}, {"customer_id": 7, "k": 2}]
                                   for i, c in enumerate(customers)],
    }

    async def together(server: Server, bodies: list[list[dict[str, Any]]]) -> list[Any]:
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=20, headers=server.auth) as client:
            url = f"/v1/models/{server.family}:predict"
            answers = []
            for _ in range(3):  # a few rounds: some calls must carry rows of several requests
                got = await asyncio.gather(*(client.post(url, json={"instances": b}) for b in bodies))
                assert all(r.status_code == 200 for r in got), [r.text for r in got if r.status_code != 200][:3]
                answers.append([r.json()["predictions"] for r in got])
            return answers

    # recommendations are cached per key: a server without the cache, so every round reaches the model
    uncached = Server("product-recommendation", home, env={"ZM_SERVING__CACHE_SIZE": "0"}).start().wait_ready()
    try:
        for family, bodies in requests.items():
            server = uncached if family == "product-recommendation" else servers[family]
            _batched_answers_match(server, bodies, together)
    finally:
        uncached.stop()


def _batched_answers_match(server: Server, bodies: list[list[dict[str, Any]]], together: Any) -> None:
    import asyncio

    alone = [v1(server, rows).json()["predictions"] for rows in bodies]
    calls0, rows0 = metric(server, "zm_batch_rows_count"), metric(server, "zm_batch_rows_sum")
    for answers in asyncio.run(together(server, bodies)):
        assert answers == alone
    calls = metric(server, "zm_batch_rows_count") - calls0
    rows = metric(server, "zm_batch_rows_sum") - rows0
    assert rows == 3 * sum(len(b) for b in bodies)  # every row went through the batcher once
    assert calls < 3 * len(bodies), f"{server.family}: {calls} calls for {3 * len(bodies)} requests"


def test_online_store_locked_or_gone_degrades_never_fails(servers: dict[str, Server], home: Path) -> None:
    """The store hung or failing: customers it must be asked about get degraded answers, never an error;
    those already in the feature cache still get their segment."""
    seg = servers["customer-segmentation"]
    cached, locked_out, failed_out = known_customers(home, 200)[-3:]  # asked by no other test
    known = v1(seg, [{"customer_id": cached}]).json()["predictions"][0]  # now in the feature cache
    db = next((home / "feast").rglob("online*.db"))
    before = metric(seg, "zm_feature_fallbacks_total", reason="timeout")
    lock = sqlite3.connect(db, timeout=1)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # a store that does not answer: every read waits on the lock
        r = v1(seg, [{"customer_id": locked_out}, {"customer_id": cached}])
    finally:
        lock.rollback()
        lock.close()
    assert r.status_code == 200, r.text
    answer, from_cache = r.json()["predictions"]
    assert answer["degraded"] and not answer["cold_start"] and answer["segment"]
    assert from_cache == known and not from_cache["degraded"]
    assert metric(seg, "zm_feature_fallbacks_total", reason="timeout") == before + 1  # the one it had to ask

    def fallbacks() -> tuple[float, float]:
        return tuple(metric(seg, "zm_feature_fallbacks_total", reason=r) for r in ("error", "timeout"))  # type: ignore[return-value]

    errors, timeouts = fallbacks()
    admin = sqlite3.connect(db)
    (table,) = next(t for t in admin.execute("select name from sqlite_master where type='table'")
                    if t[0].endswith("customer_profile"))
    admin.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_away"')  # a store that fails every read
    admin.commit()
    try:
        r = v1(seg, [{"customer_id": failed_out}])
        assert r.status_code == 200 and r.json()["predictions"][0]["degraded"]
        # counted once: as an error, or as a timeout when a busy machine makes the failing read slower than
        # the lookup's deadline (the answer is the same degraded one either way)
        now_errors, now_timeouts = fallbacks()
        assert (now_errors - errors, now_timeouts - timeouts) in ((1, 0), (0, 1))
    finally:
        admin.execute(f'ALTER TABLE "{table}_away" RENAME TO "{table}"')
        admin.commit()
        admin.close()
    r = v1(seg, [{"customer_id": failed_out}])  # and back
    assert r.status_code == 200 and not r.json()["predictions"][0]["degraded"]


def test_feature_cache_answers_as_the_store_and_is_dropped_when_the_view_is_materialized(
        servers: dict[str, Server], home: Path, tmp_path: Path) -> None:
    """Segmentation reads a customer's features once; the answers equal a server that reads the store for
    every request; a change written outside materialization stays unseen until Feast records a
    materialization of the view, which the poll loop notices and drops the cache for."""
    import asyncio

    from feature_repo.names import PROFILE_FEATURES
    from inference_services.features import OnlineFeatures
    from tests.serving.conftest import record_materialization, write_profile
    from zmlops.settings import Settings

    seg = servers["customer-segmentation"]
    direct = Server(seg.family, home, env={"ZM_SERVING__FEATURE_CACHE_SIZE": "0"}).start()
    customers = known_customers(home, 120)[60:100]  # asked by no other test
    rows = [{"customer_id": c} for c in customers] + [{"customer_id": 10**12 + 61}]  # unknown, asked nowhere else
    try:
        direct.wait_ready()
        hits, misses = (metric(seg, "zm_feature_cache_requests_total", result=r) for r in ("hit", "miss"))
        first = v1(seg, rows).json()["predictions"]
        assert metric(seg, "zm_feature_cache_requests_total", result="miss") == misses + len(rows)
        assert v1(seg, rows).json()["predictions"] == first == v1(direct, rows).json()["predictions"]
        assert metric(seg, "zm_feature_cache_requests_total", result="hit") == hits + len(rows)
        assert metric(direct, "zm_feature_cache_requests_total") == 0  # off: every request read the store
        assert first[-1]["cold_start"] and not any(p["degraded"] for p in first)

        # one customer gets, outside materialization, the features of a customer in another segment
        moved = first[0]
        other = next(p for p in first[1:-1] if p["segment"] != moved["segment"])
        read = OnlineFeatures(Settings(home=home), "customer_profile", PROFILE_FEATURES, 1.0)
        original, elsewhere = asyncio.run(read.lookup([moved["customer_id"], other["customer_id"]]))
        write_profile(home, moved["customer_id"], dict(zip(PROFILE_FEATURES, elsewhere, strict=True)))
        try:
            one = [{"customer_id": moved["customer_id"]}]
            assert v1(direct, one).json()["predictions"][0]["segment"] == other["segment"]  # the store changed
            assert v1(seg, one).json()["predictions"][0] == moved  # the cache has not seen it
            record_materialization(home)
            seg.wait(lambda: v1(seg, one).json()["predictions"][0]["segment"] == other["segment"], 20,
                     "answering with the features written before the materialization")
        finally:
            write_profile(home, moved["customer_id"], dict(zip(PROFILE_FEATURES, original, strict=True)))
            record_materialization(home)
        seg.wait(lambda: v1(seg, one).json()["predictions"][0] == moved, 20, "back to the original features")
    finally:
        direct.stop()


def test_the_ranking_table_answers_as_scoring_per_request(servers: dict[str, Server], home: Path,
                                                        tmp_path: Path) -> None:
    """Recommendation answers known customers from the table ranked at load (the default); a server
    without it (serving.ranking_table_mb 0) scores the factors per request and answers the same."""
    from inference_services.recommendation import RecommendationService
    from zmlops.settings import Settings

    for size, built in ((64, True), (0, False)):
        service = RecommendationService(Settings(home=tmp_path / "in-process",
                                                 mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
                                                 serving={"ranking_table_mb": size, "instrument": False}))
        assert service.load() and service.state is not None
        assert service.state.index["ranking_table"] is built
        assert ("_ranking" in service.state.estimator.__dict__) is built
        service.stop()
    rec = servers["product-recommendation"]
    scored = Server(rec.family, home, env={"ZM_SERVING__RANKING_TABLE_MB": "0"}).start()
    customers = known_customers(home, 200)[100:160]  # asked by no other test: not in the cache
    rows = [{"customer_id": c, "k": 1 + i % 12} for i, c in enumerate(customers)]
    rows += [{"customer_id": customers[0], "k": 100}, {"customer_id": 10**12 + 7, "k": 4, "country": "France"}]
    try:
        scored.wait_ready()
        answers = v1(rec, rows).json()["predictions"]
        assert answers == v1(scored, rows).json()["predictions"]
        assert [len(a["items"]) for a in answers[:-2]] == [r["k"] for r in rows[:-2]]
        assert [a["cold_start"] for a in answers] == [False] * (len(rows) - 1) + [True]
    finally:
        scored.stop()


def test_request_log_has_a_pseudonymised_row_for_every_call(servers: dict[str, Server], home: Path) -> None:
    """Batches of the log reach the object store (ZM_HOME locally) within request_log.flush_seconds; customer ids
    and the client's request ids only as keyed hashes, model inputs not at all (request_log.keep_* off)."""
    from governance.pseudonyms import pseudonymise, pseudonymise_text
    from zmlops.settings import Settings

    key = Settings(home=home).pseudonymisation_key.get_secret_value().encode()
    rec, seg = servers["product-recommendation"], servers["customer-segmentation"]
    customer = known_customers(home, 1)[0]

    def lines(family: str) -> list[dict[str, Any]]:  # requests/<model>/<day>/<batch>.jsonl
        return [json.loads(x) for f in sorted((home / "requests" / family).rglob("*.jsonl"))
                for x in f.read_text().splitlines()]

    # Earlier tests' batches may still be in flight: this test's calls are told apart by their request ids, which a
    # client may fill with anything (here: the customer's id)
    tag = f"cust-{customer}-{time.monotonic_ns()}"
    hashed = {pseudonymise_text(key, f"{tag}-{k}"): k for k in (0, 1, 2, 3)}
    for k in (1, 2, 3):
        assert v1(rec, [{"customer_id": customer, "k": k}], headers={"x-request-id": f"{tag}-{k}"}).status_code == 200
    refused = v1(rec, [{"customer_id": customer, "k": 0}], headers={"x-request-id": f"{tag}-0"})
    assert refused.status_code == 400  # refused: not a prediction
    assert v1(seg, [{"customer_id": customer}], headers={"x-request-id": f"{tag}-seg"}).status_code == 200

    def mine() -> list[dict[str, Any]]:
        return [r for r in lines(rec.family) if r["request_id"] in hashed]

    deadline = time.monotonic() + 10
    while len(mine()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # two more flush intervals: the refused call must not arrive late either
    rows = mine()
    assert sorted(hashed[r["request_id"]] for r in rows) == [1, 2, 3]
    assert {r["version"] for r in rows} == {"1"} and all(r["latency_ms"] > 0 for r in rows)
    assert {r["rows"][0]["customer"] for r in rows} == {pseudonymise(key, customer)}
    segmented = [r for r in lines(seg.family) if r["request_id"] == pseudonymise_text(key, f"{tag}-seg")]
    assert len(segmented) == 1 and "features" not in segmented[0]["rows"][0]  # the behaviour features stay out
    for family in (rec.family, seg.family):
        text = "".join(f.read_text() for f in (home / "requests" / family).rglob("*.jsonl"))
        assert str(customer) not in text and tag not in text  # neither the id nor a request id that holds it


def test_a_customer_who_withdrew_consent_gets_a_stranger_s_answer_and_leaves_no_trace(
        servers: dict[str, Server], home: Path) -> None:
    """Withdrawn in the consent register, the customer is answered as an unknown one (the popularity list, the
    default segment) within a poll, their answer cache dropped, and their log rows name nobody; granted again,
    they are personalised again."""
    from governance import consent
    from zmlops.settings import Settings

    settings = Settings(home=home)
    rec, seg = servers["product-recommendation"], servers["customer-segmentation"]
    customer = known_customers(home, 6)[-1]
    stranger = 2**53  # in no model

    def answers() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        mine = v1(rec, [{"customer_id": customer, "k": 5}]).json()["predictions"][0]
        theirs = v1(rec, [{"customer_id": stranger, "k": 5}]).json()["predictions"][0]
        return mine, theirs, v1(seg, [{"customer_id": customer}]).json()["predictions"][0]

    before, popular, segment = answers()
    assert not before["cold_start"] and before["items"] != popular["items"] and not segment["cold_start"]
    consent.record(settings, customer, profiling=False, personalisation=False, source="test: web form")
    try:
        deadline = time.monotonic() + 10  # each predictor re-reads the register on its own poll
        while not all(answer["cold_start"] for answer in answers()[::2]) and time.monotonic() < deadline:
            time.sleep(0.2)
        tag = f"withdrawn-{time.monotonic_ns()}"
        mine = v1(rec, [{"customer_id": customer, "k": 5}], headers={"x-request-id": tag}).json()["predictions"][0]
        assert mine["cold_start"] and mine["items"] == popular["items"]
        profiled = v1(seg, [{"customer_id": customer}], headers={"x-request-id": tag}).json()["predictions"][0]
        assert profiled["cold_start"]
        from governance.pseudonyms import pseudonymise_text

        hashed = pseudonymise_text(settings.pseudonymisation_key.get_secret_value().encode(), tag)
        for family in (rec.family, seg.family):
            deadline = time.monotonic() + 10
            rows: list[dict[str, Any]] = []
            while not rows and time.monotonic() < deadline:
                rows = [json.loads(x) for f in (home / "requests" / family).rglob("*.jsonl")
                        for x in f.read_text().splitlines() if hashed in x]
                time.sleep(0.2)
            assert len(rows) == 1 and rows[0]["rows"][0]["customer"] is None, family
    finally:
        consent.record(settings, customer, profiling=True, personalisation=True, source="test: web form")
    deadline = time.monotonic() + 10
    while answers()[0]["cold_start"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert answers()[0] == before


def test_an_erased_customer_is_a_stranger_to_every_served_version_within_a_poll(
        servers: dict[str, Server], home: Path) -> None:
    """The erasure register (governance.erasure, by the keyed subject hash) reaches the running predictors: the
    customer's personal answers stop at once, before any model is retrained without them."""
    import datetime as dt

    from sqlalchemy import delete, insert

    from governance import consent
    from zmlops.settings import Settings
    from zmlops.statedb import ERASURES, engine

    settings = Settings(home=home)
    rec = servers["product-recommendation"]
    customer = known_customers(home, 7)[-1]

    def answer() -> dict[str, Any]:
        return v1(rec, [{"customer_id": customer, "k": 5}]).json()["predictions"][0]  # type: ignore[no-any-return]

    before = answer()
    assert not before["cold_start"]
    subject = consent.audit_subject(settings, customer).removeprefix("customer:")
    now = dt.datetime.now(dt.UTC)
    with engine(settings).begin() as conn:
        conn.execute(insert(ERASURES).values(subject=subject, requested_at=now, retrain_by=now, details={}))
    try:
        deadline = time.monotonic() + 10
        while not answer()["cold_start"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer()["cold_start"] and answer()["items"] != before["items"]
    finally:
        with engine(settings).begin() as conn:
            conn.execute(delete(ERASURES).where(ERASURES.c.subject == subject))
    deadline = time.monotonic() + 10
    while answer()["cold_start"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert answer() == before


def test_readiness_follows_loading_and_a_corrupt_artifact_is_never_ready(home: Path, tmp_path: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    name = "product-recommendation"
    late = Server(name, home, args=["--alias", "zm-test-late"]).start()
    try:
        assert not late.ready()  # listening, nothing behind the alias yet
        assert v1(late, [{"customer_id": 1}]).status_code == 503
        client.set_registered_model_alias(name, "zm-test-late", "1")
        late.wait_ready()
        assert v1(late, [{"customer_id": 1}]).json()["model_version"] == "1"
    finally:
        late.stop()
        client.delete_registered_model_alias(name, "zm-test-late")

    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
    (broken / "estimator.joblib").write_bytes(b"this is not a joblib file")
    bad = client.create_model_version(name, source=str(broken))
    client.set_registered_model_alias(name, "zm-test-corrupt", bad.version)
    corrupt = Server(name, home, args=["--alias", "zm-test-corrupt"]).start()
    try:  # behind an alias: unready, still alive, retried (the alias may move to a good version)
        corrupt.wait(lambda: "cannot load" in corrupt.output(), 60, "reporting the corrupt artifact")
        assert not corrupt.ready()
        assert v1(corrupt, [{"customer_id": 1}]).status_code == 503
        assert httpx.get(f"{corrupt.url}/v2/health/live", timeout=2).status_code == 200
    finally:
        output = corrupt.stop()
        client.delete_registered_model_alias(name, "zm-test-corrupt")
    assert "cannot load" in output

    # pinned to the version (how the rollout starts a candidate): it exits, as a predictor that cannot load
    pinned = Server(name, home, args=["--version", str(bad.version)])
    with pinned._log() as out:
        done = subprocess.run([sys.executable, "-m", "inference_services.server", name, "--port", str(pinned.port),
                               "--version", str(bad.version)], env=_env(home, ZM_SERVING__POLL_SECONDS="1"),
                              cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False)
    assert done.returncode == 1, pinned.output()[-3000:]
    assert f"exiting, pinned version {bad.version} cannot load" in pinned.output()


def test_cache_hits_and_invalidation_when_the_version_changes(home: Path) -> None:
    import mlflow

    name = "product-recommendation"
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, "zm-test-cache", "1")
    server = Server(name, home, args=["--alias", "zm-test-cache"]).start().wait_ready()
    try:
        row = [{"customer_id": known_customers(home, 1)[0], "k": 4}]
        first = v1(server, row).json()
        hits0 = metric(server, "zm_cache_requests_total", result="hit")
        assert v1(server, row).json()["predictions"] == first["predictions"]
        assert metric(server, "zm_cache_requests_total", result="hit") == hits0 + 1
        source = client.get_model_version(name, "1")
        new = client.create_model_version(name, source=source.source, run_id=source.run_id)
        client.set_registered_model_alias(name, "zm-test-cache", new.version)
        # wait for the swap without asking for predictions, then the same key must be computed afresh
        server.wait(lambda: metric(server, "zm_model_version_info", version=str(new.version)) == 1, 30, "swapped")
        hits, misses = (metric(server, "zm_cache_requests_total", result=r) for r in ("hit", "miss"))
        again = v1(server, row)
        assert again.headers["x-model-version"] == again.json()["model_version"] == str(new.version)
        assert metric(server, "zm_cache_requests_total", result="miss") == misses + 1  # nothing served stale
        assert metric(server, "zm_cache_requests_total", result="hit") == hits
        v1(server, row)
        assert metric(server, "zm_cache_requests_total", result="hit") == hits + 1
    finally:
        server.stop()
        client.delete_registered_model_alias(name, "zm-test-cache")


def test_metrics_count_requests_by_status_with_sub_millisecond_buckets(servers: dict[str, Server]) -> None:
    fc = servers["demand-forecast"]
    ok = metric(fc, "zm_requests_total", status="200", protocol="v1")
    bad = metric(fc, "zm_requests_total", status="400", protocol="v1")
    v1(fc, [{"category": "kitchen"}])
    v1(fc, [{"category": 3}])
    assert metric(fc, "zm_requests_total", status="200", protocol="v1") == ok + 1
    assert metric(fc, "zm_requests_total", status="400", protocol="v1") == bad + 1
    text = httpx.get(f"{fc.url}/metrics", headers=fc.auth, timeout=5).text
    buckets = [x for x in text.splitlines() if x.startswith("zm_request_duration_seconds_bucket")]
    assert any('le="0.0001"' in x for x in buckets) and any('le="0.0005"' in x for x in buckets)
    assert metric(fc, "zm_forecast_units_count") > 0
    assert metric(fc, "zm_model_version_info", version="1") == 1


@pytest.mark.full  # make test-all; `make bench` runs the serving section whole
def test_serving_benchmark_runs_and_reports_ratios(home: Path) -> None:
    """The short form of `make bench`'s serving part: every figure present and sane (segmentation: the
    model with the most servers, its variant with every request read from the store included)."""
    from benchmarks.bench_serving import bench_serving, summary_rows, variant_rows

    family = "customer-segmentation"
    result = bench_serving(home, seconds=1, families=[family], rounds=2)
    entry = result["models"][family]
    for protocol in ("v1", "v2"):
        runs = entry[protocol]
        assert all(runs[k]["cpu_us_per_request"] > 0 and runs[k]["rps"] > 0 and len(runs[k]["cpu_us_per_slice"]) == 2
                   for k in ("bare_fastapi", "constant_predictor", "model", "model_store_reads"))
        ratios = runs["ratios"]
        assert all(ratios[k] > 0 for k in ("cpu_vs_bare", "rps_vs_constant", "capacity_vs_constant",
                                           "rps_vs_constant_store_reads", "capacity_vs_constant_store_reads"))
        assert abs(ratios["extra_cpu_us_store_reads"]) < runs["model_store_reads"]["cpu_us_per_request"]
        # in process, steady: the store read costs more than the cached lookup, both more than (b)'s nothing
        extra = runs["in_process"]
        assert 0 < extra["model_extra_us"] < extra["variant_extra_us"] < extra["variant_us"], extra
        assert 0 < ratios["capacity_in_process_store_reads"] < ratios["capacity_in_process"] < 1
        assert len(ratios["rps_vs_constant_per_round"]) == len(ratios["cpu_vs_bare_per_round"]) == 2
        assert runs["model"]["open_loop_half_max"]["errors"] == 0
        assert len(runs["model"]["open_loop_half_max"]["p99_ms_per_run"]) == 2  # min(3, rounds) runs, each kept
        assert 0 < runs["model"]["one_connection"]["p99_ms"] < 1000
    drill = entry["v1"]["model"]["slow_clients"]  # the slow-client drill
    assert drill["answers_to_slow"] == {"408": 200 * drill["runs"]} and drill["valid_errors"] == 0, drill
    assert drill["body_timeout_s"] <= drill["slow_closed_after_s_min"] <= drill["slow_closed_after_s_max"] < \
        drill["body_timeout_s"] + 5, drill
    assert drill["p99_ms_alone"] > 0 and drill["p99_ratio"] > 0
    cost = entry["metrics_cpu_overhead"]
    assert cost["in_process"]["with_us"] > 0 and cost["ratio"] > 0 and cost["end_to_end_ratio"] > 0
    assert entry["cold_start"]["ratio"] > 0
    assert len(summary_rows(result)) == len(variant_rows(result)) == 2


# ---------------------------------------------------------------- authentication
def _expected_scope(path: str) -> str | None:
    """What a route needs, as docs/security.md states it: probes nothing, /metrics metrics, the repository API
    admin, everything else predict."""
    import re

    if path in ("/", "/v2/health/live", "/v2/health/ready") or path.endswith("/ready") or re.fullmatch(
            r"/v1/models/[^/:]+(/versions/[^/:]+)?", path):
        return None
    if path == "/metrics":
        return "metrics"
    return "admin" if path.startswith("/v2/repository") else "predict"


def test_every_route_but_the_probes_needs_a_key_with_its_scope(home: Path) -> None:
    """The route inventory: every route of the predictor, from its OpenAPI document and kserve's route table (not a
    hand list), answers 401 without a key or with a wrong one, 403 with a key lacking the route's scope, and is
    served with the right one. The keys come as the k8s profile gives them: hashes in ZM_AUTH__API_KEYS."""
    import kserve.model_server as kms

    from zmlops import auth

    tokens, entries = {}, []
    for scope in ("predict", "metrics", "admin"):
        tokens[scope], entry = auth.new_key(f"{scope}-client", (scope,))
        entries.append(entry)
    server = Server("demand-forecast", home, env={"ZM_AUTH__API_KEYS": json.dumps(entries)}).start().wait_ready()
    try:
        def call(method: str, path: str, token: str | None) -> int:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            body = {"instances": [{"category": "kitchen"}]} if method == "POST" else None
            return httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=10).status_code

        spec = httpx.get(f"{server.url}/openapi.json", headers={"authorization": f"Bearer {tokens['predict']}"},
                         timeout=10).json()
        routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
        # kserve's app in this process: its own routes (another test may have built kserve's application in it,
        # whose included routers have no single path; the server's OpenAPI document above lists theirs)
        routes |= {(m, r.path) for r in kms.app.routes if hasattr(r, "path")
                   for m in (getattr(r, "methods", None) or {"GET"})}
        from inference_services.server import EDGE_ROUTES

        routes = {(m, p) for m, p in routes if m in ("GET", "POST")} | set(EDGE_ROUTES)
        version = httpx.post(f"{server.url}/v1/models/demand-forecast:predict", json={"instances": [{"category": 1}]},
                             headers={"authorization": f"Bearer {tokens['predict']}"}, timeout=10)
        assert version.status_code == 400  # authenticated, then validated
        assert len(routes) >= 15 and ("GET", "/metrics") in routes, sorted(routes)
        paths = [(method, template.replace("{model_name}", "demand-forecast").replace("{model_version}", "1")
                  .replace("{version}", "1")) for method, template in sorted(routes)]
        problems = inventory_problems(paths, call, _expected_scope, tokens)
        assert not problems, problems
    finally:
        server.stop()


def test_sigterm_drains_then_writes_every_logged_request_before_exit(home: Path) -> None:
    """On SIGTERM readiness answers 503 at once while predictions are still answered for
    ``serving.drain_seconds``; then the process exits, and every request it answered is in the request log,
    although the log's flush interval never came round (uvicorn ends the process by raising the signal again)."""
    server = Server("demand-forecast", home, env={"ZM_REQUEST_LOG__FLUSH_SECONDS": "600",
                                                  "ZM_SERVING__DRAIN_SECONDS": "3"}).start().wait_ready()
    tag = f"drain-{time.monotonic_ns()}"
    row = VALID_ROWS["demand-forecast"]
    try:
        for k in range(3):
            assert v1(server, [row], headers={"x-request-id": f"{tag}-{k}"}).status_code == 200
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        server.wait(lambda: httpx.get(f"{server.url}/v2/models/{server.family}/ready", timeout=2).status_code == 503,
                    10, "draining")
        assert v1(server, [row], headers={"x-request-id": f"{tag}-3"}).status_code == 200  # still answered
        assert server.proc.wait(timeout=60) == -signal.SIGTERM  # uvicorn ends it by the signal it caught
    finally:
        server.stop()
    from governance.pseudonyms import pseudonymise_text
    from zmlops.settings import Settings

    key = Settings(home=home).pseudonymisation_key.get_secret_value().encode()
    mine = {pseudonymise_text(key, f"{tag}-{k}") for k in range(4)}
    logged = [json.loads(x)["request_id"] for f in (home / "requests" / server.family).rglob("*.jsonl")
              for x in f.read_text().splitlines()]
    assert mine <= set(logged), server.output()[-2000:]


def test_versioned_paths_answer_the_staged_version_beside_production_and_404_any_other(
        servers: dict[str, Server], home: Path) -> None:
    """A version behind ``staging`` (serving.version_aliases) is loaded beside production within a poll and answers
    on its versioned paths only (V2, V1 and ``?model_version=``); the metadata lists both; an unknown version is a
    404 naming the served ones; once no alias names it, it goes."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    fc = servers["demand-forecast"]
    name = fc.family
    production = client.get_model_version_by_alias(name, "production")
    first = str(production.version)
    staged_before = client.get_registered_model(name).aliases.get("staging")
    source = client.get_model_version_download_uri(name, first)  # its artifacts, registered again
    new = str(client.create_model_version(name, source=source, run_id=production.run_id).version)
    client.set_registered_model_alias(name, "staging", new)

    def versions() -> list[str]:
        return httpx.get(f"{fc.url}/v2/models/{name}", headers=fc.auth, timeout=5).json()["versions"]  # type: ignore[no-any-return]

    body = {"inputs": [{"name": "category", "datatype": "BYTES", "shape": [1], "data": ["kitchen"]},
                       {"name": "horizon", "datatype": "INT64", "shape": [1], "data": [2]}]}
    try:
        fc.wait(lambda: versions() == [first, new], 60, "serving the staged version")
        staged = httpx.post(f"{fc.url}/v2/models/{name}/versions/{new}/infer", json=body, headers=fc.auth, timeout=10)
        current = httpx.post(f"{fc.url}/v2/models/{name}/infer", json=body, headers=fc.auth, timeout=10)
        assert staged.status_code == current.status_code == 200, staged.text
        assert staged.json()["model_version"] == new and current.json()["model_version"] == first
        assert staged.json()["outputs"] == current.json()["outputs"]  # the same artifact registered twice
        one = httpx.post(f"{fc.url}/v1/models/{name}/versions/{new}:predict", json={"instances": [VALID_ROWS[name]]},
                         headers=fc.auth, timeout=10)
        assert one.status_code == 200 and one.headers["x-model-version"] == new
        query = httpx.post(f"{fc.url}/v2/models/{name}/infer?model_version={new}", json=body, headers=fc.auth,
                           timeout=10)
        assert query.json()["model_version"] == new
        assert httpx.get(f"{fc.url}/v2/models/{name}/versions/{new}/ready", timeout=5).status_code == 200
        unknown = httpx.post(f"{fc.url}/v2/models/{name}/versions/999/infer", json=body, headers=fc.auth, timeout=10)
        assert unknown.status_code == 404
        assert f"versions {first}, {new}" in unknown.json()["error"]
    finally:
        if staged_before is None:
            client.delete_registered_model_alias(name, "staging")
        else:
            client.set_registered_model_alias(name, "staging", staged_before)
    fc.wait(lambda: versions() == [first], 60, "dropping the version no alias names")
    gone = httpx.post(f"{fc.url}/v2/models/{name}/versions/{new}/infer", json=body, headers=fc.auth, timeout=10)
    assert gone.status_code == 404


def test_outcome_events_are_accepted_joined_to_their_answer_by_request_id_and_refused_with_the_field(
        servers: dict[str, Server], home: Path) -> None:
    """``POST /v1/models/NAME/events``: impressions, clicks and purchases attributed to a served answer by its
    request id, realised sales for a forecast; logged under ``events/`` with the request log's pseudonyms (so an
    event joins its answer), a bad event a 400 naming its field, no key a 401."""
    from governance.pseudonyms import pseudonymise, pseudonymise_text
    from zmlops.settings import Settings

    key = Settings(home=home).pseudonymisation_key.get_secret_value().encode()
    rec, fc = servers["product-recommendation"], servers["demand-forecast"]
    customer = known_customers(home, 2)[-1]
    rid = f"events-{time.monotonic_ns()}"
    answer = v1(rec, [{"customer_id": customer, "k": 3}], headers={"x-request-id": rid}).json()["predictions"][0]
    item = answer["items"][0]
    url = f"{rec.url}/v1/models/{rec.family}/events"
    sent = {"events": [{"type": "impression", "request_id": rid, "customer_id": customer},
                       {"type": "click", "request_id": rid, "customer_id": customer, "stock_code": item},
                       {"type": "purchase", "request_id": rid, "customer_id": customer, "stock_code": item,
                        "quantity": 2, "revenue": 7.5, "at": "2026-12-04T10:00:00Z"}]}
    r = httpx.post(url, json=sent, headers=rec.auth, timeout=10)
    assert r.status_code == 202 and r.json() == {"accepted": 3}
    sale = {"events": [{"type": "sale", "category": "kitchen", "week_start": "2026-11-30", "units": 410.0}]}
    assert httpx.post(f"{fc.url}/v1/models/{fc.family}/events", json=sale, headers=fc.auth,
                      timeout=10).status_code == 202

    for body, where in (({"events": [{"type": "click", "customer_id": customer}]}, "events[0]"),
                        ({"events": [{"type": "click", "request_id": rid, "colour": "red"}]}, "events[0].colour"),
                        ({"events": [{"type": "purchase", "request_id": rid, "revenue": -1}]}, "events[0].revenue"),
                        ({"events": [{"type": "sale", "category": "kitchen"}]}, "events[0]"),
                        ({"events": []}, "events"), ([1, 2], "body")):
        bad = httpx.post(url, json=body, headers=rec.auth, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"].startswith(where), (body, bad.text)
    assert httpx.post(url, json=sent, timeout=10).status_code == 401

    def logged(prefix: str, family: str) -> list[dict[str, Any]]:
        return [row for f in sorted((home / prefix / family).rglob("*.jsonl")) for x in f.read_text().splitlines()
                for row in [json.loads(x)] if x]

    hashed = pseudonymise_text(key, rid)
    deadline = time.monotonic() + 10  # the two logs are written by their own writers, each within its interval
    while time.monotonic() < deadline and not (
            any(r["rows"][0].get("request_id") == hashed for r in logged("events", rec.family))
            and any(r["request_id"] == hashed for r in logged("requests", rec.family))):
        time.sleep(0.1)
    [record] = [r for r in logged("events", rec.family) if r["rows"][0].get("request_id") == hashed]
    assert [row["type"] for row in record["rows"]] == ["impression", "click", "purchase"]
    assert {row["customer"] for row in record["rows"]} == {pseudonymise(key, customer)}
    assert record["rows"][2]["revenue"] == 7.5 and record["rows"][1]["stock_code"] == item
    served = [r for r in logged("requests", rec.family) if r["request_id"] == hashed]
    assert len(served) == 1  # the answer the events follow, by the same keyed hash
    text = "".join(f.read_text() for f in (home / "events").rglob("*.jsonl"))
    assert str(customer) not in text and rid not in text


def test_a_running_experiment_routes_each_customer_to_a_sticky_variant_and_its_looks_come_from_the_logs(
        servers: dict[str, Server], home: Path, prometheus: Any) -> None:
    """``zm experiment start`` registers an A/B test; within a poll the recommender loads the treatment version and
    answers each customer with the variant the customer's pseudonym assigns (every time the same), logging the
    experiment and variant; a request naming customers of both variants is answered in two parts, each by its
    variant's version. Clicks posted to the events path join their answers (and, when they name one, the
    customer); the analysis (``zm experiment analyse``) counts exactly those customers and reads each variant's
    error rate and p99 latency from a real Prometheus scraping the predictor."""
    import dataclasses

    import mlflow
    from sqlalchemy import update

    from delivery.experiments import Design, Plan, analyse, analyse_running, assign, design_of, start
    from governance.pseudonyms import pseudonymise
    from zmlops.settings import Settings
    from zmlops.statedb import EXPERIMENTS, engine

    rec = servers["product-recommendation"]
    settings = Settings(home=home)
    settings = settings.model_copy(update={"rollout": settings.rollout.model_copy(
        update={"prometheus_url": prometheus(rec)})})
    key = settings.pseudonymisation_key.get_secret_value().encode()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    name = rec.family
    first = str(client.get_model_version_by_alias(name, "production").version)
    source = client.get_model_version_download_uri(name, first)
    new = str(client.create_model_version(name, source=source, run_id=client.get_model_version(name, first).run_id)
              .version)
    experiment = f"recs-live-{time.monotonic_ns()}"
    start(settings, Design(experiment, name, {"control": first, "treatment": new}))  # `zm experiment start`

    def versions() -> list[str]:
        return httpx.get(f"{rec.url}/v2/models/{name}", headers=rec.auth, timeout=5).json()["versions"]  # type: ignore[no-any-return]

    split = {"control": 0.5, "treatment": 0.5}
    pool = known_customers(home, 80)
    expected = {c: assign(experiment, pseudonymise(key, c), split) for c in pool}
    customers = pool[:60]
    pair = [next(c for c in pool[60:] if expected[c] == v) for v in ("control", "treatment")]
    try:
        rec.wait(lambda: new in versions(), 60, "loading the treatment version")
        time.sleep(1.5)  # the experiment is read on the same poll as the versions: one more poll, to be sure
        answered: dict[int, str] = {}
        for i, c in enumerate(customers):
            r = v1(rec, [{"customer_id": c, "k": 3}], headers={"x-request-id": f"{experiment}-{c}"})
            again = v1(rec, [{"customer_id": c, "k": 3}])
            assert r.status_code == 200 and r.headers["x-model-version"] == again.headers["x-model-version"]
            answered[c] = r.headers["x-model-version"]
            if i % 3 == 0:  # a third of the customers click, whatever their variant
                assert httpx.post(f"{rec.url}/v1/models/{name}/events", headers=rec.auth, timeout=10, json={
                    "events": [{"type": "click", "request_id": f"{experiment}-{c}", "customer_id": c}]}
                ).status_code == 202
        assert answered == {c: new if expected[c] == "treatment" else first for c in customers}
        time.sleep(1.2)  # a scrape in between: each version's counters grow between two of Prometheus' samples
        for variant in ("control", "treatment"):
            assert v1(rec, [{"customer_id": next(c for c in customers if expected[c] == variant), "k": 3}]
                      ).status_code == 200
        # two customers of both variants in one request: each part answered by its variant, both counted
        both = v1(rec, [{"customer_id": c, "k": 3} for c in pair], headers={"x-request-id": f"{experiment}-pair"})
        assert both.status_code == 200 and both.headers["x-model-version"] == f"{first},{new}"
        assert both.json()["model_version"] == f"{first},{new}" and len(both.json()["predictions"]) == 2
        as_v2 = httpx.post(f"{rec.url}/v2/models/{name}/infer", headers=rec.auth, timeout=10, json={"inputs": [
            {"name": "customer_id", "datatype": "INT64", "shape": [2], "data": pair[::-1]}]})
        assert as_v2.status_code == 200 and as_v2.json()["model_version"] == f"{first},{new}", as_v2.text
        treated = {"type": "click", "request_id": f"{experiment}-pair", "customer_id": pair[1]}  # not the control
        assert httpx.post(f"{rec.url}/v1/models/{name}/events", headers=rec.auth, timeout=10,
                          json={"events": [treated]}).status_code == 202
        time.sleep(2.5)  # the logs' flush interval (0.5 s here) and two scrapes (1 s)
        analysis = analyse_running(settings, experiment)  # `zm experiment analyse`: the look, recorded
        recorded = json.loads((home / "experiments" / experiment / "analysis.json").read_text())
        [look] = recorded["looks"]
        clicked = {c for i, c in enumerate(customers) if i % 3 == 0} | {pair[1]}
        for variant in ("control", "treatment"):
            mine = [c for c in [*customers, *pair] if expected[c] == variant]
            assert look["customers"][variant] == len(mine)
            assert look["clicks"][variant] == len(clicked & set(mine))  # the control in the pair did not click
        assert recorded["decision"] == "continue"
        # the guardrails, per variant from Prometheus: every request answered, in well under the 250 ms allowed
        assert recorded["notes"] == [] and set(recorded["guardrails"]) == {"control", "treatment"}, recorded
        for variant, read in recorded["guardrails"].items():
            assert read["error_rate"] == 0.0 and 0 < read["p99_latency_ms"] < 250, (variant, read)
        with engine(settings).connect() as conn:
            design = design_of(conn.execute(EXPERIMENTS.select().where(EXPERIMENTS.c.name == experiment))
                               .mappings().first()["design"])
        strict = dataclasses.replace(design, guardrails={"p99_latency_ms": 1e-3})  # a bound no answer meets
        stopped = analyse(strict, Plan(**{k: v if not isinstance(v, list) else tuple(v)
                                          for k, v in analysis.plan.items()}), [look], analysis.guardrails)
        assert stopped.decision == "stop" and stopped.reason.startswith("guardrail breached: control p99_latency_ms")
    finally:
        with engine(settings).begin() as conn:
            conn.execute(update(EXPERIMENTS).where(EXPERIMENTS.c.name == experiment).values(decision="stop"))
    rec.wait(lambda: versions() == [first], 60, "dropping the version once the experiment ended")


def test_shadow_traffic_mirrors_production_requests_to_the_staged_version_and_compares_the_answers(
        servers: dict[str, Server], home: Path) -> None:
    """With ``serving.shadow_alias=staging`` production's answered requests are copied to the staged version off
    the request path: the client gets production's answer (and version); the shadow log and ``zm_shadow_*``
    metrics record the comparison (the same artifact registered again agrees fully), and ``zm experiment shadow``
    reports it."""
    import mlflow

    from delivery.experiments import shadow_report
    from zmlops.settings import Settings

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    name = "product-recommendation"
    first = str(client.get_model_version_by_alias(name, "production").version)
    staged_before = client.get_registered_model(name).aliases.get("staging")
    source = client.get_model_version_download_uri(name, first)
    new = str(client.create_model_version(name, source=source, run_id=client.get_model_version(name, first).run_id)
              .version)
    client.set_registered_model_alias(name, "staging", new)
    server = servers[name]  # the session's servers run with serving.shadow_alias=staging
    customers = known_customers(home, 20)
    try:
        server.wait(lambda: new in httpx.get(f"{server.url}/v2/models/{name}", headers=server.auth,
                                             timeout=5).json()["versions"], 60, "loading the staged version")
        for c in customers:
            r = v1(server, [{"customer_id": c, "k": 4}])
            assert r.status_code == 200 and r.headers["x-model-version"] == first  # production answers
        assert v1(server, [{"customer_id": c, "k": 4} for c in customers[:3]]).status_code == 200

        def mirrored() -> list[dict[str, Any]]:
            return [json.loads(x) for f in (home / "shadow" / name).rglob("*.jsonl")
                    for x in f.read_text().splitlines() if x and json.loads(x)["shadow"] == new]

        server.wait(lambda: sum(r["row_count"] for r in mirrored()) >= 23, 30, "writing the shadow log")
        rows = mirrored()
        assert {r["version"] for r in rows} == {first} and all(r["agreement"] == 1.0 and r["error"] is None
                                                               for r in rows)
        scraped = httpx.get(f"{server.url}/metrics", headers=server.auth, timeout=5).text
        counted = [line for line in scraped.splitlines() if line.startswith("zm_shadow_requests_total{")
                   and f'version="{new}"' in line]
        assert counted == [f'zm_shadow_requests_total{{model="{name}",result="agree",version="{new}"}} 21.0'], counted
    finally:
        if staged_before is None:
            client.delete_registered_model_alias(name, "staging")
        else:
            client.set_registered_model_alias(name, "staging", staged_before)
    [found] = [r for r in shadow_report(Settings(home=home), name) if r["shadow"] == new]
    assert found["requests"] == 21 and found["agreement"] == 1.0 and found["error_rate"] == 0.0
    assert found["production"] == [first] and found["shadow_p99_ms"] > 0


def test_a_shadow_predictor_answers_and_compares_the_copies_another_predictor_sends_it(
        servers: dict[str, Server], home: Path) -> None:
    """With ``serving.shadow_url`` a predictor sends copies of its answered requests to another predictor of the
    family (the shadow, here the session's), which answers them with its own version, compares with the logged
    answers and records the comparison: production's process answers no copy itself. A malformed copy is a 400
    naming the field."""
    import re

    from delivery.experiments import shadow_report
    from zmlops.settings import Settings

    name = "product-recommendation"
    shadow = servers[name]  # serves production: the copies come back in full agreement

    def counted(server: Server, result: str) -> float:
        text = httpx.get(f"{server.url}/metrics", headers=server.auth, timeout=5).text
        return sum(float(m.group(1)) for m in re.finditer(
            rf'^zm_shadow_requests_total{{model="{name}",result="{result}",version="[^"]+"}} ([0-9.]+)$', text, re.M))

    before = counted(shadow, "agree")
    production = Server(name, home, env={"ZM_SERVING__SHADOW_URL": shadow.url}).start()
    try:
        production.wait_ready()
        for c in known_customers(home, 25):
            assert v1(production, [{"customer_id": c, "k": 4}]).status_code == 200
        shadow.wait(lambda: counted(shadow, "agree") - before >= 25, 30, "the shadow comparing 25 copies")
        assert counted(shadow, "agree") - before == 25 and counted(shadow, "differ") == 0
        assert counted(production, "agree") == 0  # production answered no copy itself
    finally:
        production.stop()
    # the shadow's log reaches the store within request_log.flush_seconds of the comparison, not with the metric
    shadow.wait(lambda: any(r["requests"] >= 25 and r["agreement"] == 1.0
                            for r in shadow_report(Settings(home=home), name)), 30, "writing the shadow log")
    bad = httpx.post(f"{shadow.url}/v1/models/{name}/shadow", headers=shadow.auth, timeout=10, json={
        "copies": [{"version": "1", "instances": [{"customer_id": 1, "k": 4}], "answers": [], "latency_ms": 1.0}]})
    assert bad.status_code == 400 and "copies[0].answers" in bad.json()["error"], bad.text
    worse = httpx.post(f"{shadow.url}/v1/models/{name}/shadow", headers=shadow.auth, timeout=10, json={
        "copies": [{"version": "1", "instances": [{"customer_id": -1}], "answers": [{}], "latency_ms": 1.0}]})
    assert worse.status_code == 400 and "customer_id" in worse.json()["error"], worse.text


def test_a_shadow_predictor_that_is_down_costs_production_nothing_but_dropped_copies(home: Path) -> None:
    """Copies that cannot reach the shadow predictor are dropped and counted (``result="dropped"``), with one
    warning; every production answer is a 200. (And, as every server does once a version loads, it froze its
    heap out of the garbage collector's full collections: ``serving.gc_freeze``.)"""
    import re

    from tests.serving.conftest import free_port

    name = "demand-forecast"
    production = Server(name, home, env={"ZM_SERVING__SHADOW_URL": f"http://127.0.0.1:{free_port()}"}).start()
    try:
        production.wait_ready()
        for category in ("kitchen", "garden", "kitchen"):
            assert v1(production, [{"category": category, "horizon": 2}]).status_code == 200

        def dropped() -> float:
            text = httpx.get(f"{production.url}/metrics", headers=production.auth, timeout=5).text
            found = re.search(rf'^zm_shadow_requests_total{{model="{name}",result="dropped",version="remote"}} '
                              r"([0-9.]+)$", text, re.M)
            return float(found.group(1)) if found else 0.0

        production.wait(lambda: dropped() == 3, 30, "counting the 3 copies it could not send")
    finally:
        log = production.stop()
    assert log.count("shadow copies not sent to") == 1, log
    assert re.search(r"heap settled in \d+ ms \(\d{5,} objects frozen\)", log), log  # serving.gc_freeze, once loaded
