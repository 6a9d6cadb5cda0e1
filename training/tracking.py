"""The one module that talks to MLflow: runs, the model registry, aliases and the gate's record.

Stages are registry aliases (MLflow 3 deprecates the stage API):

============  ====================================================
old stage     alias here
============  ====================================================
None          ``candidate`` (registered, not yet gated)
Staging       ``staging`` (passed the champion/challenger gate)
Production    ``production`` (served); the one before it keeps
              ``previous-production`` for rollback
Archived      no alias (the version and its run stay)
============  ====================================================
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zmlops.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "ALIASES",
    "client",
    "code_version",
    "lock_hash",
    "existing_version",
    "log_training_run",
    "set_alias",
    "alias_version",
    "record_gate",
    "promote",
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

    mlflow.set_tracking_uri(settings.tracking_uri)
    return mlflow.MlflowClient(tracking_uri=settings.tracking_uri)


def _experiment(settings: Settings, family: str) -> str:
    c = client(settings)
    name = f"zmlops/{family}"
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if settings.mlflow_tracking_uri is None:  # local store: artifacts in a folder beside the database
        location = (settings.artifact_root / family).as_uri()
    return str(c.create_experiment(name, artifact_location=location))


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        # docs (benchmark figures, generated model cards) do not change what a model is
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", ".", ":(exclude)docs"], cwd=REPO, capture_output=True, check=True
        ).stdout
        # a dirty tree is named by its diff, so two different uncommitted edits never share a fingerprint
        return out.stdout.strip() + (f"-dirty-{hashlib.sha256(diff).hexdigest()[:8]}" if diff else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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

    client(settings)
    experiment = _experiment(settings, family)
    with mlflow.start_run(experiment_id=experiment, run_name=f"{family} {tags.get('data_version', '')}") as run:
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


def set_alias(settings: Settings, family: str, alias: str, version: str) -> None:
    if alias not in ALIASES:
        raise ValueError(f"unknown alias {alias!r}; use one of {ALIASES}")
    client(settings).set_registered_model_alias(family, alias, version)


def record_gate(settings: Settings, model: RegisteredModel, decision: dict[str, Any]) -> None:
    """The gate's decision and numbers: tags on the version and on its run, plus a JSON artifact."""
    c = client(settings)
    flat = {f"gate.{k}": str(v) for k, v in decision.items() if v is not None}
    for k, v in flat.items():
        c.set_model_version_tag(model.name, model.version, k, v)
        c.set_tag(model.run_id, k, v)
    c.log_text(model.run_id, json.dumps(decision, indent=2, default=str), "gate.json")


def promote(settings: Settings, model: RegisteredModel) -> str | None:
    """staging -> production; the replaced production version keeps ``previous-production``."""
    old = alias_version(settings, model.name, "production")
    set_alias(settings, model.name, "staging", model.version)
    if old is not None and old != model.version:
        set_alias(settings, model.name, "previous-production", old)
    set_alias(settings, model.name, "production", model.version)
    return old


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
