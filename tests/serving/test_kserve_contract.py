"""The edge's direct JSON path against kserve's own handlers, pinned to the kserve release it was compared with.

The edge answers plain JSON V1 and V2 predictions itself (``inference_services.server.Edge``), without kserve's
decoders and numpy round trips. Here each family's model is loaded once, registered with kserve's data plane and
application (as ``zm-serve`` does), and put behind two edges: the direct path on, and off
(``serving.direct_json``: every request through kserve's endpoints). Both get the same requests, valid and not;
status, the version header, the answers and the error messages must be the same. A kserve upgrade fails the pin
until the comparison has been run on it and ``KSERVE_CHECKED`` moved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference_services.server import KSERVE_CHECKED, Edge, service_class
from tests.serving.conftest import FAMILIES
from tests.serving.test_services import known_customers

pytestmark = pytest.mark.serving


def test_the_installed_kserve_is_the_release_the_direct_path_was_compared_with() -> None:
    assert metadata.version("kserve") == KSERVE_CHECKED, (
        f"kserve {metadata.version('kserve')} is installed; the direct JSON path was compared with {KSERVE_CHECKED}: "
        "run tests/serving/test_kserve_contract.py on it, then move KSERVE_CHECKED in inference_services/server.py")


@pytest.fixture(scope="module")
def edges(home: Path) -> Iterator[dict[str, dict[str, Edge]]]:
    """family -> {"direct": edge, "kserve": edge}: one loaded model each, kserve's application behind both."""
    import kserve.model_server as kms
    from kserve import ModelServer
    from kserve.protocol.rest.server import RESTServer

    from zmlops.settings import Settings

    kms.args.configure_logging = False
    settings = Settings(home=home)
    server = ModelServer(enable_grpc=False, enable_latency_logging=False)
    models = {f: service_class(f)(settings) for f in FAMILIES}
    for model in models.values():
        assert model.load()
        server.register_model(model)
    RESTServer(kms.FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, 0
               ).create_application()
    yield {f: {"direct": Edge(kms.app, model, 1 << 20), "kserve": Edge(kms.app, model, 1 << 20, direct=False)}
           for f, model in models.items()}
    for model in models.values():
        model.stop()


def _requests(family: str, customers: list[int]) -> list[tuple[str, dict[str, Any]]]:
    """(protocol, body): valid requests of both protocols, and invalid ones (a wrong type, a missing or unknown
    input, a wrong datatype, an empty list)."""
    if family == "demand-forecast":
        v1 = [[{"category": "kitchen", "horizon": 3}, {"category": "garden"}], [{"category": "kitchen", "horizon": 0}],
              [{"horizon": 2}], [{"category": "nope"}], []]
        v2 = [[{"name": "category", "datatype": "BYTES", "shape": [2], "data": ["kitchen", "toys_games"]},
               {"name": "horizon", "datatype": "INT64", "shape": [1], "data": [4]}],
              [{"name": "category", "datatype": "FP32", "shape": [1], "data": [1.0]}]]
    elif family == "customer-segmentation":
        profile = {"frequency": 40.0, "tenure_days": 500.0, "basket_lines": 30.0, "units_per_line": 24.0,
                   "unit_price": 1.5}
        v1 = [[{"customer_id": customers[0]}, profile, {"customer_id": 10**12}], [{**profile, "frequency": "many"}],
              [{"customer_id": -1}], [{"colour": "red"}]]
        v2 = [[{"name": "customer_id", "datatype": "INT64", "shape": [2], "data": customers[:2]}],
              [{"name": "customer_id", "datatype": "FP64", "shape": [1], "data": [1.5]}],
              [{"name": "nobody", "datatype": "INT64", "shape": [1], "data": [1]}]]
    else:
        v1 = [[{"customer_id": customers[0], "k": 5}, {"customer_id": 10**12, "k": 3, "country": "France"}],
              [{"customer_id": customers[0], "k": 0}], [{"k": 3}]]
        v2 = [[{"name": "customer_id", "datatype": "INT64", "shape": [3], "data": customers},
               {"name": "k", "datatype": "INT32", "shape": [1], "data": [4]}],
              [{"name": "customer_id", "datatype": "INT64", "shape": [2], "data": customers[:1]}],
              [{"name": "customer_id", "datatype": "FP32", "shape": [1], "data": [1.0]}]]
    return [("v1", {"instances": i}) for i in v1] + [("v2", {"inputs": i, "id": f"contract-{n}"})
                                                      for n, i in enumerate(v2)]


async def _seen(edge: Edge, protocol: str, body: dict[str, Any]) -> dict[str, Any]:
    family = edge.model.family
    path = f"/v1/models/{family}:predict" if protocol == "v1" else f"/v2/models/{family}/infer"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://edge") as client:
        r = await client.post(path, json=body)
    answer = r.json()
    if r.status_code == 200 and protocol == "v2":
        # kserve writes "parameters": null where the direct path leaves the key out: the same by the V2 protocol
        assert answer.pop("parameters", None) is None and all(o.pop("parameters", None) is None
                                                              for o in answer["outputs"]), answer
    return {"status": r.status_code, "version": r.headers.get("x-model-version"), "answer": answer}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_direct_json_path_answers_as_kserve_s_handlers_do(family: str, edges: dict[str, dict[str, Edge]],
                                                              home: Path) -> None:
    async def compare() -> set[int]:  # one event loop for the model's batcher
        statuses = set()
        for protocol, body in _requests(family, known_customers(home)):
            direct = await _seen(edges[family]["direct"], protocol, body)
            kserve = await _seen(edges[family]["kserve"], protocol, body)
            assert direct == kserve, (protocol, body)
            statuses.add(direct["status"])
        return statuses

    assert asyncio.run(compare()) == {200, 400}  # both kinds were compared
