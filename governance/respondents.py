"""Who answers an approval task: a role, spelt as an Airflow ``assigned_users`` entry ``role:<NAME>``.

Light on purpose (the training DAG imports it at parse time); the auth managers that honour it are in
:mod:`governance.board_auth`.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ROLE_PREFIX", "respondents", "roles_named"]

ROLE_PREFIX = "role:"


def respondents(role: str) -> list[dict[str, str]]:
    """``assigned_users`` of an approval task answered by the holders of ``role``."""
    return [{"id": f"{ROLE_PREFIX}{role}", "name": f"role {role}"}]


def roles_named(assigned_users: Iterable[str]) -> set[str]:
    """The roles among an approval task's ``assigned_users``."""
    return {a.removeprefix(ROLE_PREFIX) for a in assigned_users if a.startswith(ROLE_PREFIX)}
