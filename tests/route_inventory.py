"""The route inventory's check, one for every server the project starts (the predictors, the alert receiver):
each route is called without a key, with a wrong one, with a key of another scope and with the right one."""

from __future__ import annotations

from collections.abc import Callable, Iterable

Call = Callable[[str, str, str | None], int]  # (method, path, token or None) -> HTTP status


def inventory_problems(routes: Iterable[tuple[str, str]], call: Call, scope_of: Callable[[str], str | None],
                       tokens: dict[str, str]) -> list[tuple[str, str, object]]:
    """The routes that break the rule: a probe (scope None) must not ask for a key; any other route answers 401
    without a key and with a wrong one, 403 with a key of another scope, and is served with its scope's key."""
    problems: list[tuple[str, str, object]] = []
    for method, path in routes:
        needed = scope_of(path)
        if needed is None:
            if call(method, path, None) in (401, 403):
                problems.append((method, path, "a probe asked for a key"))
            continue
        other = next(s for s in tokens if s != needed)
        got = {"none": call(method, path, None), "wrong": call(method, path, "zm_not-a-key"),
               "other scope": call(method, path, tokens[other]), "right": call(method, path, tokens[needed])}
        if (got["none"], got["wrong"], got["other scope"]) != (401, 401, 403) or got["right"] in (401, 403):
            problems.append((method, path, got))
    return problems
