"""Who answers an approval task: a role, spelt as an Airflow ``assigned_users`` entry ``role:<NAME>``.

Light on purpose (the training DAG imports it at parse time); the auth managers that honour it are in
:mod:`governance.board_auth`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["ROLE_PREFIX", "respondents", "roles_named", "answer_of", "board_arguments"]

ROLE_PREFIX = "role:"


def respondents(role: str) -> list[dict[str, str]]:
    """``assigned_users`` of an approval task answered by the holders of ``role``."""
    return [{"id": f"{ROLE_PREFIX}{role}", "name": f"role {role}"}]


def roles_named(assigned_users: Iterable[str]) -> set[str]:
    """The roles among an approval task's ``assigned_users``."""
    return {a.removeprefix(ROLE_PREFIX) for a in assigned_users if a.startswith(ROLE_PREFIX)}


def answer_of(event: dict[str, Any], approve: str, timeout: object) -> tuple[bool, str, str]:
    """An approval task's answer (the event Airflow hands ``execute_complete``): approved, by whom (``timeout``
    when the scheduler's sweep answered with the defaults), and why (the ``reason`` param, or a default)."""
    approved = event["chosen_options"][0] == approve
    who = event.get("responded_by_user") or {}
    by = str(who.get("name") or who.get("id") or "timeout")
    why = (event.get("params_input") or {}).get("reason") or ("approved" if approved else (
        "rejected" if by != "timeout" else f"no answer within {timeout}"))
    return approved, by, str(why)


def board_arguments(role: str, timeout: object) -> dict[str, Any]:
    """The arguments every review board's approval task shares: the question from the ``review`` task's XCom
    (``subject``, ``body``), Reject when unanswered within ``timeout``, answered by the holders of ``role``
    (honoured by :mod:`governance.board_auth`), and a ``reason`` field recorded in the audit trail."""
    from airflow.sdk import Param

    return {"task_id": "approve", "subject": "{{ ti.xcom_pull(task_ids='review')['subject'] }}",
            "body": "{{ ti.xcom_pull(task_ids='review')['body'] }}", "defaults": "Reject",
            "assigned_users": respondents(role), "response_timeout": timeout,
            "params": {"reason": Param("", type="string", description="why (recorded in the audit trail)")}}
