"""Where the recommendation service's cost above (b) goes: the probes behind docs/benchmarks.md.

    python -m benchmarks.probe_recommendation [--protocol v1|v2] [--rounds 7] [--skip-servers]
    python -m benchmarks.probe_recommendation --table-sizes

Not part of ``make bench`` (the targets are measured there); this explains its recommendation
figures. It uses the benchmark's registry (``.zm/bench``, trained on first use) and prints JSON:

- ``in_process``: ``timeit`` of one batch of 8 known customers (of ALS: refitted on the production version's purchases
  where training chose EASE): ``recommend`` with the bought
  products masked from packed bits (the served path) and slice by slice (the path above the bits'
  memory bound, and the only one before them), and its parts with the alternatives that were
  tried (the product as ``einsum``; top-k through ``np.partition`` and a threshold).
- ``servers``: the benchmark's interleaved closed-loop slices against three servers of the same
  class, all without the ranking table (``serving.ranking_table_mb`` 0: the path that scores the
  factors per request, which the table replaced for known customers): (b) ``--constant``, the
  model with ``recommend`` timed inside it, and the model answering from a memo of its own
  answers (validation, batching, result building, log and metrics, no ALS call). CPU per
  request, capacity against (b), ``recommend``'s time per call in the loaded
  server, and the host's steal time over the run.

The two server variants run this module with ``--serve`` in the serving environment.

``--table-sizes`` instead times the ranking table's build (``rank_all`` at depth 100, what a
server does when a version loads) on random purchases at the real file's size (4,312 customers,
4,017 products) and at 100,000 x 4,000, and checks sampled rows against per-request scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any

FAMILY = "product-recommendation"


def _us(fn: Any, number: int = 2000) -> float:
    return round(min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6, 1)


def in_process(home: Path) -> dict[str, float]:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy as np
    import pandas as pd

    from training import tracking
    from training.models.recommendation import ALSRecommender, top_unbought
    from zmlops.settings import Settings

    settings = Settings(home=home)
    version = tracking.alias_version(settings, FAMILY, "production")
    if version is None:
        raise SystemExit(f"no production version of {FAMILY} under {home}")
    est = tracking.load_estimator(settings, FAMILY, version)
    if not isinstance(est, ALSRecommender):  # training chose EASE: probe ALS's served path on the same purchases
        rows, cols = est.matrix_.nonzero()
        customers = est.customers_[rows]
        est = ALSRecommender().fit(pd.DataFrame({
            "customer_id": customers, "stock_code": est.items_[cols], "orders": est.matrix_[rows, cols].A1,
            "country": [est.country_of_[c] for c in customers]}))
    customers = est.customers_[:8].tolist()
    users = np.array([est.customers_.get_loc(c) for c in customers])
    est.recommend(customers, 10)  # builds the served lookups
    items_t, bits = est.__dict__["_item_factors_t"], est.__dict__["_bought_bits"]
    factors = est.model_.user_factors[users]
    scores = factors @ items_t
    masked = scores.copy()
    np.putmask(masked, np.unpackbits(bits[users], axis=1, count=scores.shape[1]).view(bool), -np.inf)
    rows = np.arange(len(users))[:, None]

    def top_k_argpartition() -> Any:  # what top_unbought does after masking
        best = np.argpartition(masked, -10, axis=1)[:, -10:]
        return best[rows, np.argsort(-masked[rows, best], axis=1, kind="stable")]

    def top_k_threshold() -> Any:  # the 10th best value per row, then the products at or above it
        kth = np.partition(masked, -10, axis=1)[:, -10:-9]
        top = np.nonzero(masked >= kth)[1].reshape(len(users), -1)
        return top[rows, np.argsort(-masked[rows, top], axis=1, kind="stable")]

    assert (top_k_argpartition() == top_k_threshold()).all()
    out = {"products": len(est.items_), "customers": len(est.customers_),
           "recommend_8_bits_us": _us(lambda: est.recommend(customers, 10)),
           "mask_and_top_k_bits_us": _us(lambda: top_unbought(scores, est.matrix_, users, 10, bits=bits)),
           "mask_and_top_k_slices_us": _us(lambda: top_unbought(scores, est.matrix_, users, 10)),
           "product_matmul_us": _us(lambda: factors @ items_t),
           "product_einsum_us": _us(lambda: np.einsum("uf,fi->ui", factors, items_t)),
           "top_k_argpartition_us": _us(top_k_argpartition),
           "top_k_partition_threshold_us": _us(top_k_threshold)}
    est.__dict__["_bought_bits"] = np.zeros((0, 0), np.uint8)  # as above the bound: slice by slice
    out["recommend_8_slices_us"] = _us(lambda: est.recommend(customers, 10))
    return out


def table_sizes() -> list[dict[str, Any]]:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy as np
    import pandas as pd

    from training.models.recommendation import ALSRecommender

    rng, out = np.random.default_rng(0), []
    for customers, products, pairs in ((4_312, 4_017, 200_000), (100_000, 4_000, 3_000_000)):
        frame = pd.DataFrame({"customer_id": rng.integers(0, customers, pairs), "orders": 1, "country": "UK",
                              "stock_code": rng.integers(0, products, pairs).astype(str)})
        frame = frame.groupby(["customer_id", "stock_code"], as_index=False).agg(
            orders=("orders", "sum"), country=("country", "first"))
        model = ALSRecommender(iterations=2).fit(frame)  # the factors' values do not change the cost
        started = time.perf_counter()
        assert model.rank_all(100, 2**30)
        seconds = time.perf_counter() - started
        table, users = model.__dict__["_ranking"], np.arange(0, customers, 97)
        assert (table[users, :10] == model._warm(users, 10)).all()
        out.append({"customers": customers, "products": products, "build_s": round(seconds, 2),
                    "mb": round(table.nbytes / 1e6, 2), "dtype": str(table.dtype)})
    return out


def _steal_ticks() -> int:
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8])


def servers(home: Path, protocol: str, rounds: int, seconds: int = 2) -> dict[str, Any]:
    import pandas as pd

    from benchmarks import bench_serving as bs

    env = {**bs.server_env(home), "ZM_SERVING__RANKING_TABLE_MB": "0"}  # score per request
    customers = [int(c) for c in pd.read_parquet(home / "feast" / "sources" / "customer_features.parquet",
                                                 columns=["customer_id"])["customer_id"].unique()[:500]]
    work = Path(tempfile.mkdtemp(prefix="zm-probe-"))
    lua, bodies, stats = work / "rotate.lua", work / "bodies.jsonl", work / "recommend.json"
    lua.write_text(bs.WRK_LUA)
    bodies.write_text("\n".join(json.dumps(b) for b in bs._bodies(FAMILY, protocol, customers, [])) + "\n")
    path = f"/v1/models/{FAMILY}:predict" if protocol == "v1" else f"/v2/models/{FAMILY}/infer"

    def variant(kind: str) -> Any:
        port = bs._port()
        return bs.Proc([str(bs.SERVING_PY), "-m", "benchmarks.probe_recommendation", "--serve", kind, "--port",
                        str(port)], {**env, "ZM_PROBE_STATS": str(stats)}, port)

    procs = {"constant": bs._start(FAMILY, env, "--constant"), "model": variant("timed"), "memo": variant("memo")}
    try:
        for proc in procs.values():
            proc.wait_ready(f"/v2/models/{FAMILY}/ready")
        steal = _steal_ticks()
        slices = bs._interleaved(procs, path, bodies, lua, rounds, seconds)
        steal = _steal_ticks() - steal
        time.sleep(1.5)  # the timed server writes its totals every second
        timed = json.loads(stats.read_text())
    finally:
        for proc in procs.values():
            proc.stop()
    out: dict[str, Any] = {"protocol": protocol, "rounds": rounds, "host_steal_ticks": steal}
    for name, runs in slices.items():
        out[name] = {"cpu_us_per_request": round(bs._median([s["cpu_us_per_request"] for s in runs]), 1),
                     "capacity_vs_constant": round(bs._per_round(slices["constant"], runs, "cpu_us_per_request"), 3),
                     "capacity_per_round": [round(x, 2) for x in bs._ratios(slices["constant"], runs,
                                                                             "cpu_us_per_request")]}
    out["model"]["recommend_us_per_call"] = round(timed["seconds"] / timed["calls"] * 1e6, 1)
    out["model"]["rows_per_call"] = round(timed["rows"] / timed["calls"], 2)
    return out


def serve(kind: str, port: int) -> int:
    """A model server with ``recommend`` timed (``timed``) or answers memoised per customer (``memo``)."""
    from inference_services import recommendation as service
    from inference_services.server import main
    from training.models import recommendation as model

    if kind == "timed":
        real, totals = model._Base.recommend, {"calls": 0, "rows": 0, "seconds": 0.0}

        def timed(self: Any, ids: Any, k: int = 10, countries: Any = None) -> Any:
            started = time.perf_counter()
            try:
                return real(self, ids, k, countries)
            finally:
                totals["seconds"] += time.perf_counter() - started
                totals["calls"] += 1
                totals["rows"] += len(ids)

        def write() -> None:
            while True:
                time.sleep(1.0)
                Path(os.environ["ZM_PROBE_STATS"]).write_text(json.dumps(totals))

        model._Base.recommend = timed  # type: ignore[method-assign,assignment]
        threading.Thread(target=write, daemon=True).start()
    else:
        answer, memo = service.RecommendationService.answer, {}

        async def memoised(self: Any, state: Any, rows: list[Any]) -> list[Any]:
            keys = [(state.version, r.customer_id, r.k, r.country) for r in rows]
            new = [r for r, key in zip(rows, keys, strict=True) if key not in memo]
            if new:
                for r, result in zip(new, await answer(self, state, new), strict=True):
                    memo[(state.version, r.customer_id, r.k, r.country)] = result
            return [memo[key] for key in keys]

        service.RecommendationService.answer = memoised  # type: ignore[method-assign]
    return main([FAMILY, "--port", str(port)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe_recommendation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=["v1", "v2"], default="v2", help="request protocol (default v2)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of 2-second slices (default 7)")
    parser.add_argument("--skip-servers", action="store_true", help="only the in-process timings")
    parser.add_argument("--table-sizes", action="store_true",
                        help="only time the ranking table's build at two sizes (serving environment)")
    parser.add_argument("--serve", choices=["timed", "memo"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.port)
    if args.table_sizes:
        print(json.dumps(table_sizes(), indent=1))
        return 0
    from benchmarks import bench_serving as bs

    home = (Path(__file__).resolve().parents[1] / ".zm" / "bench").resolve()
    bs._prepare_home(home)
    result: dict[str, Any] = {"in_process": in_process(home)}
    if not args.skip_servers:
        result["servers"] = servers(home, args.protocol, args.rounds)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
