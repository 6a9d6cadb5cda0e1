"""Batch scoring: every family's answers for everyone, as a table planners and campaign tools read.

After a family's ``production`` version is deployed, the training DAG's ``score`` task asks that version what the
predictors would answer, for every request the family's ``batch_requests`` lists (every category's forecast, every
known customer's segment and top-N products), through the family's own pyfunc wrapper, part by part, and writes
the answers with the model version and the data version as Parquet to the object store:

    batch/<family>/<data version>/v<model version>.parquet   and   batch/<family>/latest.json

where the data version is the one whose published features the answers were computed from (the week they are
for); each row also carries the version the model was trained on.

Memory stays bounded by the part size, not by the number of customers: each part's answers go to the Parquet
writer before the next part is asked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from training.data.lake import write_frames
from zmlops.settings import Settings
from zmlops.stores import object_store

__all__ = ["score", "write_answers", "latest", "forget_version", "PREFIX"]

PREFIX = "batch"


def write_answers(ask: Callable[[pd.DataFrame], pd.DataFrame], requests: Iterator[pd.DataFrame], dest: Path,
                  stamp: dict[str, str], progress: Callable[[int, int], None] | None = None) -> int:
    """Ask ``ask`` each request frame in turn and append its answers, stamped with ``stamp``'s columns, to the
    Parquet file ``dest``; returns the rows written. ``progress(requests, answers)`` after each part."""
    counted = {"asked": 0, "rows": 0}

    def answers() -> Iterator[pd.DataFrame]:
        for request in requests:
            answered = ask(request).assign(**stamp)
            counted["asked"] += len(request)
            counted["rows"] += len(answered)
            yield answered
            if progress is not None:
                progress(counted["asked"], counted["rows"])

    try:
        return write_frames(dest, answers())
    except ValueError as nothing:
        raise ValueError("nothing to score: the family listed no requests") from nothing


def _key(family: str, data_version: str, model_version: str) -> str:
    return f"{PREFIX}/{family}/{data_version}/v{model_version}.parquet"


def score(settings: Settings, family: str, alias: str = "production") -> dict[str, Any]:
    """Score every request of ``family``'s ``batch_requests`` with the version behind ``alias``; the answers go to
    the object store (see the module docstring). Returns where, how many rows and how long it took, or why nothing
    was scored (no version behind the alias, a family without batch requests). Scoring the same model version on
    the same data version again returns the stored answers' marker."""
    from training import tracking
    from training.families import get_family
    from training.features.store import published_version

    definition = get_family(family)
    if definition.batch_requests is None:
        return {"family": family, "scored": False, "why": "the family lists no batch requests"}
    version = tracking.alias_version(settings, family, alias)
    if version is None:
        return {"family": family, "scored": False, "why": f"no {alias!r} version to score with"}
    trained_on = tracking.client(settings).get_model_version(family, version).tags.get("data_version") or "unknown"
    published = published_version(settings)
    data_version = str(published["data_version"]) if published else trained_on
    store = object_store(settings)
    previous = store.get(f"{PREFIX}/{family}/latest.json")
    if previous is not None:
        marker = json.loads(previous)
        if (marker["model_version"], marker["data_version"]) == (version, data_version):
            return {**marker, "scored": True, "reused": True}
    wrapper = definition.wrapper()
    wrapper.estimator = tracking.load_estimator(settings, family, version)
    key = _key(family, data_version, version)
    local = store.path(key)
    started = time.perf_counter()

    def report(asked: int, rows: int) -> None:
        print(f"{family} v{version}: {asked:,} requests answered, {rows:,} rows", flush=True)

    keys = list(definition.batch_keys)

    def ask(request: pd.DataFrame) -> pd.DataFrame:
        answers: pd.DataFrame = wrapper.predict(None, request.drop(columns=keys))
        return pd.concat([request[keys].reset_index(drop=True), answers], axis=1) if keys else answers

    requests = definition.batch_requests(settings, wrapper.estimator, data_version)
    stamp = {"model_version": version, "data_version": data_version, "trained_on": trained_on}
    rows = write_answers(ask, requests, local, stamp, report)
    store.upload(key)
    marker = {"family": family, "scored": True, "model_version": version, "data_version": data_version,
              "trained_on": trained_on, "alias": alias,
              "key": key, "rows": rows, "seconds": round(time.perf_counter() - started, 2)}
    store.put(f"{PREFIX}/{family}/latest.json", json.dumps(marker, indent=2).encode())
    return marker


def latest(settings: Settings, family: str) -> pd.DataFrame:
    """The newest batch answers of ``family`` (what a planner's tool would read)."""
    raw = object_store(settings).get(f"{PREFIX}/{family}/latest.json")
    if raw is None:
        raise LookupError(f"{family} has not been batch-scored yet")
    found = object_store(settings).download(json.loads(raw)["key"])
    if found is None:
        raise LookupError(f"{family}'s batch answers are missing from the object store")
    return pd.read_parquet(found)


def forget_version(settings: Settings, data_version: str) -> int:
    """Delete every family's answers computed on ``data_version`` (a retired version: an erasure or the retention
    limit), and the ``latest`` marker that points at them; the next score task writes new ones. Returns how many
    families' answers went."""
    from zmlops.catalog import FAMILIES

    store = object_store(settings)
    gone = 0
    for family in FAMILIES:
        marker = store.get(f"{PREFIX}/{family}/latest.json")
        if marker is not None and json.loads(marker)["data_version"] == data_version:
            store.delete(f"{PREFIX}/{family}/latest.json")
        if store.keys(f"{PREFIX}/{family}/{data_version}/"):
            store.delete(f"{PREFIX}/{family}/{data_version}")
            gone += 1
    return gone
