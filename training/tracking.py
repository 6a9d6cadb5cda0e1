"""The one module that talks to MLflow: runs, the model registry, aliases and the gate's record.

Every registry write of the project goes through here. Stages are registry aliases (MLflow 3
deprecates the stage API), and each has one writer:

============  ====================================================  =========================
old stage     alias here                                            moved by
============  ====================================================  =========================
None          ``candidate`` (registered, not yet gated)             training
Staging       ``staging`` (passed the champion/challenger gate)     the gate (training)
Production    ``production`` (served); the one before it keeps      the deploy step, after
              ``previous-production`` for rollback                  approval and the canary
Archived      no alias (the version and its run stay)
============  ====================================================  =========================

Registry writes are retried for a few seconds (MLflow restarting); one that still fails raises
:class:`RegistryUnavailable`, and the rollout reconciles the aliases with what is served at its
next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zmlops.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "ALIASES",
    "client",
    "lock_hash",
    "existing_version",
    "log_training_run",
    "set_alias",
    "alias_version",
    "record_gate",
    "stage",
    "move_production",
    "tag_version",
    "update_registry",
    "copy_version",
    "RegistryUnavailable",
    "load_estimator",
    "RegisteredModel",
]

ALIASES = ("candidate", "staging", "production", "previous-production")
REPO = Path(__file__).resolve().parents[1]
PIP_REQUIREMENTS = ["mlflow", "pandas", "numpy", "scikit-learn", "scipy", "statsmodels", "implicit", "joblib"]


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str


class _KnownNoise(logging.Filter):
    """Drops two MLflow warnings that hold for every model we log and say nothing new."""

    TEXTS = ("serialized using CloudPickle", "Failed to resolve installed pip version")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(t in record.getMessage() for t in self.TEXTS)


for _name in ("mlflow.pyfunc", "mlflow.utils.environment"):
    logging.getLogger(_name).addFilter(_KnownNoise())


def client(settings: Settings) -> MlflowClient:
    import mlflow

    from zmlops.libraries import mlflow_without_feast_headers

    mlflow_without_feast_headers()  # else the first request imports all of Feast (zmlops.libraries)
    mlflow.set_tracking_uri(settings.tracking_uri)
    return mlflow.MlflowClient(tracking_uri=settings.tracking_uri)


def experiment_id(settings: Settings, family: str) -> str:
    c = client(settings)
    name = f"zmlops/{family}"
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if settings.mlflow_tracking_uri is None:  # local store: artifacts in a folder beside the database
        location = (settings.artifact_root / family).as_uri()
    return str(c.create_experiment(name, artifact_location=location))


def lock_hash() -> str:
    lock = REPO / "uv.lock"
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:16] if lock.exists() else "unknown"


def existing_version(settings: Settings, family: str, fingerprint: str) -> RegisteredModel | None:
    """The version already registered for this fingerprint (data version + code + params), if any."""
    c = client(settings)
    found = c.search_model_versions(f"name = '{family}' and tags.fingerprint = '{fingerprint}'")
    if not found:
        return None
    v = max(found, key=lambda m: int(m.version))
    return RegisteredModel(family, str(v.version), str(v.run_id))


@contextlib.contextmanager
def training_run(settings: Settings, family: str, data_version: str) -> Iterator[Any]:
    """The family's training run: the active one when a caller opened it (tuning nests its trials under it
    first), else a new run that ends with the block."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        yield active
        return
    client(settings)
    with mlflow.start_run(experiment_id=experiment_id(settings, family), run_name=f"{family} {data_version}") as run:
        yield run


def log_training_run(
    settings: Settings,
    family: str,
    *,
    estimator: Any,
    wrapper: Any,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    texts: dict[str, str],
    input_example: Any,
    fingerprint: str,
) -> RegisteredModel:
    """One MLflow run: params, metrics (one batch), tags, text artifacts, the pyfunc model; registered."""
    import joblib
    import mlflow
    from mlflow.models import infer_signature

    with training_run(settings, family, tags.get("data_version", "")) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.set_tags({**tags, "fingerprint": fingerprint})
        for name, text in texts.items():
            mlflow.log_text(text, name)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "estimator.joblib"
            joblib.dump(estimator, path)
            model = wrapper()
            model.estimator = estimator
            output = model.predict(None, input_example)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                artifacts={"estimator": str(path)},
                signature=infer_signature(input_example, output),
                input_example=input_example,
                pip_requirements=PIP_REQUIREMENTS,
            )
        c = client(settings)
        if not c.search_registered_models(f"name = '{family}'"):
            c.create_registered_model(family)
        version = str(c.create_model_version(family, info.model_uri, run.info.run_id, model_id=info.model_id).version)
        for key, value in {**tags, "fingerprint": fingerprint}.items():
            c.set_model_version_tag(family, version, key, value)
        return RegisteredModel(family, version, run.info.run_id)


