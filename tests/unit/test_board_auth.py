"""Who may answer the review board: the auth managers' rule on real Airflow user objects (the stack's loop
shows it over HTTP: the Admin, not on the board, gets 403 where the approver's answer is taken)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit
BOARD = {"role:model-approvers"}


def test_fab_admits_holders_of_the_role_only() -> None:
    from airflow.providers.fab.auth_manager.models import Role, User

    from governance.board_auth import FabAuthManager

    manager = FabAuthManager()

    def user(uid: int, *roles: str) -> User:
        return User(id=uid, username=f"u{uid}", roles=[Role(name=r) for r in roles])

    assert manager.is_authorized_hitl_task(assigned_users=BOARD, user=user(2, "model-approvers", "Viewer"))
    assert not manager.is_authorized_hitl_task(assigned_users=BOARD, user=user(1, "Admin"))
    assert not manager.is_authorized_hitl_task(assigned_users=BOARD, user=user(3, "User", "Op"))
    # a user id listed as such keeps Airflow's own meaning
    assert manager.is_authorized_hitl_task(assigned_users={"3"}, user=user(3, "User"))
    assert not manager.is_authorized_hitl_task(assigned_users={"3"}, user=user(2, "model-approvers"))


def test_simple_admits_its_admins_for_a_role() -> None:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from governance.board_auth import SimpleAuthManager

    manager = SimpleAuthManager()
    assert manager.is_authorized_hitl_task(assigned_users=BOARD, user=SimpleAuthManagerUser(username="a",
                                                                                            role="admin"))
    assert not manager.is_authorized_hitl_task(assigned_users=BOARD, user=SimpleAuthManagerUser(username="o",
                                                                                                role="op"))
    assert manager.is_authorized_hitl_task(assigned_users={"o"}, user=SimpleAuthManagerUser(username="o", role="op"))


def test_the_approval_task_names_the_role_of_the_settings() -> None:
    from dags.training import training_dag
    from zmlops.settings import Settings

    task = training_dag.get_task("approve")
    assert task.assigned_users == [{"id": f"role:{Settings().approval.role}", "name": "role model-approvers"}]
