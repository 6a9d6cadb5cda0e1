"""In-cluster TLS for the predictors, as cert-manager would issue it, here with a private CA made in the test:
the predictor answers HTTPS only, clients that trust the CA are served, others and plain HTTP are not."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.certificates import private_ca
from tests.serving.conftest import Server

pytestmark = pytest.mark.serving


def test_a_predictor_with_a_certificate_answers_https_only(home: Path, tmp_path: Path) -> None:
    ca, cert, key = private_ca(tmp_path, "demand-forecast-predictor")
    server = Server("demand-forecast", home, env={"ZM_SERVING__TLS_CERT_FILE": str(cert),
                                                  "ZM_SERVING__TLS_KEY_FILE": str(key)},
                    scheme="https", verify=str(ca)).start().wait_ready()
    try:
        predict = f"{server.url}/v1/models/demand-forecast:predict"
        body = {"instances": [{"category": "kitchen"}]}
        r = httpx.post(predict, json=body, headers=server.auth, verify=str(ca), timeout=10)
        assert r.status_code == 200 and r.json()["predictions"], r.text
        assert httpx.post(predict, json=body, verify=str(ca), timeout=10).status_code == 401  # TLS is not a key
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # a client not trusting the CA
            httpx.post(predict, json=body, headers=server.auth, timeout=10)
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
            httpx.post(predict.replace("https://", "http://"), json=body, headers=server.auth, timeout=10)
        assert server.ready()
    finally:
        server.stop()
