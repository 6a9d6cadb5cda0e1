"""The MLflow tracking server of the k8s profile, behind MLflow's own authentication app (``basic-auth``).

``python -m zmlops.mlflow_server [mlflow server options]`` is the chart's MLflow container command. Before it
becomes ``mlflow server --app-name basic-auth ...`` (``os.execvp``: the server is the container's process) it

- writes the auth app's configuration from the environment: users and permissions live in the backend
  store's database (their own tables and migration table), and a user without a grant may do nothing
  (``default_permission = NO_PERMISSIONS``);
- creates or updates the service accounts, each holding one role of least rights:

  ========== ================================================= ==========================================
  account    role: experiments, registered models              who holds its password
  ========== ================================================= ==========================================
  pipelines  MANAGE, MANAGE (runs, versions, aliases, cleanup) Airflow's tasks (train, gate, deploy step)
  serving    READ, READ (a version by alias, its artifacts)     the predictors
  ========== ================================================= ==========================================

  and the role ``viewer`` (READ, READ) for people an administrator adds. The administrator itself is MLflow's
  bootstrap admin (``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD``).

Passwords come from Secrets by reference (``MLFLOW_ACCOUNT_PIPELINES_PASSWORD``, ``MLFLOW_ACCOUNT_SERVING_PASSWORD``);
a changed Secret takes effect when the MLflow pods restart (docs/security.md). Two replicas starting together
both apply the same accounts: whichever creates a row first wins and the other updates it.

Rotation without downtime: MLflow keeps one password per user, so while ``MLFLOW_ACCOUNT_<NAME>_PREVIOUS_PASSWORD``
is set the auth app checks requests with :func:`authenticate` (its ``authorization_function`` extension point):
the account's previous password is accepted beside the current one until the clients have moved and the
previous one is removed (the MLflow pods restart again). Without a previous password MLflow's own check runs.
"""

from __future__ import annotations

import configparser
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["ACCOUNTS", "PREVIOUS", "ROLES", "apply", "authenticate", "write_config", "main"]

log = logging.getLogger("zmlops.mlflow_server")

RESOURCES = ("experiment", "registered_model")
ROLES = {"pipelines": "MANAGE", "serving": "READ", "viewer": "READ"}  # per resource type, pattern "*"
ACCOUNTS = {"pipelines": "MLFLOW_ACCOUNT_PIPELINES_PASSWORD", "serving": "MLFLOW_ACCOUNT_SERVING_PASSWORD"}
PREVIOUS = {user: env.replace("_PASSWORD", "_PREVIOUS_PASSWORD") for user, env in ACCOUNTS.items()}
WORKSPACE = "default"  # workspaces are off: every grant lives in MLflow's default workspace
BASIC = "mlflow.server.auth:authenticate_request_basic_auth"


def authenticate() -> Any:
    """MLflow's basic-auth check, and a service account's previous password while it rotates.

    The previous password is compared first (a constant-time compare, where MLflow's check of a wrong
    password costs a PBKDF2 hash), so clients not yet moved are as fast as before."""
    import hmac

    from flask import request
    from mlflow.server.auth import authenticate_request_basic_auth

    given = request.authorization
    if given is not None and given.username in PREVIOUS and given.password:
        previous = os.environ.get(PREVIOUS[given.username], "")
        if previous and hmac.compare_digest(given.password.encode(), previous.encode()):
            return given
    return authenticate_request_basic_auth()


def write_config(path: Path, database_uri: str, admin: str = "admin", rotating: bool = False) -> Path:
    """The auth app's ini file (no password in it: MLFLOW_AUTH_ADMIN_PASSWORD carries the admin's);
    ``rotating``: some account has a previous password too (:func:`authenticate` checks requests)."""
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": "NO_PERMISSIONS",
        "database_uri": database_uri,
        "admin_username": admin,
        # by module name, not __name__ (which is __main__ in the container's command)
        "authorization_function": "zmlops.mlflow_server:authenticate" if rotating else BASIC,
        "grant_default_workspace_access": "false",
        # a checked password is remembered per worker for a minute: without it every request pays a PBKDF2 hash
        # (a rotated or deleted account's old password keeps working on a worker for at most that long)
        "auth_cache_ttl_seconds": "60",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the database URL holds a password
    with os.fdopen(fd, "w") as out:
        config.write(out)
    return path


def apply(database_uri: str, passwords: dict[str, str]) -> dict[str, str]:
    """Roles with their grants, and each account with its password and role; returns what was done per name."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)
    done: dict[str, str] = {}
    roles = {}
    for name, permission in ROLES.items():
        try:
            role = store.create_role(name, WORKSPACE, f"zero-margin: {permission} on experiments and models")
            done[f"role {name}"] = "created"
        except MlflowException:  # it exists (another replica, an earlier start)
            role = store.get_role_by_name(WORKSPACE, name)
        roles[name] = role
        have = {(p.resource_type, p.resource_pattern): p for p in store.list_role_permissions(role.id)}
        for resource in RESOURCES:
            grant = have.get((resource, "*"))
            if grant is None:
                store.add_role_permission(role.id, resource, "*", permission)
            elif grant.permission != permission:
                store.update_role_permission(grant.id, permission)
    for user, password in passwords.items():
        try:
            store.create_user(user, password)
            done[f"user {user}"] = "created"
        except MlflowException:
            store.update_user(user, password=password)  # a rotated Secret: the new password from now on
            done[f"user {user}"] = "password set"
        account = store.get_user(user)
        if roles[user].id not in {r.id for r in store.list_user_roles(account.id)}:
            store.assign_role_to_user(account.id, roles[user].id)
    return done


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    database = os.environ.get("MLFLOW_AUTH_DATABASE_URI") or os.environ["MLFLOW_BACKEND_STORE_URI"]
    missing = [env for env in ACCOUNTS.values() if not os.environ.get(env)]
    if missing:
        raise SystemExit(f"zmlops.mlflow_server: {', '.join(missing)} not set (the service accounts' passwords)")
    rotating = sorted(user for user, env in PREVIOUS.items() if os.environ.get(env))
    config = write_config(Path(tempfile.gettempdir()) / "mlflow-auth" / "basic_auth.ini", database,
                          os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin"), rotating=bool(rotating))
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
    done = apply(database, {user: os.environ[env] for user, env in ACCOUNTS.items()})
    log.info("MLflow accounts: %s", ", ".join(f"{k} {v}" for k, v in done.items()) or "unchanged")
    if rotating:
        log.info("MLflow accounts rotating (previous password accepted too): %s", ", ".join(rotating))
    beside = Path(sys.executable).with_name("mlflow")  # the environment's own mlflow, else the PATH's
    program = str(beside) if beside.exists() else "mlflow"
    os.execvp(program, [program, "server", "--app-name", "basic-auth", *args])


if __name__ == "__main__":
    main()
