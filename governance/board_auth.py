"""Who may answer the review board: Airflow's auth managers, with a role as a human-in-the-loop respondent.

Airflow checks an answer to a human-in-the-loop task against the task's ``assigned_users`` (user ids)
through the auth manager's ``is_authorized_hitl_task``, the hook it documents for custom rules; it has
no notion of a role there. The training DAG's approval task names ``role:<ZM_APPROVAL__ROLE>``
(:func:`governance.respondents.respondents`) and these auth managers admit exactly the users who hold that role:

- :class:`FabAuthManager` (the chart's, ``charts/airflow-values.yaml``): the FAB role of that name in
  the metadata database (docs/install.md creates ``model-approvers`` and its first member). Anyone else,
  an Admin included, gets 403 from ``PATCH .../hitlDetails`` and still sees the question.
- :class:`SimpleAuthManager` (the local profile's Airflow standalone): its roles are Airflow's fixed
  ones, so a named role is answered by its ``admin`` users, the single local operator.

A user id listed as such keeps working as Airflow documents it.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager as _Simple
from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager as _Fab

from governance.respondents import roles_named

__all__ = ["FabAuthManager", "SimpleAuthManager"]


class FabAuthManager(_Fab):  # type: ignore[misc]
    """FAB's auth manager; an approval task's ``role:NAME`` respondent admits the holders of the FAB role NAME."""

    def is_authorized_hitl_task(self, *, assigned_users: set[str], user: Any) -> bool:
        held = {role.name for role in getattr(user, "roles", None) or []}
        return bool(roles_named(assigned_users) & held) or bool(
            super().is_authorized_hitl_task(assigned_users=assigned_users, user=user))


class SimpleAuthManager(_Simple):  # type: ignore[misc]
    """Airflow's simple auth manager (local profile); a ``role:NAME`` respondent admits its admin users."""

    def is_authorized_hitl_task(self, *, assigned_users: set[str], user: Any) -> bool:
        return bool(roles_named(assigned_users) and self._is_admin(user)) or bool(
            super().is_authorized_hitl_task(assigned_users=assigned_users, user=user))
