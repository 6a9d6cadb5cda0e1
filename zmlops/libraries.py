"""Two import costs Feast puts on every process of the stack, removed once per process.

- **typeguard on Feast's classes.** Feast decorates its classes with typeguard's ``@typechecked``, which, for each
  method, parses the method's whole module again and compiles it instrumented (typeguard issue #468): 3.0 of the
  4.4 CPU-s ``import feast`` took here, in every predictor, feature-store step and test process, and each call of
  an instrumented method then checks its arguments' types. :func:`feast_without_type_checks` makes the decorator the
  identity for Feast's own classes (every other user of typeguard keeps it) before Feast is imported; typeguard's
  own switch is Python's ``-O``, which would also drop every ``assert`` of every library. The checks guard Feast
  declarations written by hand; ours are fixed (``feature_repo/``) and tested (``feast apply`` in the tests and
  the topology), so they find nothing at run time.
- **Feast's MLflow request-header provider.** Feast registers one (``mlflow.request_header_provider``, for its
  MLflow data sources, which we do not use; it adds a header only inside Feast's own token scope). MLflow loads
  every provider at a process's first registry request, and loading Feast's imports all of Feast: every Airflow
  task, predictor and command that reads the registry paid for ``import feast`` without using it.
  :func:`mlflow_without_feast_headers` loads MLflow's providers without it.

``python -m benchmarks.probe_imports`` prints what ``import feast`` and a process that reads the registry cost, each in
a fresh process, with and without the switches.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["feast_without_type_checks", "mlflow_without_feast_headers"]

FEAST = "feast"


def _feast_module(target: Any) -> bool:
    return str(getattr(target, "__module__", "")).split(".")[0] == FEAST


def feast_without_type_checks() -> bool:
    """Make typeguard's ``@typechecked`` the identity for Feast's classes and functions, before Feast is imported
    (Feast binds the decorator at its import: after that it is too late, and this returns False)."""
    loaded = sys.modules.get("typeguard")
    if loaded is not None and getattr(loaded.typechecked, "_zm_feast_unchecked", False):
        return True
    if FEAST in sys.modules:
        return False
    import typeguard

    checked = typeguard.typechecked

    def typechecked(target: Any = None, **options: Any) -> Any:
        if target is not None and _feast_module(target):
            return target
        return checked(target, **options) if target is not None else checked(**options)

    typechecked._zm_feast_unchecked = True  # type: ignore[attr-defined]
    typeguard.typechecked = typechecked  # type: ignore[assignment]
    return True


def mlflow_without_feast_headers() -> bool:
    """Load MLflow's request-header providers, every registered one but Feast's (MLflow loads them once, when its
    provider registry is first imported: after that it is too late, and this returns False)."""
    if "mlflow.tracking.request_header.registry" in sys.modules:
        return False
    from mlflow.utils import plugins

    every = plugins.get_entry_points

    def without_feast(group: str) -> list[Any]:
        return [e for e in every(group) if e.value.split(".")[0] != FEAST]

    plugins.get_entry_points = without_feast  # type: ignore[assignment]
    try:
        import mlflow.tracking.request_header.registry  # noqa: F401 - loads the providers, now without Feast's
    finally:
        plugins.get_entry_points = every  # type: ignore[assignment]
    return True
