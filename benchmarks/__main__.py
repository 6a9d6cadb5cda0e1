"""``python -m benchmarks``: run the benchmarks and write the figures docs/benchmarks.md reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zmlops.catalog import FAMILIES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmarks: each figure a ratio against a baseline measured in the "
        "same session (docs/benchmarks.md).")
    parser.add_argument("--quick", action="store_true", help="small sizes (for tests)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file (default <reports>/bench.json)")
    parser.add_argument("--only", action="append", default=None,
                        choices=["simulator", "data", "batch", "training", "tuning", "serving", "shadow",
                                 "monitoring", "topology"],
                        help="run just this section and update it in --out (repeatable)")
    parser.add_argument("--model", action="append", choices=list(FAMILIES), default=None, dest="models",
                        help="serving and shadow sections: only this model family (repeatable; write to another "
                        "--out, the section is replaced)")
    parser.add_argument("--rows", action="append", type=int, default=None,
                        help="data section: only deliveries of about this many raw lines (repeatable; default 0.5M, "
                        "5M, 10M and 30M; write to another --out, the section is replaced)")
    args = parser.parse_args(argv)
    from benchmarks.bench import run_bench

    return run_bench(quick=args.quick, out=args.out, only=args.only, models=args.models, rows=args.rows)


if __name__ == "__main__":
    sys.exit(main())
