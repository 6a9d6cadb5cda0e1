"""One typed settings object for the whole stack.

Every URI, path, threshold and secret is read from here. Values come from
environment variables prefixed ``ZM_`` (nested with ``__``, for example
``ZM_VALIDATION__MAX_NULL_SHARE=0.4``) or from a ``.env`` file. The ``local``
profile (default) runs everything embedded under ``ZM_HOME``; the ``k8s``
profile points the same code at cluster services and refuses default secrets.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from zmlops import catalog

__all__ = [
    "AirflowSettings",
    "ApprovalSettings",
    "Settings",
    "MonitoringSettings",
    "ServingSettings",
    "ValidationSettings",
    "DataSettings",
    "RequestLogSettings",
    "get_settings",
    "telemetry_env",
    "apply_telemetry_off",
]

DEFAULT_SECRET = "local-only-not-a-secret"  # noqa: S105 - refused outside the local profile


class ValidationSettings(BaseModel):
    """Thresholds of the Great Expectations gate."""

    max_customer_null_share: float = Field(0.35, description="Raw rows may lack a customer id up to this share.")
    max_description_null_share: float = Field(
        0.01, description="Raw rows may lack a description up to this share (real files have a few, all of them "
        "lines cleaning drops).")
    max_row_count_change: float = Field(
        0.5, description="A new snapshot may differ from the current one in rows by at most this fraction."
    )
    freshness_days: int = Field(14, description="The newest invoice must be at most this many days before as-of.")
    max_history_days: int = Field(3 * 366, description="The oldest invoice may be at most this old.")
    max_abs_quantity: int = Field(100_000, description="Largest plausible absolute quantity on one line.")
    max_price: float = Field(50_000.0, description="Largest plausible unit price.")
    negative_price_mostly: float = Field(
        0.9999, description="Share of raw rows that must have a non-negative price (bad-debt lines exist)."
    )


class DataSettings(BaseModel):
    """The data steps (snapshot, gate, cleaning): DuckDB over the delivery's files, out of core."""

    memory_budget_mb: int = Field(2_048, ge=256, description="Most memory DuckDB holds for one data step; larger "
                                  "work spills to the step's temporary folder (the chart's task-pod memory limit "
                                  "follows this).")
    threads: int = Field(0, ge=0, description="DuckDB threads of one data step (0: one per core).")

    # The interpreter around the budget: Python, pandas, Great Expectations, Feast (a 2,048 MB budget peaked at
    # 2.4 GB in the gate and 1.5 GB in the features step at 10.5M lines: python -m benchmarks --only data)
    POD_HEADROOM_MB: ClassVar[int] = 1_024

    @property
    def reader_mb(self) -> int:
        """DuckDB's share of the budget in a step that keeps what it reads in pandas (the features step, the
        trainings): a quarter, the rest for the frames."""
        return max(64, self.memory_budget_mb // 4)

    @property
    def pod_memory_mb(self) -> int:
        """The memory limit a data step's pod gets: the budget plus the interpreter's headroom."""
        return self.memory_budget_mb + self.POD_HEADROOM_MB


class ServingSettings(BaseModel):
    """The inference services (``zm-serve``, ``make serve``)."""

    host: str = Field("127.0.0.1", description="Bind address: loopback locally, 0.0.0.0 in a pod.")
    ports: dict[str, int] = Field(
        default_factory=lambda: {name: e.port for name, e in catalog.ENTRIES.items()},
        description="HTTP port per model family (one process each; default: the catalog's).",
    )
    cache_size: int = Field(10_000, ge=0, description="Cached answers per process (per-row keys, per version).")
    max_batch: int = Field(1_000, ge=1, description="Most rows (instances) in one request.")
    batching: bool = Field(True, description="Answer the rows of concurrent requests in one model call "
                           "(segmentation, recommendation; at most max_batch rows a call).")
    batch_wait_turns: int = Field(4, ge=0, le=64, description="A model call waits while rows keep arriving, at "
                                  "most this many pairs of event-loop turns (0: at once).")
    max_body_bytes: int = Field(1_048_576, ge=1_024, description="Larger request bodies get 413.")
    feature_timeout_ms: float = Field(50.0, gt=0, description="Online-store lookups slower than this degrade.")
    feature_cache_size: int = Field(100_000, ge=0, description="Customers whose online features a process keeps "
                                    "(LRU; 0: read the store for every request).")
    feature_cache_seconds: float = Field(300.0, gt=0, description="Cached online features at most this old; all "
                                         "dropped when the view is materialized again (seen every poll_seconds).")
    ranking_table_mb: int = Field(64, ge=0, description="product-recommendation: at load, rank every known "
                                  "customer's top 100 into a table of at most this size and answer from it "
                                  "(0, or a larger table: score the factors per request).")
    poll_seconds: float = Field(10.0, ge=0, description="How often to look for a new version behind the alias.")
    shadow_alias: str | None = Field(None, description="Mirror production's answered requests to the version "
                                     "behind this alias (e.g. staging), off the request path, and compare the "
                                     "answers (zm_shadow_* metrics, the shadow log); None: off.")
    shadow_url: str = Field("", description="A shadow predictor (another predictor of this family, serving the "
                            "candidate) that gets the copies instead and answers and compares them there: production "
                            "only queues and sends them, in one request every 10 ms, with auth.client_key; empty: "
                            "the copies go to shadow_alias's version in this process.")
    shadow_share: float = Field(1.0, ge=0, le=1, description="Share of production's requests mirrored.")
    shadow_queue: int = Field(256, ge=1, description="Mirrored requests waiting for the shadow version at most; more "
                              "are dropped (counted), never delaying production.")
    gc_freeze: bool = Field(True, description="After a version loads, collect once and move every object alive then "
                            "(libraries, the model, its tables) out of the garbage collector's reach (gc.freeze), so "
                            "its full collections scan only what requests allocate: no pause of 100+ ms under load.")
    version_aliases: list[str] = Field(["previous-production", "staging"], description="Versions behind these "
                                       "aliases are served too, on their versioned paths only "
                                       "(/v2/models/NAME/versions/V/infer); [] serves the alias's version alone.")
    drain_seconds: float = Field(0.0, ge=0, description="After SIGTERM: readiness false, then wait this long.")
    grace_seconds: int = Field(20, ge=0, description="Then at most this long for requests in flight.")
    keep_alive_seconds: int = Field(65, ge=1, description="HTTP keep-alive timeout.")
    body_timeout_seconds: float = Field(10.0, gt=0, description="A request body not received within this long: 408, "
                                        "and the connection is closed (slow or half-sent bodies).")
    max_connections: int = Field(1_000, ge=1, description="Concurrent connections and requests a process accepts; "
                                 "beyond it 503 at once.")
    tls_cert_file: Path | None = Field(None, description="PEM certificate (with its chain): the predictor answers "
                                       "HTTPS only (in the k8s profile cert-manager's Secret, mounted).")
    tls_key_file: Path | None = Field(None, description="The certificate's PEM private key.")
    repository_api: bool = Field(False, description="KServe's model repository API (/v2/repository: load, unload); "
                                 "off, a pod serves the version the rollout gave it.")
    instrument: bool = Field(True, description="Export our Prometheus metrics (off only to measure their cost).")
    direct_json: bool = Field(True, description="Answer plain JSON predictions in the edge, without kserve's decoders "
                              "(off: every request through kserve's handlers; the contract test compares both).")
    wrappers: list[str] = Field([], description="module:function names called with the served model before it "
                                "loads, to change how it answers: the rollout drills' faults (delivery.faults). "
                                "Empty outside the drills.")


class AuthSettings(BaseModel):
    """Who may call the predictors: API keys stored hashed, with scopes (zmlops.auth)."""

    required: bool = Field(True, description="Every route but the health and readiness probes needs a key.")
    api_keys: SecretStr | None = Field(None, description="The keys a predictor accepts: a JSON list of "
                                       "{name, sha256, scopes} (a Secret in k8s; locally created under "
                                       "ZM_HOME/secrets). Two entries during a rotation.")
    client_key: SecretStr | None = Field(None, description="This process's key as a client of the predictors "
                                         "(a Secret in k8s; locally ZM_HOME/secrets/client-key).")


class RequestLogSettings(BaseModel):
    """The predictors' request log: batches shipped to the object store (inference_services.request_log)."""

    flush_seconds: float = Field(10.0, gt=0, description="A batch is written at most this many seconds after its "
                                 "first record.")
    batch_records: int = Field(2_000, ge=1, description="...or as soon as it holds this many records.")
    max_buffer_mb: float = Field(32.0, gt=0, description="Most unwritten log data a process keeps while the store "
                                 "is down; above it the oldest records are dropped (counted, never blocking).")
    retention_days: int = Field(30, ge=1, description="Request-log days older than this are deleted by the "
                                "monitoring DAG.")
    keep_request_ids: bool = Field(False, description="Log the client's x-request-id and V2 id as sent; off (the "
                                   "default): their keyed hash (governance.pseudonyms.pseudonymise_text), since a "
                                   "client may put a customer's id in them.")
    keep_features: bool = Field(False, description="Log each row's model inputs (segmentation's behaviour features); "
                                "off (the default): not logged, as no monitoring job reads them.")


class RolloutSettings(BaseModel):
    """The canary plan and the limits its analysis judges a candidate by (delivery)."""

    steps: tuple[int, ...] = Field((10, 50, 100), description="Candidate traffic percent, step by step.")
    window_seconds: float = Field(60.0, gt=0, description="Length of one analysis window.")
    checks_per_step: int = Field(2, ge=1, description="Passed windows a step needs before the next step.")
    failed_checks: int = Field(2, ge=1, description="Failed windows in a row that roll back.")
    min_requests: int = Field(20, ge=1, description="Fewest candidate requests in a window to judge it.")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Most 5xx share a candidate may answer with.")
    error_rate_margin: float = Field(0.005, ge=0, description="...and at most this much above the stable version.")
    max_p99_seconds: float = Field(0.25, gt=0, description="Absolute p99 limit of the candidate.")
    max_p99_ratio: float = Field(2.0, gt=1, description="Candidate p99 at most this multiple of the stable p99...")
    p99_floor_seconds: float = Field(0.001, ge=0, description="...when the candidate p99 is above this.")
    latency_alpha: float = Field(0.001, gt=0, lt=1, description="A p99 limit fails a window when the candidate's "
                                 "requests above it are less likely than this for a version whose p99 is at the "
                                 "limit (one-sided binomial test against 1%).")
    max_quality_change: float = Field(0.5, gt=0, description="Forecasts: most relative change of mean units.")
    ready_timeout_seconds: float = Field(120.0, gt=0, description="A candidate not ready by then gets no traffic.")
    check_interval_ms: int = Field(200, ge=50, description="HAProxy health-check interval of each server slot.")
    proxy_retries: int = Field(1, ge=0, description="HAProxy retries of a request whose server failed under it.")
    proxy_server_timeout_seconds: int = Field(30, ge=1, description="HAProxy timeout waiting for a server.")
    haproxy_binary: str = Field("haproxy", description="HAProxy executable (Debian package).")
    serve_command: str | None = Field(None, description="zm-serve command line (default: .venvs/serving/bin).")
    canary: bool = Field(True, description="k8s profile: run the plan on the InferenceServices (the chart's "
                         "rollout.enabled); false: the predictors follow the production alias and the deploy step "
                         "waits until every replica Prometheus scrapes serves the new version.")
    namespace: str = Field("mlops", description="Kubernetes namespace of the InferenceServices (k8s profile).")
    prometheus_url: str = Field("http://prometheus-operated.monitoring.svc:9090",
                                description="Prometheus the k8s analysis queries.")
    k8s_poll_seconds: float = Field(2.0, gt=0, description="How often the k8s backend polls a new revision.")

    @model_validator(mode="after")
    def _plan_ends_at_100(self) -> RolloutSettings:
        if not self.steps or self.steps[-1] != 100 or any(not 0 < p <= 100 for p in self.steps) \
                or list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"rollout.steps must rise strictly and end at 100, got {list(self.steps)}")
        return self


