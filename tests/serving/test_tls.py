"""In-cluster TLS for the predictors, as cert-manager would issue it, here with a private CA made in the test:
the predictor answers HTTPS only, clients that trust the CA are served, others and plain HTTP are not."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import Server

pytestmark = pytest.mark.serving


def _private_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate it signed for 127.0.0.1 and localhost: (ca, cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zero-margin test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demand-forecast-predictor")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.crt", folder / "tls.crt", folder / "tls.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def test_a_predictor_with_a_certificate_answers_https_only(home: Path, tmp_path: Path) -> None:
    ca, cert, key = _private_ca(tmp_path)
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
