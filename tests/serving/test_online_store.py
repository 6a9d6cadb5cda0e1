"""The Kubernetes profile's online store, for real: Feast with a SQL registry and Redis (Debian's redis-server).

The services read features through the same :class:`inference_services.features.OnlineFeatures` in both
profiles; locally it reads SQLite inline, in the cluster it awaits Feast's async Redis read. This runs
the second path against a real Redis server started here: the same answers as the local store, a
bounded wait when Redis hangs, an error when it is gone, and recovery.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.serving

FEATURES = ["frequency", "tenure_days", "basket_lines", "units_per_line", "unit_price"]


def _k8s_settings(home: Path, tmp: Path, port: int):  # type: ignore[no-untyped-def]
    from zmlops.settings import Settings

    # the published feature tables come from the served home's object store (a folder here, a bucket in a cluster)
    return Settings(profile="k8s", home=tmp, pseudonymisation_key="0123456789abcdef",
                    mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}", dvc_remote_url="s3://unused/remote",
                    feast_registry=f"sqlite:///{tmp / 'registry.sqlite'}", feast_redis_url=f"127.0.0.1:{port}",
                    object_store_url=f"file://{home}", state_db_url=f"sqlite:///{tmp / 'state.db'}",
                    data_registry_remote="git://unused/data-registry.git")


def test_redis_online_store_answers_like_the_local_one_and_degrades(
        redis: tuple[subprocess.Popen[bytes], int], home: Path, tmp_path: Path) -> None:
    import asyncio

    import pandas as pd

    from inference_services.features import FeatureLookupFailed, OnlineFeatures
    from training.features import store
    from zmlops.settings import Settings

    proc, port = redis
    k8s = _k8s_settings(home, tmp_path, port)
    store.apply_definitions(k8s)
    store.materialize(k8s, store.latest_window_end(k8s))

    ids = [int(c) for c in pd.read_parquet(home / "feast" / "sources" / "customer_features.parquet",
                                           columns=["customer_id"])["customer_id"].unique()[:20]]
    unknown = 10**12
    remote = OnlineFeatures(k8s, "customer_profile", FEATURES, timeout=0.2)
    local = OnlineFeatures(Settings(home=home), "customer_profile", FEATURES, timeout=0.2)

    loop = asyncio.new_event_loop()  # one loop, as in a server: Feast's async Redis client belongs to it

    def read(online: OnlineFeatures, batch: list[int]) -> list[list[float] | None]:
        return loop.run_until_complete(online.lookup(batch))

    try:
        got = read(remote, [*ids, unknown])
        assert remote.mode == "async"
        assert got[:-1] == read(local, ids) and local.mode == "inline"
        assert all(row is not None and len(row) == len(FEATURES) for row in got[:-1])
        assert got[-1] is None  # not in the store: the caller's cold start, not an error
        for _ in range(3):
            read(remote, ids[:2])
        assert remote.names == FEATURES  # Feast's Redis store appends to the list it is given: we pass a copy

        # the feature cache over Redis: Feast's SQL registry records each materialization the cache watches
        cached = OnlineFeatures(k8s, "customer_profile", FEATURES, timeout=0.2, cache_size=100, label="test")
        assert read(cached, ids) == got[:-1]
        assert not cached.watch()  # the first look takes note
        store.materialize(k8s, store.latest_window_end(k8s))
        assert cached.watch() and not cached.watch()
        assert read(cached, ids[:2]) == got[:2]

        proc.send_signal(signal.SIGSTOP)  # a store that accepts connections and never answers
        try:
            started = time.perf_counter()
            with pytest.raises(FeatureLookupFailed) as hung:
                read(remote, ids[:1])
            assert hung.value.reason == "timeout" and time.perf_counter() - started < 2.0
            assert read(cached, ids[:2]) == got[:2]  # what the cache holds is answered without the store
            with pytest.raises(FeatureLookupFailed) as partly:
                read(cached, [ids[5], ids[1]])
            assert partly.value.cached == {1: got[1]}  # the caller degrades the other one only
        finally:
            proc.send_signal(signal.SIGCONT)
        assert read(remote, ids[:1]) == got[:1]  # answering again
    finally:
        loop.close()


def test_cached_features_expire_after_feature_cache_seconds(home: Path) -> None:
    """A write outside materialization (a push) reaches cached customers after at most cache_seconds."""
    import asyncio

    import pandas as pd

    from inference_services.features import OnlineFeatures
    from tests.serving.conftest import write_profile
    from zmlops.settings import Settings

    ids = [int(c) for c in pd.read_parquet(home / "feast" / "sources" / "customer_features.parquet",
                                           columns=["customer_id"])["customer_id"].unique()[100:102]]
    ttl, now = 300.0, [0.0]
    online = OnlineFeatures(Settings(home=home), "customer_profile", FEATURES, 1.0, cache_size=10, cache_seconds=ttl,
                            timer=lambda: now[0])  # the cache's clock: moved by hand, no sleep
    loop = asyncio.new_event_loop()
    try:
        original, other = loop.run_until_complete(online.lookup(ids))
        assert original is not None and other is not None and original != other
        write_profile(home, ids[0], dict(zip(FEATURES, other, strict=True)))
        try:
            now[0] = ttl - 1
            assert loop.run_until_complete(online.lookup(ids[:1])) == [original]  # still the cached values
            now[0] = ttl + 1
            assert loop.run_until_complete(online.lookup(ids[:1])) == [other]  # expired: read again
        finally:
            write_profile(home, ids[0], dict(zip(FEATURES, original, strict=True)))
    finally:
        loop.close()