class MonitoringSettings(BaseModel):
    """Thresholds of the monitoring DAG's retrain decisions."""

    sample_rows: int = Field(
        5_000, ge=100, description="Rows per side given to Evidently; above, each column becomes that many quantiles."
    )
    workspace_url: str | None = Field(None, description="The analysts' Evidently workspace (one project per model "
                                      "family, a snapshot per check; `evidently ui` serves it): a folder or an fsspec "
                                      "URL; default <object store>/evidently (ZM_HOME/evidently locally).")
    report_retention_days: int = Field(90, ge=1, description="Check reports (Evidently HTML, summaries) older than "
                                       "this are deleted by the monitoring DAG; each family's newest stays.")
    workspace_retention_days: int = Field(
        730, ge=7, description="Snapshots of the analysts' workspace whose data week is this much older than their "
        "project's newest are deleted by the monitoring DAG (the panels' history: two years of weekly points).")
    drift_share: float = Field(0.5, gt=0, le=1, description="Retrain when this share of monitored columns drifts.")
    segment_share_shift: float = Field(0.05, gt=0, description="Retrain when a segment's share moves this much.")
    new_product_share: float = Field(0.10, gt=0, description="Retrain when unseen products sell this share.")
    forecast_wape_increase: float = Field(
        0.05, gt=0, description="Retrain when realised WAPE exceeds the backtest WAPE by this much."
    )
    pushgateway_url: str | None = Field(
        None, description="Prometheus Pushgateway the latest numbers and thresholds are pushed to (k8s profile)."
    )
    pushgateway_username: str = Field("monitoring", description="Basic-auth user the monitoring job pushes as.")
    pushgateway_password: SecretStr | None = Field(
        None, description="Its password (a secret reference in k8s); none: the Pushgateway asks for nothing.")


