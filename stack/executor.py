"""An Airflow executor that runs every task as a new process in a new, empty directory.

This is what the KubernetesExecutor does with a new pod per task, minus Kubernetes: the task's
process runs ``python -m airflow.sdk.execution_time.execute_workload --json-string <workload>`` (the
pod command the KubernetesExecutor renders) with the worker pods' environment, in a directory that
is created empty for the task and deleted when it ends (``delete_worker_pods``). Anything a task
leaves on its disk is gone for the next task, as on a cluster.

The environment comes from ``ZM_STACK_WORKER_ENV`` (a JSON file the harness writes from
``charts/airflow-values.yaml`` and the rendered ConfigMap and Secrets); task output goes to
``ZM_STACK_TASK_LOGS`` (what ``kubectl logs`` would show).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from airflow.executors.base_executor import BaseExecutor

__all__ = ["PodProcessExecutor"]


class PodProcessExecutor(BaseExecutor):
    """One process per task, each in a directory of its own that is deleted afterwards."""

    supports_callbacks = True

    def start(self) -> None:
        self.procs: dict[Any, tuple[subprocess.Popen[bytes], Path, Any]] = {}
        self.pods = Path(os.environ["ZM_STACK_PODS"])
        self.logs = Path(os.environ["ZM_STACK_TASK_LOGS"])
        self.env: dict[str, str] = json.loads(Path(os.environ["ZM_STACK_WORKER_ENV"]).read_text())

    def _process_workloads(self, workload_items: Any) -> None:
        for workload in workload_items:
            queues: tuple[dict[Any, Any], ...] = (self.queued_tasks, self.queued_callbacks)
            key = next(k for queue in queues for k, w in queue.items() if w is workload)
            for queue in queues:
                queue.pop(key, None)
            name = f"task-{uuid.uuid4().hex[:10]}"
            pod = self.pods / name
            (pod / "tmp").mkdir(parents=True)
            env = {k: v.replace("/opt/airflow", str(pod)) for k, v in self.env.items()}  # the pod's own disk
            env.update({"HOME": str(pod), "TMPDIR": str(pod / "tmp"), "AIRFLOW_HOME": str(pod), "ZM_STACK_POD": name})
            self.logs.mkdir(parents=True, exist_ok=True)
            log = (self.logs / f"{name}.log").open("wb")
            ti = getattr(workload, "ti", None)
            title = f"{ti.dag_id}.{ti.task_id}[{ti.map_index}] {ti.run_id}" if ti is not None else workload.display_name
            log.write(f"# {title}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "airflow.sdk.execution_time.execute_workload", "--json-string",
                 workload.model_dump_json()],
                cwd=pod, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            self.procs[key] = (proc, pod, workload)
            self.running.add(key)

    def sync(self) -> None:
        for key, (proc, pod, _workload) in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[key]
            shutil.rmtree(pod, ignore_errors=True)  # the pod is deleted: nothing on its disk survives
            if code == 0:
                self.success(key)
            else:
                self.fail(key)

    def end(self) -> None:
        for proc, _pod, _workload in self.procs.values():
            proc.wait()
        self.sync()

    def terminate(self) -> None:
        for proc, pod, _workload in self.procs.values():
            proc.kill()
            shutil.rmtree(pod, ignore_errors=True)

    def revoke_task(self, *, ti: Any) -> None:
        found = self.procs.pop(ti.key, None)
        if found is not None:
            found[0].kill()
            shutil.rmtree(found[1], ignore_errors=True)
        self.running.discard(ti.key)
