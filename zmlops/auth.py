"""API keys of the predictors: stored hashed, each with scopes; clients send ``Authorization: Bearer <key>``.

Scopes: ``predict`` (inference and model metadata), ``metrics`` (``/metrics``, for Prometheus and the
rollout's analysis), ``admin`` (the model repository API, when it is on), ``alerts`` (the alert receiver's
webhook, for Alertmanager). Health and readiness probes need no key.

Where the keys come from:

- **k8s profile**: ``ZM_AUTH__API_KEYS``, a JSON list ``[{"name": ..., "sha256": ..., "scopes": [...]}]`` from
  a Secret: only hashes reach the predictors. A client holds its own key (``ZM_AUTH__CLIENT_KEY``, from its
  Secret). Rotation without downtime: add the new key's entry, move the clients, remove the old entry; both
  are valid in between (``zm auth new-key`` prints a key and its entry).
- **local profile**: the first process that needs them creates ``$ZM_HOME/secrets/api-keys.json`` (the
  hashes the servers check) and ``$ZM_HOME/secrets/client-key`` (one key with every scope, mode 0600, for
  the demo, the rollout and the tests on this machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zmlops.settings import Settings

__all__ = ["Key", "SCOPES", "digest", "keys", "client_key", "headers", "new_key", "pushgateway_users"]

SCOPES = ("predict", "metrics", "admin", "alerts")


@dataclass(frozen=True)
class Key:
    name: str
    sha256: str
    scopes: frozenset[str]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_key(name: str, scopes: tuple[str, ...] = ("predict",)) -> tuple[str, dict[str, object]]:
    """A fresh key and its entry for ``ZM_AUTH__API_KEYS``."""
    token = "zm_" + secrets.token_urlsafe(32)
    return token, {"name": name, "sha256": digest(token), "scopes": list(scopes)}


def userlist(name: str, passwords: dict[str, str], groups: dict[str, tuple[str, ...]] | None = None,
             rounds: int = 10) -> str:
    """An HAProxy userlist ``name``: these users with bcrypt hashes of their passwords only, and ``groups``
    (group -> its users) for the rules that tell the users apart (the Secret keys ``pushgateway-users`` and
    ``analysts-users``)."""
    import bcrypt

    groups = groups or {}
    for group, members in groups.items():
        if set(members) - set(passwords):
            raise ValueError(f"{group} without a password: {sorted(set(members) - set(passwords))}")
    lines = [f"userlist {name}", *(f"  group {g}" for g in groups)]
    for user, password in passwords.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", user):
            raise ValueError(f"user name {user!r}: letters, digits, '_', '.' and '-' only")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
        member = [g for g, users in groups.items() if user in users]
        lines.append(f"  user {user} password {hashed}" + (f" groups {','.join(member)}" if member else ""))
    return "\n".join(lines) + "\n"


def pushgateway_users(passwords: dict[str, str], pushers: tuple[str, ...] = ("monitoring",), rounds: int = 10) -> str:
    """The HAProxy userlist ``pushgateway`` in front of the Pushgateway (the Secret key ``pushgateway-users``):
    those in ``pushers`` form the group that may push (charts/zero-margin/files/pushgateway-proxy.cfg), the others
    only read."""
    return userlist("pushgateway", passwords, {"pushers": pushers}, rounds)


def _local(settings: Settings) -> tuple[list[dict[str, object]], str]:
    """The local profile's key file and client key, created once (the first writer wins; others read it)."""
    folder = settings.home.resolve() / "secrets"
    entries_file, client_file = folder / "api-keys.json", folder / "client-key"
    if not client_file.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        token, entry = new_key("local", SCOPES)
        tmp = folder / f".api-keys.{os.getpid()}.json"
        tmp.write_text(json.dumps([entry], indent=2))
        try:
            fd = os.open(client_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created them first
            tmp.unlink()
        else:
            tmp.replace(entries_file)
            with os.fdopen(fd, "w") as out:
                out.write(token)
    for _ in range(50):  # the winner writes the key file just after the client key
        if entries_file.exists() and client_file.stat().st_size:
            break
        time.sleep(0.05)
    return json.loads(entries_file.read_text()), client_file.read_text().strip()


def keys(settings: Settings) -> dict[str, Key]:
    """The keys a predictor accepts, by their sha256."""
    if settings.auth.api_keys is not None:
        raw = json.loads(settings.auth.api_keys.get_secret_value())
    elif settings.profile == "local":
        raw = _local(settings)[0]
    else:
        raise RuntimeError("the k8s profile's predictors need ZM_AUTH__API_KEYS (hashed keys, from a Secret)")
    out = {}
    for entry in raw:
        unknown = set(entry.get("scopes", [])) - set(SCOPES)
        if unknown:
            raise ValueError(f"ZM_AUTH__API_KEYS: key {entry.get('name')!r} has unknown scopes {sorted(unknown)}")
        out[str(entry["sha256"])] = Key(str(entry["name"]), str(entry["sha256"]), frozenset(entry["scopes"]))
    return out


def client_key(settings: Settings) -> str:
    """This process's key as a client of the predictors."""
    if settings.auth.client_key is not None:
        return settings.auth.client_key.get_secret_value()
    if settings.profile == "local":
        return _local(settings)[1]
    raise RuntimeError("set ZM_AUTH__CLIENT_KEY (a key of the predictors, from a Secret) to call the predictors")


def allowed(found: dict[str, Key], authorization: str | None, scope: str) -> tuple[int, str] | None:
    """None when ``authorization`` (the header's value) carries a key with ``scope``, else the 401 or 403."""
    if authorization is None:
        return 401, "authorization: a bearer token is required (Authorization: Bearer <key>)"
    key = found.get(digest(authorization[7:].strip())) if authorization[:7].lower() == "bearer " else None
    if key is None:
        return 401, "authorization: not a valid key"
    if scope not in key.scopes:
        return 403, f"authorization: key {key.name!r} lacks the scope {scope!r}"
    return None


def headers(settings: Settings) -> dict[str, str]:
    """HTTP headers that authenticate this process to the predictors."""
    return {"authorization": f"Bearer {client_key(settings)}"}