class AirflowSettings(BaseModel):
    """How tools outside Airflow (the alert receiver, the demo) reach its REST API."""

    api_url: str = Field("http://127.0.0.1:8080", description="Airflow API server base URL.")
    username: str = Field("admin", description="Account used for the REST API.")
    password: SecretStr | None = Field(None, description="Its password (a secret reference in k8s).")
    password_file: Path | None = Field(
        None, description="Simple auth manager's generated passwords file (local standalone Airflow)."
    )


class ApprovalSettings(BaseModel):
    """The model review board: a human decision between ``staging`` and the canary."""

    required: bool | None = Field(None, description="Whether a staged version waits for approval before it "
                                  "deploys; default: required in the k8s profile, not locally.")
    families: dict[str, bool] = Field(default_factory=dict, description="Per-family override of `required` "
                                      "(e.g. {\"customer-segmentation\": false}).")
    timeout_hours: float = Field(72.0, gt=0, description="Unanswered for this long: rejected.")
    role: str = Field("model-approvers", description="The Airflow role whose users may answer.")
    auto_approver: str | None = Field(None, description="Local profile only: approve every staged version as this "
                                      "named user (the demo's `demo-approver`), printed and audited.")


class PrivacySettings(BaseModel):
    """Customers' rights (governance.consent)."""

    consent_required: bool = Field(False, description="Opt-in: only customers with a recorded grant are profiled "
                                   "or get personalised answers. Off (the default, an opt-out regime): every "
                                   "customer but those whose latest record withdraws a purpose.")
    erasure_retrain_days: int = Field(30, ge=1, description="After an erasure, models trained on the customer's data "
                                      "must be retrained without them within this many days.")
    approval_required: bool | None = Field(None, description="Whether an erasure run of the zmlops_privacy DAG waits "
                                           "for the privacy board; default: required in the k8s profile, not "
                                           "locally (the command 'zm privacy erase' is the operator's own act).")
    approval_role: str = Field("privacy-officers", description="The Airflow role whose users may approve an "
                               "erasure run.")
    data_retention_days: int = Field(730, ge=1, description="Data versions created longer ago than this are retired "
                                     "by the monitoring DAG's retention task (their bytes deleted), but the current "
                                     "one and those a model version with an alias was trained on.")
    export_retention_days: int = Field(7, ge=1, description="Access bundles the zmlops_privacy DAG wrote to the "
                                       "object store are deleted after this many days.")


