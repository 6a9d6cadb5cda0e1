"""An OpenID Connect issuer for the local topology and the tests: the platform's identity provider (Keycloak,
Dex, Entra ID) as the servers that check its tokens see one.

Built on Authlib's OAuth 2.0 authorization server: the client credentials grant (RFC 6749, section 4.4) issues
JWT access tokens (RFC 9068) signed with an RSA key made at start; the discovery document
(``/.well-known/openid-configuration``) and the key set (``/jwks``) are public, as at any issuer. Each client is
a workload or a person's tool with a secret, the roles its tokens carry (the top-level ``roles`` claim, which
Feast reads) and the audience they are minted for (``aud``)::

    python -m stack.oidc --port 9400 --issuer http://zm-oidc.mlops.svc:9400 --clients clients.json

``clients.json`` (or the same JSON in ``ZM_OIDC_CLIENTS``): ``[{"client_id": "...", "client_secret": "...",
"roles": ["feast-reader"], "audience": "zero-margin-feast", "scope": "predict"}]`` (``scope`` optional). No
users, no browser flows: the authorization endpoint answers every request with an OAuth error
(``unsupported_response_type``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Client", "app", "Issuer"]

TOKEN_SECONDS = 300


@dataclass(frozen=True)
class Client:
    """A registered client (Authlib's ``ClientMixin`` protocol, client credentials only)."""

    client_id: str
    client_secret: str
    roles: tuple[str, ...] = ()
    audience: str = ""
    scope: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or self.scope).split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret.encode(), self.client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


def app(issuer: str, clients: list[Client]) -> Any:
    """The issuer's Flask application."""
    from authlib.integrations.flask_oauth2 import AuthorizationServer
    from authlib.oauth2.rfc6749 import grants
    from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
    from flask import Flask, jsonify
    from joserfc.jwk import KeySet, RSAKey

    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, private=True, auto_kid=True)
    keys = KeySet([key])
    by_id = {c.client_id: c for c in clients}

    class Tokens(JWTBearerTokenGenerator):  # type: ignore[misc]
        def get_jwks(self) -> KeySet:
            return keys

        def get_audiences(self, client: Client, user: Any, scope: str) -> str:
            return client.audience or client.client_id

        def get_extra_claims(self, client: Client, grant_type: str, user: Any, scope: str) -> dict[str, Any]:
            return {"roles": list(client.roles), "azp": client.client_id, **client.extra}

    flask_app = Flask("zm-oidc")
    flask_app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"client_credentials": TOKEN_SECONDS}
    server = AuthorizationServer(flask_app, query_client=by_id.get, save_token=lambda token, request: None)
    server.register_grant(grants.ClientCredentialsGrant)
    server.register_token_generator("default", Tokens(issuer=issuer))

    @flask_app.get("/.well-known/openid-configuration")
    def discovery() -> Any:
        return jsonify({
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks",
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["code"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
        })

    @flask_app.get("/jwks")
    def jwks() -> Any:
        return jsonify(keys.as_dict(private=False))

    @flask_app.post("/token")
    def token() -> Any:
        return server.create_token_response()

    @flask_app.route("/authorize", methods=["GET", "POST"])
    def authorize() -> Any:
        return jsonify({"error": "unsupported_response_type",
                        "error_description": "this issuer serves the client credentials grant only"}), 400

    @flask_app.get("/healthz")
    def healthz() -> Any:
        return "ok"

    return flask_app


def load_clients(text: str) -> list[Client]:
    return [Client(c["client_id"], c["client_secret"], tuple(c.get("roles", ())), c.get("audience", ""),
                   c.get("scope", ""), c.get("extra", {})) for c in json.loads(text)]


class Issuer:
    """The issuer in a thread of this process, on a free loopback port (for tests)."""

    def __init__(self, clients: list[Client], host: str = "127.0.0.1") -> None:
        from werkzeug.serving import make_server

        self._server = make_server(host, 0, None, threaded=True)  # type: ignore[arg-type]
        self.url = f"http://{host}:{self._server.server_port}"
        self._server.app = app(self.url, clients)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def discovery_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    def token(self, client_id: str, client_secret: str) -> str:
        """An access token for this client (the client credentials grant, as Feast's client asks for one)."""
        import httpx

        answer = httpx.post(f"{self.url}/token", data={"grant_type": "client_credentials"},
                            auth=(client_id, client_secret), timeout=10)
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def __enter__(self) -> Issuer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stack.oidc", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--issuer", required=True, help="the issuer URL, as clients and servers reach it")
    parser.add_argument("--clients", type=Path, help="JSON list of clients (see above; default: $ZM_OIDC_CLIENTS)")
    args = parser.parse_args(argv)
    text = args.clients.read_text() if args.clients else os.environ.get("ZM_OIDC_CLIENTS")
    if not text:
        parser.error("no clients: give --clients FILE or set ZM_OIDC_CLIENTS")
    from werkzeug.serving import run_simple

    run_simple(args.host, args.port, app(args.issuer.rstrip("/"), load_clients(text)), threaded=True)


if __name__ == "__main__":
    main()