def alias_version(settings: Settings, family: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client(settings).get_model_version_by_alias(family, alias).version)
    except MlflowException:
        return None


class RegistryUnavailable(RuntimeError):
    """A registry write failed after its retries (MLflow unreachable or refusing)."""


def _write(what: str, fn: Any, attempts: int = 4, wait: float = 0.5) -> Any:
    """Run one registry write, retried with a doubling wait (about 4 s in all)."""
    import time

    from mlflow.exceptions import MlflowException, RestException

    for attempt in range(attempts):
        try:
            return fn()
        except RestException as error:  # an answer from MLflow: 4xx will not get better
            if error.get_http_status_code() < 500 or attempt == attempts - 1:
                raise RegistryUnavailable(f"{what}: {error}") from error
        except (MlflowException, OSError) as error:
            if attempt == attempts - 1:
                raise RegistryUnavailable(f"{what}: {type(error).__name__}: {str(error)[:200]}") from error
        time.sleep(wait * 2**attempt)
    raise AssertionError("unreachable")


def set_alias(settings: Settings, family: str, alias: str, version: str) -> None:
    if alias not in ALIASES:
        raise ValueError(f"unknown alias {alias!r}; use one of {ALIASES}")
    _write(f"{family}: {alias} -> v{version}",
           lambda: client(settings).set_registered_model_alias(family, alias, version))


def stage(settings: Settings, model: RegisteredModel) -> None:
    """The gate passed: ``staging`` -> this version. Production does not move here."""
    set_alias(settings, model.name, "staging", model.version)


def move_production(settings: Settings, family: str, version: str, previous: str | None) -> None:
    """``production`` -> ``version`` and, when given and different, ``previous-production`` -> ``previous``.

    Only the deploy step (after approval and the canary), a rollback and the reconciliation call this.
    """
    if previous is not None and previous != version:
        set_alias(settings, family, "previous-production", previous)
    set_alias(settings, family, "production", version)


def update_registry(settings: Settings, family: str, aliases: dict[str, str | None],
                    tags: dict[str, dict[str, str]], registry: Any = None) -> None:
    """Move ``aliases`` (None removes one) and set ``tags`` per version (the rollout's writes); ``registry``: a
    client to use instead of MLflow's (tests). Raises :class:`RegistryUnavailable` after the retries."""
    from mlflow.exceptions import MlflowException

    c = registry or client(settings)
    for alias, version in aliases.items():
        if version is None:
            def drop(a: str = alias) -> None:
                try:
                    c.delete_registered_model_alias(family, a)
                except MlflowException as error:  # already gone
                    if error.get_http_status_code() != 404:
                        raise

            _write(f"{family}: remove {alias}", drop)
            continue
        _write(f"{family}: {alias} -> v{version}",
               lambda a=alias, v=version: c.set_registered_model_alias(family, a, v))
    for version, pairs in tags.items():
        for key, value in pairs.items():
            _write(f"{family} v{version}: tag {key}",
                   lambda v=version, k=key, x=value: c.set_model_version_tag(family, v, k, str(x)[:5000]))


def tag_version(settings: Settings, family: str, version: str, tags: dict[str, str]) -> None:
    c = client(settings)
    for key, value in tags.items():
        _write(f"{family} v{version}: tag {key}", lambda k=key, v=value: c.set_model_version_tag(family, version, k,
                                                                                                   str(v)[:5000]))


def copy_version(settings: Settings, family: str, version: str | None = None, source: str | None = None,
                 description: str = "") -> str:
    """A new version of ``family``: a copy of ``version``, or one registered from ``source`` (drills, tests)."""
    c = client(settings)
    if version is not None:
        return str(c.copy_model_version(f"models:/{family}/{version}", family).version)
    return str(c.create_model_version(family, source=source, description=description).version)


def record_gate(settings: Settings, model: RegisteredModel, decision: dict[str, Any]) -> None:
    """The gate's decision and numbers: tags on the version and on its run, plus a JSON artifact."""
    c = client(settings)
    flat = {f"gate.{k}": str(v) for k, v in decision.items() if v is not None}
    for k, v in flat.items():
        c.set_model_version_tag(model.name, model.version, k, v)
        c.set_tag(model.run_id, k, v)
    c.log_text(model.run_id, json.dumps(decision, indent=2, default=str), "gate.json")


def load_estimator(settings: Settings, family: str, version: str) -> Any:
    """The fitted estimator of a registered version (the joblib artifact inside the pyfunc model)."""
    import joblib
    import mlflow

    client(settings)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(f"models:/{family}/{version}", dst_path=tmp)
        files = list(Path(local).rglob("estimator.joblib"))
        if not files:
            raise FileNotFoundError(f"{family} v{version} has no estimator artifact")
        return joblib.load(files[0])