class TuningSettings(BaseModel):
    """Hyper-parameter tuning with Optuna (training/tuning.py): TPE over each family's search space, pruned on its
    backtest folds, one study per family and data version, warm-started from the family's previous study."""

    enabled: bool = Field(False, description="Tune every training (the training DAG's ``tune`` param and "
                          "``zm train --tune`` turn it on for one run).")
    budget_seconds: float = Field(600.0, gt=0, description="Wall-time budget of one family's study per training.")
    max_trials: int = Field(500, ge=1, description="...and at most this many trials.")
    startup_trials: int = Field(8, ge=1, description="Trials of random search before TPE models the space; no "
                                "trial is pruned before this many completed.")
    storage_url: SecretStr | None = Field(None, description="SQLAlchemy URL of Optuna's study storage; default the "
                                          "state database (SQLite locally, PostgreSQL in k8s).")


class Settings(BaseSettings):
    """Settings of one deployment of the stack."""

    model_config = SettingsConfigDict(
        env_prefix="ZM_", env_nested_delimiter="__", env_file=".env", extra="ignore", frozen=True
    )

    profile: Literal["local", "k8s"] = "local"
    home: Path = Field(Path(".zm"), description="Root of all embedded state (local profile).")
    seed: int = 42

    # data
    data_registry_dir: Path | None = Field(None, description="Git+DVC repository holding data versions (its "
                                           "working copy; in k8s a clone of data_registry_remote).")
    data_registry_remote: SecretStr | None = Field(None, description="Git remote of the data registry (k8s: any git "
                                                   "server; versions and verdicts are pushed there).")
    dvc_remote_url: str | None = Field(None, description="DVC remote; a local folder by default, s3:// in k8s.")
    real_data_path: Path = Path("../shared/data/online_retail_ii/online_retail_II_2009_2010.parquet")
    object_store_url: str | None = Field(None, description="Object store of every file the stack keeps (reports, "
                                         "request logs, feature sources, clean tables): s3://bucket/prefix in k8s; "
                                         "by default ZM_HOME itself (zmlops.stores).")
    state_db_url: SecretStr | None = Field(None, description="SQLAlchemy URL of the state database (incidents, "
                                           "the audit trail, deployments); default sqlite under ZM_HOME, "
                                           "PostgreSQL in k8s.")

    # tracking and features
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_dir: Path | None = Field(None, description="Artifact root of a local tracking store.")
    feast_repo_path: Path | None = Field(None, description="Feast declarations; the installed feature_repo package.")
    feast_dir: Path | None = Field(None, description="Runtime Feast repo path: sources, registry, online store.")
    feast_registry: str | None = Field(None, description="Feast registry (a file locally, a SQL URL in k8s).")
    feast_redis_url: SecretStr | None = Field(None, description="Redis connection string of the k8s online store.")

    # governance
    pseudonymisation_key: SecretStr = SecretStr(DEFAULT_SECRET)

    validation: ValidationSettings = ValidationSettings()
    data: DataSettings = DataSettings()
    serving: ServingSettings = ServingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    airflow: AirflowSettings = AirflowSettings()
    rollout: RolloutSettings = RolloutSettings()
    request_log: RequestLogSettings = RequestLogSettings()
    auth: AuthSettings = AuthSettings()
    approval: ApprovalSettings = ApprovalSettings()
    privacy: PrivacySettings = PrivacySettings()
    tuning: TuningSettings = TuningSettings()

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.profile != "local" and self.approval.auto_approver:
            raise ValueError("ZM_APPROVAL__AUTO_APPROVER is for the local profile only (the demo)")
        return self

    def snapshot(self) -> dict[str, Any]:
        """These settings as JSON, secrets masked (``SecretStr`` fields, and passwords inside URLs): what the
        audit trail records at each workload's start."""
        import re

        def mask(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: mask(v) for k, v in value.items()}
            if isinstance(value, list):
                return [mask(v) for v in value]
            return re.sub(r"(//[^/:@\s]+:)[^@/\s]+@", r"\1***@", value) if isinstance(value, str) else value

        return dict(mask(self.model_dump(mode="json")))

    def approval_required(self, family: str) -> bool:
        """Whether a staged version of ``family`` waits for the review board."""
        default = self.profile == "k8s" if self.approval.required is None else self.approval.required
        return self.approval.families.get(family, default)

    def privacy_approval_required(self) -> bool:
        """Whether an erasure run of the privacy DAG waits for the privacy board."""
        return self.profile == "k8s" if self.privacy.approval_required is None else self.privacy.approval_required

    def _k8s_needs(self, value: str | None, variable: str) -> str | None:
        """In the k8s profile a state location is never left to its local default (a pod's own disk): the
        workload that reaches for an unset one stops with the variable's name."""
        if value is None and self.profile == "k8s":
            raise RuntimeError(f"the k8s profile keeps no state on a pod's disk: set {variable}")
        return value

    # Derived locations: explicit values win, otherwise everything lives under ``home`` (the local profile; in the
    # k8s profile every one of these that is state must be set, see _k8s_needs).
    @property
    def registry_dir(self) -> Path:
        return (self.data_registry_dir or self.home / "data-registry").resolve()

    @property
    def remote_url(self) -> str:
        return self._k8s_needs(self.dvc_remote_url, "ZM_DVC_REMOTE_URL") or str((self.home / "dvc-remote").resolve())

    @property
    def work(self) -> Path:
        """Derived tables per data version (object store keys ``work/<version>/...``; cached here)."""
        return (self.home / "work").resolve()

    @property
    def reports(self) -> Path:
        """Validation Data Docs, monitoring reports, model cards (keys ``reports/...``; cached here)."""
        return (self.home / "reports").resolve()

    @property
    def feast_home(self) -> Path:
        return (self.feast_dir or self.home / "feast").resolve()

    @property
    def feature_repo(self) -> Path:
        if self.feast_repo_path is not None:
            return self.feast_repo_path.resolve()
        spec = importlib.util.find_spec("feature_repo")  # locate without importing feast
        if spec is None or spec.origin is None:
            raise RuntimeError("the feature_repo package is not installed; set ZM_FEAST_REPO_PATH")
        return Path(spec.origin).resolve().parent

    @property
    def state_db(self) -> str:
        url = self.state_db_url.get_secret_value() if self.state_db_url is not None else None
        return self._k8s_needs(url, "ZM_STATE_DB_URL") or f"sqlite:///{(self.home / 'state.db').resolve()}"

    @property
    def tuning_storage(self) -> str:
        url = self.tuning.storage_url
        return url.get_secret_value() if url is not None else self.state_db

    @property
    def registry_remote(self) -> str | None:
        return self._k8s_needs(self.data_registry_remote.get_secret_value() if self.data_registry_remote else None,
                               "ZM_DATA_REGISTRY_REMOTE")

    @property
    def object_store(self) -> str | None:
        """The object store's URL; None: ZM_HOME itself (the local profile)."""
        return self._k8s_needs(self.object_store_url, "ZM_OBJECT_STORE_URL")

    @property
    def pseudonym_key(self) -> bytes:
        """The key customer ids are pseudonymised with. Outside the local profile the built-in default is refused
        where a key is used (a workload that never pseudonymises, the analysts' UI, is not given one)."""
        key = self.pseudonymisation_key.get_secret_value()
        if self.profile != "local" and key == DEFAULT_SECRET:
            raise RuntimeError("ZM_PSEUDONYMISATION_KEY must be set outside the local profile")
        return key.encode()

    @property
    def evidently_workspace(self) -> str:
        """Where the monitoring checks' snapshots go for the analysts' UI (:mod:`monitoring.workspace`)."""
        if self.monitoring.workspace_url:
            return self.monitoring.workspace_url
        store = self.object_store
        return f"{store.rstrip('/')}/evidently" if store else str((self.home / "evidently").resolve())

    @property
    def feast_registry_url(self) -> str:
        return self._k8s_needs(self.feast_registry, "ZM_FEAST_REGISTRY") or str(self.feast_home / "registry.db")

    @property
    def feast_redis(self) -> str:
        url = self.feast_redis_url.get_secret_value() if self.feast_redis_url is not None else None
        return self._k8s_needs(url, "ZM_FEAST_REDIS_URL") or ""

    @property
    def artifact_root(self) -> Path:
        return (self.mlflow_artifact_dir or self.home / "mlartifacts").resolve()

    @property
    def tracking_uri(self) -> str:
        return self._k8s_needs(self.mlflow_tracking_uri, "ZM_MLFLOW_TRACKING_URI") \
            or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated once. As the first call of every step, server and command, it also
    takes typeguard off Feast's classes before Feast is imported (:mod:`zmlops.libraries`: 3 CPU-s a process)."""
    from zmlops.libraries import feast_without_type_checks

    feast_without_type_checks()
    return Settings()


def telemetry_env() -> dict[str, str]:
    """Environment that turns off telemetry and usage statistics of every library in the stack."""
    return {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "False",
        "FEAST_USAGE": "False",
        "SCARF_ANALYTICS": "false",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "OPENBLAS_NUM_THREADS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_LOGGING_LEVEL": "WARNING",  # no INFO lines per logged model
    }


def apply_telemetry_off() -> None:
    """Set :func:`telemetry_env` in this process (entry points call it; importing does not)."""
    for key, value in telemetry_env().items():
        os.environ.setdefault(key, value)
