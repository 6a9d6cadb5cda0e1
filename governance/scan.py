"""Where is a customer? ``zm privacy scan CUSTOMER_ID`` searches every store the stack writes for the customer's id
and their pseudonym, and says where each hit is.

The same code searches the local profile's folders and the k8s profile's buckets and databases (fsspec, SQLAlchemy,
Feast and MLflow clients, as the pipelines reach them):

- the object store (``work/``: raw and clean tables of each data version, ``feast/``: feature sources,
  ``requests/``: the request log, ``events/``: the outcome events, ``reports/``: Data Docs, monitoring reports,
  model cards, ``privacy/``: access bundles the privacy DAG wrote, ``batch/``: the score task's answers);
- the DVC remote (content-addressed objects: every data version's bytes) and the data registry's local cache;
- the state database (every table: the audit trail, the consent register, incidents, deployments);
- the online feature store (SQLite locally, Redis in the k8s profile), read through Feast;
- every registered model version's artifacts in MLflow (the recommender's customer index inside its estimator,
  input examples, model cards) and every run's parameters and tags (MLflow's database, through its server);
- the local profile's Airflow task logs and metadata database (run parameters, XCom); in a cluster, logs go to its
  log collector and the metadata database is the Airflow chart's, neither searched here.

Tables (Parquet, Excel) are searched in their customer columns; text files for the pseudonym, for the audit
trail's keyed hash of the customer (:func:`governance.pseudonyms.subject`: after an erasure it should be the only
hit left, in the audit trail and the erasure register) and for the id as a whole number (a number that happens to
equal the id is reported too: read the hit). Other binary files are listed as not searched.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zmlops.settings import Settings

__all__ = ["Hit", "scan", "as_dicts", "OBJECT_PREFIXES"]

OBJECT_PREFIXES = ("work", "feast", "requests", "events", "reports", "privacy", "batch")
CUSTOMER_COLUMNS = ("customer_id", "Customer ID", "CustomerID", "customer")
TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".html", ".txt", ".csv", ".yaml", ".yml", ".log")


@dataclass(frozen=True)
class Hit:
    store: str  # object store, DVC remote, state database, online store, MLflow, logs
    where: str  # key, path, table or model version
    what: str  # e.g. "12 rows (customer_id)", "2 mentions of the pseudonym"


@dataclass
class _Needle:
    customer_id: int
    pseudonym: str
    subject: str  # the audit trail's keyed hash: expected in the audit trail and the erasure register

    def __post_init__(self) -> None:
        self.number = re.compile(rf"(?<![\w.]){self.customer_id}(?![\w]|\.\d)".encode())

    def table(self, frame: Any) -> list[str]:
        found = []
        for column in frame.columns:
            if str(column) not in CUSTOMER_COLUMNS:
                continue
            values = frame[column]
            n = int((values == self.customer_id).sum()) if values.dtype.kind in "iuf" else \
                int(values.astype(str).isin([self.pseudonym, str(self.customer_id)]).sum())
            if n:
                found.append(f"{n} rows ({column})")
        return found

    def text(self, data: bytes) -> list[str]:
        found = []
        if (n := data.count(self.pseudonym.encode())):
            found.append(f"{n} mentions of the pseudonym")
        if (n := data.count(self.subject.encode())):
            found.append(f"{n} mentions of the audit subject hash")
        if (n := len(self.number.findall(data))):
            found.append(f"{n} mentions of the id as a number")
        return found


def _sniff(name: str, data: bytes, needle: _Needle) -> list[str] | None:
    """What one file holds of the customer; None when it is a kind this scanner does not read."""
    import pandas as pd

    if data[:4] == b"PAR1":
        return needle.table(pd.read_parquet(io.BytesIO(data)))
    if data[:4] == b"PK\x03\x04" and b"xl/" in data[:4096]:  # an Excel workbook
        sheets = pd.read_excel(io.BytesIO(data), sheet_name=None)
        return [f for frame in sheets.values() for f in needle.table(frame)]
    if name.endswith(TEXT_SUFFIXES) or (b"\x00" not in data[:4096] and len(data) < 64 << 20):
        return needle.text(data)
    return None


def _files(store: str, names: Iterator[tuple[str, Callable[[], bytes]]], needle: _Needle,
           unread: list[str]) -> list[Hit]:
    hits = []
    for name, read in names:
        found = _sniff(name, read(), needle)
        if found is None:
            unread.append(f"{store}: {name}")
        hits += [Hit(store, name, f) for f in found or []]
    return hits


def _fsspec_files(url: str) -> Iterator[tuple[str, Callable[[], bytes]]]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        return
    for path in sorted(fs.find(root)):
        if fs.isdir(path):  # a link to a folder (Airflow's logs/latest)
            continue
        yield path[len(root.rstrip("/")) + 1:], (lambda p=path: fs.cat_file(p))


def _object_store(settings: Settings, needle: _Needle, unread: list[str]) -> list[Hit]:
    from zmlops.stores import object_store

    store = object_store(settings)
    names = ((key, (lambda k=key: store.get(k) or b"")) for prefix in OBJECT_PREFIXES for key in store.keys(prefix))
    return _files("object store", names, needle, unread)


def _dvc(settings: Settings, needle: _Needle, unread: list[str]) -> list[Hit]:
    hits = _files("DVC remote", _fsspec_files(settings.remote_url), needle, unread)
    cache = settings.registry_dir / ".dvc" / "cache"
    if cache.exists():
        hits += _files("DVC cache", _fsspec_files(str(cache)), needle, unread)
    return hits


def _state_db(settings: Settings, needle: _Needle) -> list[Hit]:
    from zmlops.statedb import engine

    return _database("state database", engine(settings), needle)


def _airflow_home(settings: Settings) -> Path | None:
    """The local profile's Airflow home (``AIRFLOW_HOME``, by default ``ZM_HOME/airflow``); None in a cluster."""
    import os

    return None if settings.profile != "local" else Path(os.environ.get("AIRFLOW_HOME")
                                                         or settings.home.resolve() / "airflow")


