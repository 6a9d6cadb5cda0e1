"""What Feast's two import costs (zmlops/libraries.py) take from a process, and what its switches leave: the figures
behind docs/architecture.md's "What Feast costs a process".

    python -m benchmarks.probe_imports

Not part of ``make bench``. Each case runs in a fresh interpreter, three times, interleaved; prints the best and every
run in CPU-seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = """
import resource, sys
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
if sys.argv[1] == "import":  # import feast, with or without the switch
    from zmlops import libraries
    if sys.argv[2] == "on":
        libraries.feast_without_type_checks()
    start = cpu()
    import feast
    print(f"{cpu() - start:.2f}")
else:  # a registry reader, as most task pods are: settings, then one alias read over REST
    import mlflow
    from mlflow.exceptions import MlflowException
    from zmlops.settings import Settings, get_settings
    if sys.argv[2] == "on":
        from training import tracking
        client = tracking.client(get_settings())
    else:
        client = mlflow.MlflowClient(tracking_uri=Settings().tracking_uri)
    try:
        client.get_model_version_by_alias("demand-forecast", "production")
    except MlflowException:
        pass  # nothing listens: the request's imports are what is measured
    print(f"{cpu():.2f}")
"""

# A registry nobody answers at once (a closed port, no retries): MLflow loads its header providers before connecting.
_NOBODY = {"ZM_MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}


def main() -> None:
    """Print what ``import feast`` and a registry-reading process cost in fresh processes, without and with the
    switches (best of 3 each, interleaved)."""
    cases = {("import", "off"): "import feast, with typeguard's instrumentation",
             ("import", "on"): "import feast, with feast_without_type_checks()",
             ("registry", "off"): "a registry reader's whole process, MLflow's client as it ships",
             ("registry", "on"): "a registry reader's whole process, get_settings() and tracking.client()"}
    runs: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    for _ in range(3):
        for case in cases:
            done = subprocess.run([sys.executable, "-c", _PROBE, *case], capture_output=True, text=True, check=True,
                                  env={**os.environ, **_NOBODY})
            runs[case].append(float(done.stdout.split()[-1]))
    for case, label in cases.items():
        print(f"{label}: {min(runs[case]):.2f} CPU-s (best of 3; {', '.join(f'{r:.2f}' for r in runs[case])})")


if __name__ == "__main__":
    main()
