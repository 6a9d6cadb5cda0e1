"""``python -m demos``: the main job on the embedded local stack, or Airflow standalone over ZM_HOME."""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demos", description="The whole loop on the embedded local stack, through Airflow "
        "(make demo), or Airflow standalone over ZM_HOME's state (make airflow).")
    parser.add_argument("--no-airflow", action="store_true",
                        help="quicker path: data versions and the three models trained in-process, no loop")
    parser.add_argument("--airflow-only", action="store_true",
                        help="start Airflow standalone on this ZM_HOME (UI and API) until Ctrl-C")
    args = parser.parse_args(argv)
    if args.airflow_only:
        from demos.loop_demo import airflow_standalone
        from zmlops.console import console
        from zmlops.settings import get_settings

        settings = get_settings()
        with airflow_standalone(settings):
            console.print(f"Airflow: {settings.airflow.api_url} (user {settings.airflow.username}, password in "
                          f"{settings.home.resolve() / 'airflow' / 'passwords.json'}); Ctrl-C stops it")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0
    from demos.demo import run_demo

    return run_demo(airflow=not args.no_airflow)


if __name__ == "__main__":
    sys.exit(main())
