"""Who may do what through the Feast feature server (k8s profile, OIDC tokens): Feast checks these on every
request once its ``auth`` is ``oidc``; the SDK in our own workloads reads the stores directly and is not checked.

- ``feast-reader``: online features and the registry's descriptions (client applications, analysts' tools);
- ``feast-writer``: also push and write to the online store, and materialize (a producer outside the pipelines).

The roles come from the token's ``roles`` claim (or Keycloak's ``resource_access.<client_id>.roles``); a token
without either role may do nothing (Feast denies what no permission grants).
"""

from feast.permissions.action import READ, AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import RoleBasedPolicy

READER, WRITER = "feast-reader", "feast-writer"

readers = Permission(
    name="online-readers",
    actions=[AuthzedAction.DESCRIBE, AuthzedAction.READ_ONLINE],
    policy=RoleBasedPolicy(roles=[READER, WRITER]),
)
writers = Permission(
    name="writers",
    actions=[AuthzedAction.DESCRIBE, *READ, AuthzedAction.WRITE_ONLINE, AuthzedAction.WRITE_OFFLINE],
    policy=RoleBasedPolicy(roles=[WRITER]),
)
