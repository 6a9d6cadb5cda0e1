"""A finished training task leaves nothing behind that its process's exit has to wait for.

Airflow forks each task from its supervisor and ends it with ``os._exit`` after the exit handlers registered
since the fork. multiprocessing's handler joins every live child process, and joblib's loky workers (the
forecaster fits its series on them) stay alive for 300 s after their last job: a task that left them would
hang after reporting success until Airflow killed it (``task_success_overtime``, 20 s per forecaster run).
"""

from __future__ import annotations

import multiprocessing

from joblib import Parallel, delayed

from training import pipeline


def _workers() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("LokyProcess")]


def test_the_train_step_stops_the_worker_pool_it_used() -> None:
    assert Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
    assert _workers(), "joblib keeps its workers after the jobs: the situation the train step must clean up"
    pipeline._release_worker_pool()
    assert _workers() == []
    pipeline._release_worker_pool()  # nothing to stop: no error, and no pool started by asking
    assert _workers() == []