def _airflow_db(settings: Settings, needle: _Needle) -> list[Hit]:
    """The local profile's Airflow metadata database (run parameters, XCom, approval answers); a cluster's is the
    Airflow chart's PostgreSQL, which the pipelines do not reach."""
    from sqlalchemy import create_engine

    home = _airflow_home(settings)
    if home is None or not (home / "airflow.db").exists():
        return []
    return _database("Airflow database", create_engine(f"sqlite:///{home / 'airflow.db'}"), needle)


def _database(store: str, eng: Any, needle: _Needle) -> list[Hit]:
    from sqlalchemy import MetaData, select

    meta = MetaData()
    meta.reflect(eng)
    hits = []
    with eng.connect() as conn:
        for table in meta.sorted_tables:
            counts: dict[str, int] = {}
            for row in conn.execute(select(table)).mappings():
                text = json.dumps(dict(row), default=str).encode()
                for f in needle.text(text):
                    kind = f.split(" ", 1)[1]
                    counts[kind] = counts.get(kind, 0) + 1
            hits += [Hit(store, table.name, f"{n} rows with {kind.removeprefix('mentions of ')}")
                     for kind, n in counts.items()]
    return hits


def _online(settings: Settings, needle: _Needle) -> list[Hit]:
    from governance.access import online_profile

    profile = online_profile(settings, needle.customer_id) or {}
    held = [n for n, v in profile.items() if n != "customer_id" and v is not None]
    return [Hit("online store", "customer_profile", f"{len(held)} features")] if held else []


def _mlflow(settings: Settings, needle: _Needle, unread: list[str]) -> list[Hit]:
    import joblib
    import mlflow

    from training import tracking
    from zmlops.catalog import FAMILIES

    client = tracking.client(settings)
    hits = []
    for family in FAMILIES:
        for mv in client.search_model_versions(f"name = '{family}'"):
            where = f"{family} v{mv.version}"
            with tempfile.TemporaryDirectory(prefix="zm-scan-") as tmp:  # the run's files and the model's
                local = Path(tmp)
                mlflow.artifacts.download_artifacts(run_id=mv.run_id, dst_path=str(local / "run"))
                mlflow.artifacts.download_artifacts(f"models:/{family}/{mv.version}", dst_path=str(local / "model"))
                for path in sorted(p for p in local.rglob("*") if p.is_file()):
                    name = f"{where}: {path.relative_to(local)}"
                    if path.name == "estimator.joblib":
                        held = _estimator(joblib.load(path), needle)
                        hits += [Hit("MLflow", name, f) for f in held]
                        continue
                    if path.suffix in (".pkl", ".joblib"):
                        unread.append(f"MLflow: {name}")
                        continue
                    hits += [Hit("MLflow", name, f) for f in needle.text(path.read_bytes())]
    return hits


def _mlflow_runs(settings: Settings, needle: _Needle) -> list[Hit]:
    """Every run's parameters, tags and metric names, read through the tracking server (its database)."""
    from mlflow.entities import ViewType

    from training import tracking

    client = tracking.client(settings)
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    hits = []
    for run in client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=50_000) if experiments else []:
        text = json.dumps({"params": run.data.params, "tags": run.data.tags, "metrics": sorted(run.data.metrics),
                           "name": run.info.run_name}).encode()
        hits += [Hit("MLflow", f"run {run.info.run_id} (parameters, tags)", f) for f in needle.text(text)]
    return hits


def _estimator(estimator: Any, needle: _Needle) -> list[str]:
    """A fitted model's own index of customers (the recommender's user factors and ranking rows follow it)."""
    import numpy as np

    customers = getattr(estimator, "customers_", None)
    if customers is not None and needle.customer_id in set(np.asarray(customers).tolist()):
        return ["the customer's row in the model (customers_: user factors, ranking table)"]
    return []


def _logs(settings: Settings, needle: _Needle, unread: list[str]) -> list[Hit]:
    home = _airflow_home(settings)
    if home is None or not (home / "logs").exists():
        return []
    logs = home / "logs"
    return _files("logs", _fsspec_files(str(logs)), needle, unread)


def scan(settings: Settings, customer_id: int) -> tuple[list[Hit], list[str]]:
    """Every hit of the customer's id or pseudonym, store by store; and the files not searched (binary kinds)."""
    from governance import consent

    needle = _Needle(int(customer_id), consent.pseudonym(settings, int(customer_id)),
                     consent.subject_hash(settings, int(customer_id)))
    unread: list[str] = []
    hits = (_object_store(settings, needle, unread) + _dvc(settings, needle, unread) + _state_db(settings, needle)
            + _online(settings, needle) + _mlflow(settings, needle, unread) + _mlflow_runs(settings, needle)
            + _logs(settings, needle, unread) + _airflow_db(settings, needle))
    return hits, unread


def as_dicts(hits: list[Hit]) -> list[dict[str, str]]:
    return [asdict(h) for h in hits]
