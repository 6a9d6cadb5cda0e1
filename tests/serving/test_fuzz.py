"""Fuzzing the three predictors over real HTTP.

Two generators nobody tuned to our code paths: schemathesis, from each server's own OpenAPI document, and a
hypothesis generator of malformed V1, V2 and binary-extension payloads built around each model's real input
tensors (from its V2 metadata). Every answer must be below 500, in the one error shape when it is a 4xx, and
faster than 2 s; afterwards the server's memory has grown by less than a bound, it is still ready, and a valid
request gets the same answer as before. 500 cases per model in `make test`, 5,000 in `make test-all` (ZM_FULL).
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving.conftest import FAMILIES, VALID_ROWS, Server

pytestmark = pytest.mark.serving

FULL = bool(os.environ.get("ZM_FULL"))
CASES = 5_000 if FULL else 500
SLOWEST_S = 2.0
RSS_GROWTH_MB = 64  # a leak per request would show: 500 cases of up to ~100 KB each
VALID = {family: {"instances": [row]} for family, row in VALID_ROWS.items()}
V2_TYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16", "COMPLEX"]


def rss_mb(server: Server) -> float:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# ---------------------------------------------------------------- generators
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=False), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                             st.dictionaries(st.text(max_size=10), inner, max_size=5)),
                          max_leaves=20)


def v1_bodies(family: str) -> st.SearchStrategy[bytes]:
    """V1 bodies: real field names with wrong values, missing or extra fields, wrong nesting, raw garbage."""
    fields = list(VALID[family]["instances"][0]) + ["customer_id", "category", "k", "horizon"]
    row = st.dictionaries(st.one_of(st.sampled_from(fields), st.text(max_size=12)), json_value, max_size=7)
    good = VALID[family]["instances"][0]
    mutated = st.builds(lambda key, value: {**good, key: value}, st.sampled_from(fields), json_value)
    instances = st.one_of(st.lists(st.one_of(row, mutated), max_size=4), json_value)
    body = st.one_of(st.builds(lambda i: {"instances": i}, instances),
                     st.builds(lambda i, extra: {"instances": i, **extra}, instances,
                               st.dictionaries(st.text(max_size=8), json_value, max_size=2)),
                     json_value)
    return st.one_of(body.map(lambda b: json.dumps(b).encode()), st.binary(max_size=200),
                     st.text(max_size=200).map(str.encode))


def v2_inputs(tensors: list[dict[str, Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    names = [t["name"] for t in tensors]
    tensor = st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(names), st.text(max_size=10)),
         "datatype": st.one_of(st.sampled_from(V2_TYPES), st.text(max_size=6)),
         "shape": st.one_of(st.lists(st.integers(min_value=-3, max_value=2**40), max_size=3), json_value),
         "data": json_value},
        optional={"parameters": st.dictionaries(st.text(max_size=12), json_value, max_size=2)})
    return st.lists(tensor, max_size=len(names) + 1)


def v2_bodies(tensors: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    inputs = st.one_of(v2_inputs(tensors), json_value)
    body = st.one_of(st.builds(lambda i: {"inputs": i}, inputs),
                     st.builds(lambda i, o: {"inputs": i, "outputs": o}, inputs, json_value),
                     st.builds(lambda i, p: {"inputs": i, "parameters": p}, inputs, json_value),
                     json_value)
    return body.map(lambda b: json.dumps(b).encode())


@st.composite
def binary_requests(draw: st.DrawFn, tensors: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    """The binary tensor extension: a JSON header whose tensors claim sizes, then bytes that may not match; the
    header-length header true, off by a few bytes, negative or not a number; BYTES length prefixes of any size."""
    inputs, blobs = [], []
    for tensor in draw(st.lists(st.sampled_from(tensors), min_size=1, max_size=len(tensors) + 1)):
        count = draw(st.integers(min_value=0, max_value=3))
        if tensor["datatype"] == "BYTES":
            blob = b"".join(struct.pack("<I", draw(st.one_of(st.integers(0, 12), st.integers(0, 2**32 - 1))))
                            + draw(st.binary(max_size=12)) for _ in range(count))
        else:
            blob = draw(st.binary(max_size=8 * count + 3))
        claimed = draw(st.one_of(st.just(len(blob)), st.integers(min_value=-5, max_value=len(blob) + 10),
                                 json_value))
        header = {"name": tensor["name"], "datatype": draw(st.one_of(st.just(tensor["datatype"]),
                                                                     st.sampled_from(V2_TYPES))),
                  "shape": draw(st.one_of(st.just([count]), st.lists(st.integers(-2, 5), max_size=2))),
                  "parameters": {"binary_data_size": claimed}}
        inputs.append(header)
        blobs.append(blob)
    head = json.dumps({"inputs": inputs}).encode()
    length = draw(st.one_of(st.just(str(len(head))), st.integers(-3, len(head) + 20).map(str),
                            st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=5)))
    body = head + b"".join(blobs) + draw(st.one_of(st.just(b""), st.binary(max_size=8)))
    return body, {"inference-header-content-length": length, "content-type": "application/octet-stream"}


def requests_for(server: Server, metadata: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes, dict[str, str]]]:
    tensors = metadata["inputs"]
    v1 = f"/v1/models/{server.family}:predict"
    v2 = f"/v2/models/{server.family}/infer"
    json_type = {"content-type": "application/json"}
    return st.one_of(
        v1_bodies(server.family).map(lambda b: (v1, b, json_type)),
        v2_bodies(tensors).map(lambda b: (v2, b, json_type)),
        binary_requests(tensors).map(lambda bh: (v2, bh[0], bh[1])),
    )


def _check(response: httpx.Response, elapsed: float, what: object) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    assert elapsed < SLOWEST_S, (what, f"{elapsed:.2f} s")
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}, (what, response.text[:300])
        assert "Traceback" not in response.text


# ---------------------------------------------------------------- the property-based stage
@pytest.mark.parametrize("family", FAMILIES)
def test_malformed_payloads_never_get_a_5xx_a_slow_answer_or_a_changed_server(servers: dict[str, Server],
                                                                               family: str) -> None:
    server = servers[family]
    http = httpx.Client(base_url=server.url, headers=server.auth, timeout=10)
    metadata = http.get(f"/v2/models/{family}").json()
    valid = http.post(f"/v1/models/{family}:predict", json=VALID[family])
    assert valid.status_code == 200, valid.text
    before = rss_mb(server)
    seen: dict[int, int] = {}

    @settings(max_examples=CASES, deadline=None, database=None, derandomize=not FULL,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(request=requests_for(server, metadata))
    def one(request: tuple[str, bytes, dict[str, str]]) -> None:
        path, body, headers = request
        started = time.perf_counter()
        response = http.post(path, content=body, headers=headers)
        elapsed = time.perf_counter() - started
        if elapsed >= SLOWEST_S:  # slow once under make test's load (2.06 s seen): a slow path is slow again
            started = time.perf_counter()
            response = http.post(path, content=body, headers=headers)
            elapsed = time.perf_counter() - started
        _check(response, elapsed, (path, body[:200], headers))
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    try:
        one()
        grown = rss_mb(server) - before
        assert grown < RSS_GROWTH_MB, f"{family}: resident memory grew {grown:.0f} MB over {CASES} cases"
        after = http.post(f"/v1/models/{family}:predict", json=VALID[family])
        assert server.ready() and after.status_code == 200
        assert after.json()["predictions"] == valid.json()["predictions"]
        assert sum(seen.values()) >= CASES and any(400 <= code < 500 for code in seen), seen
    finally:
        http.close()


# ---------------------------------------------------------------- schemathesis from the OpenAPI document
@pytest.mark.parametrize("family", FAMILIES)
def test_every_operation_of_the_openapi_document_survives_schemathesis(servers: dict[str, Server],
                                                                       family: str) -> None:
    import schemathesis

    server = servers[family]
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=server.auth)
    operations = list(schema.get_all_operations())
    assert len(operations) >= 10
    examples = 200 if FULL else 25
    calls: list[int] = []
    for result in operations:
        operation = result.ok()

        @settings(max_examples=examples, deadline=None, database=None, derandomize=not FULL,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), served=st.booleans())
        def one(case: Any, served: bool) -> None:
            if served and "model_name" in (case.path_parameters or {}):  # half the cases reach the served model
                case.path_parameters = {**case.path_parameters, "model_name": family}
            started = time.perf_counter()
            response = case.call(headers=server.auth, timeout=10)
            elapsed = time.perf_counter() - started
            if elapsed >= SLOWEST_S:  # as above: scheduling noise under load once (2.20 s seen), a slow path twice
                started = time.perf_counter()
                response = case.call(headers=server.auth, timeout=10)
                elapsed = time.perf_counter() - started
            assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                                response.text[:300])
            # a model (re)load the repository API accepted is real work, not an answer to malformed input
            loaded = response.status_code == 200 and case.formatted_path.endswith("/load")
            assert elapsed < SLOWEST_S or loaded, (case.method, case.formatted_path, f"{elapsed:.2f} s")
            calls.append(response.status_code)

        one()
    assert len(calls) >= len(operations) and server.ready()
    assert httpx.post(f"{server.url}/v1/models/{family}:predict", json=VALID[family], headers=server.auth,
                      timeout=10).status_code == 200
