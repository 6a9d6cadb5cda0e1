"""``zm``: the project command line.

Thin by design: it parses arguments, calls package functions and prints. Every
subcommand has ``--help``. Settings come from ``ZM_*`` environment variables
(see ``zmlops.settings``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zmlops import auth
from zmlops.console import console, step, table
from zmlops.settings import get_settings

if TYPE_CHECKING:
    from training.data.world import SimulationConfig
    from zmlops.settings import Settings

__all__ = ["main", "build_parser"]


def _scenario_period(text: str) -> tuple[int, str]:
    weeks, _, scenario = text.partition(":")
    from training.data.world import SCENARIOS

    if not weeks.isdigit() or scenario not in SCENARIOS:
        raise argparse.ArgumentTypeError(f"expected WEEKS:SCENARIO with SCENARIO in {', '.join(SCENARIOS)}")
    return int(weeks), scenario


def _add_simulation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, help="about this many raw rows (sets --customers and --products)")
    from training.data.world import SimulationConfig

    d = SimulationConfig()  # one source for the defaults
    p.add_argument("--customers", type=int, default=d.n_customers, help="number of customers (default %(default)s)")
    p.add_argument("--products", type=int, default=d.n_products, help="catalogue size (default %(default)s)")
    p.add_argument("--weeks", type=int, default=d.weeks, help="weeks of history (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed; same seed, same bytes (default %(default)s)")
    p.add_argument("--season-shift", type=float, default=d.season_shift_weeks_per_year, metavar="WEEKS",
                   help="changing seasonality: each category's peak moves this many weeks later per year "
                   "(default %(default)s)")
    p.add_argument("--season-growth", type=float, default=d.season_amplitude_change_per_year, metavar="SHARE",
                   help="changing seasonality: each category's seasonal amplitude grows by this share per year, "
                   "e.g. 0.25 (default %(default)s)")
    p.add_argument(
        "--start", type=dt.date.fromisoformat, default=d.start, help="first Monday (default %(default)s)"
    )
    p.add_argument(
        "--then",
        type=_scenario_period,
        action="append",
        default=[],
        metavar="WEEKS:SCENARIO",
        help="append a next period, e.g. 8:price_shock (repeatable); scenarios: none, "
        "new_product_mix, price_shock, segment_growth",
    )


def _sim_config(args: argparse.Namespace) -> SimulationConfig:
    from training.data.world import SimulationConfig

    common = {"seed": args.seed, "weeks": args.weeks, "start": args.start,
              "season_shift_weeks_per_year": args.season_shift,
              "season_amplitude_change_per_year": args.season_growth}
    if args.rows:
        return SimulationConfig.for_rows(args.rows, **common)
    return SimulationConfig(n_customers=args.customers, n_products=args.products, **common)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zm",
        description="Zero Margin MLOps: data, training, serving and monitoring of three retail models.",
        epilog="Settings: ZM_* environment variables (ZM_HOME, ZM_PROFILE, ...); see docs/quickstart.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="simulate, snapshot, validate and fetch data versions")
    dsub = data.add_subparsers(dest="data_command", required=True)

    p = dsub.add_parser("simulate", help="write simulated transactions and planted truth to a folder")
    _add_simulation_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")

    p = dsub.add_parser("ingest", help="snapshot a source as a new data version, then validate it")
    p.add_argument(
        "source",
        nargs="?",
        default="simulator",
        help="'simulator' (default) or a path to an Online Retail II file (.parquet, .csv, .xlsx)",
    )
    p.add_argument("--as-of", type=dt.date.fromisoformat, help="extraction date of a file (default: newest invoice)")
    _add_simulation_args(p)

    p = dsub.add_parser("validate", help="run the Great Expectations gate on a data version")
    p.add_argument("version", help="vN")
    p.add_argument("--force", action="store_true", help="validate again even if already good")

    dsub.add_parser("versions", help="list data versions and their gate status")

    p = dsub.add_parser("fetch", help="write the exact bytes of a data version to a folder")
    p.add_argument("version", help="vN, or 'latest' for the newest good version")
    p.add_argument("dest", type=Path)

    p = dsub.add_parser("clean", help="clean one raw file (a dvc.yaml stage): writes clean.parquet, cleaning.json")
    p.add_argument("raw", type=Path)
    p.add_argument("--out", type=Path, required=True)

    p = dsub.add_parser("check", help="run both suites on a raw file and its clean table (a dvc.yaml stage)")
    p.add_argument("raw", type=Path)
    p.add_argument("clean", type=Path)
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--as-of", type=dt.date.fromisoformat, help="extraction date (YYYY-MM-DD)")
    when.add_argument("--truth", type=Path, help="simulator truth.json: as-of is its last simulated day")
    p.add_argument("--out", type=Path, required=True, help="summary JSON (a DVC metric)")

    p = sub.add_parser("features", help="build feature tables of a data version, apply Feast, materialize")
    p.add_argument("version", nargs="?", default="current", help="vN or 'current' (newest good version)")

    from zmlops.catalog import FAMILIES as families
    p = sub.add_parser(
        "train",
        help="train, evaluate, register, gate (staging) and deploy model families",
        description="Train each family on a data version, log the run to MLflow, register the model as "
        "'candidate', compare it with 'production' on the same evaluation data and move 'staging' to it on a "
        "pass; then the deploy step (the training DAG's): approval where required (ZM_APPROVAL__*), the canary "
        "where a rollout serves the family, and only then 'production'. Repeating a call for the same data "
        "version, code and parameters reuses the registered version.",
    )
    p.add_argument("--no-deploy", action="store_true", help="stop at 'staging' (production unchanged)")
    p.add_argument("families", nargs="*", default=[], metavar="FAMILY",
                   help=f"any of {', '.join(families)} (default: all)")
    p.add_argument("--data-version", default="current", help="vN or 'current' (default)")
    p.add_argument("--reason", default="manual", help="why this run happens (recorded on the run and version)")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=None,
                   help="run each family's Optuna study before the fit (default: ZM_TUNING__ENABLED); its budget "
                   "is ZM_TUNING__BUDGET_SECONDS per family, its trials nested MLflow runs, its choice in the card")

    p = sub.add_parser("models", help="show registered versions and aliases; write production model cards")
    p.add_argument("--cards", type=Path, default=None, help="write model cards to this folder (one per model)")
    p.add_argument(
        "--alias",
        default="production",
        help="whose cards --cards writes: a registry alias (default production) or 'latest' for the newest "
        "version whatever its gate decision",
    )

    p = sub.add_parser(
        "ui", help="serve the analysts' Evidently UI over the monitoring workspace (docs/monitoring.md)",
        description="Runs `evidently ui` over the workspace the monitoring checks write (ZM_HOME/evidently locally, "
        "<object store>/evidently in the k8s profile, copied to the pod's cache and refreshed; "
        "ZM_MONITORING__WORKSPACE_URL moves it), telemetry off. In the chart it listens on the pod's loopback behind "
        "HAProxy's basic auth.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--refresh", type=float, default=60.0,
                   help="seconds between copies of the object store's workspace (k8s profile; default 60)")

    sub.add_parser("version", help="print the code version training records (the commit, -dirty-<hash> with "
                   "uncommitted changes; an image's ZM_CODE_VERSION): the images' build argument")
    p = sub.add_parser(
        "auth", help="the predictors' API keys: make one (the key, and the entry for ZM_AUTH__API_KEYS)",
        description="Keys are stored hashed: a predictor holds {name, sha256, scopes} entries (ZM_AUTH__API_KEYS, "
        "from a Secret); the client holds the key. Rotation: add the new entry beside the old, roll the "
        "predictors, move the clients, remove the old entry (docs/security.md).")
    ausub = p.add_subparsers(dest="action", required=True)
    q = ausub.add_parser("new-key", help="print a new key and its ZM_AUTH__API_KEYS entry (JSON)")
    q.add_argument("name", help="who holds it (e.g. shop-frontend, prometheus)")
    q.add_argument("--scope", action="append", choices=auth.SCOPES, dest="scopes",
                   help="what it may do (repeatable; default predict)")
    q = ausub.add_parser("pushgateway-users", help="new passwords for these users and the Pushgateway's userlist "
                         "(only bcrypt hashes) admitting them",
                         description="Prints each user's new password and the HAProxy userlist for the Secret key "
                         "pushgateway-users: the users named by --pusher may push, the others only read "
                         "(docs/security.md: monitoring pushes, prometheus scrapes).")
    q.add_argument("users", nargs="+", help="user names (e.g. monitoring prometheus)")
    q.add_argument("--pusher", action="append", dest="pushers",
                   help="a user who may push (repeatable; default: monitoring)")
    q = ausub.add_parser("analysts-users", help="new passwords for these people and the userlist (only bcrypt hashes) "
                         "of the analysts' Evidently UI",
                         description="Prints each user's new password and the HAProxy userlist for the Secret key "
                         "analysts-users: who may open the chart's Evidently UI (docs/monitoring.md).")
    q.add_argument("users", nargs="+", help="user names (e.g. ana ben)")

    p = sub.add_parser(
        "audit", help="the audit trail: list, show, verify (tamper evidence), export",
        description="Every data version, gate, approval, rollout step and workload start is an entry chained to the "
        "one before by its SHA-256 hash (in the state database: ZM_STATE_DB_URL, SQLite by default).")
    asub = p.add_subparsers(dest="action", required=True)
    q = asub.add_parser("list", help="entries, oldest first")
    q.add_argument("--action", dest="what", default=None,
                   help="only these actions (e.g. 'model.*', 'rollout.promoted')")
    q.add_argument("--subject", default=None, help="only these subjects (e.g. 'model:demand-forecast:*', 'data:v2')")
    q.add_argument("--last", type=int, default=50, help="the newest N matching entries (default 50; 0: all)")
    q = asub.add_parser("show", help="one entry in full (JSON)")
    q.add_argument("seq", type=int, help="the entry's number")
    q = asub.add_parser("verify", help="recompute the hash chain; exit 1 naming every broken entry")
    q.add_argument("--head", default=None, help="a head hash exported earlier: also detects deleted newest entries")
    q = asub.add_parser("export", help="every entry as JSON lines (stdout or --out), then the head hash on stderr")
    q.add_argument("--out", type=Path, default=None, help="write to this file instead of stdout")

    p = sub.add_parser(
        "privacy", help="customers' rights: consent, access (export), erasure, where they are (scan)",
        description="The consent register (governance.consent; the state database, keyed by the customer's "
        "pseudonym): profiling lets segmentation use a customer's behaviour, personalisation lets "
        "recommendations be computed for them. Training leaves out customers without the purpose; the predictors "
        "answer them as an unknown customer and log nothing that identifies them (docs/security.md).")
    psub = p.add_subparsers(dest="action", required=True)
    q = psub.add_parser("consent", help="record a customer's consent as it now stands (audited)")
    q.add_argument("customer_id", type=int, help="the customer's id")
    q.add_argument("--profiling", choices=["yes", "no"], required=True, help="may segmentation profile them?")
    q.add_argument("--personalisation", choices=["yes", "no"], required=True,
                   help="may recommendations be personalised for them?")
    q.add_argument("--source", required=True, help="where the choice was made (web form, call centre, import)")
    q = psub.add_parser("subject", help="the customer's audit subject hash: what a zmlops_privacy DAG run is given",
                        description="The keyed hash the audit trail and the erasure register name a customer by "
                        "(governance/pseudonyms.py). Trigger the zmlops_privacy DAG (export, erase, scan) with it in "
                        "Airflow's UI or REST API: Airflow keeps a run's parameters where an erasure cannot reach, "
                        "so the id never goes there (docs/privacy.md).")
    q.add_argument("customer_id", type=int, help="the customer's id")
    q = psub.add_parser("rekey", help="rotate the pseudonymisation key: start (old key set), roll out, finish",
                        description="Rewrites the stored keyed hashes (consent register, erasure register, request "
                        "log) from the old key to the new one in two steps around the rollout of the new key, so "
                        "every workload honours every choice on either key meanwhile (governance/rekey.py; the "
                        "procedure: docs/privacy.md). The ids come from the retained data versions and --ids.")
    rq = q.add_subparsers(dest="step", required=True)
    r = rq.add_parser("start", help="with the old key in ZM_PSEUDONYMISATION_KEY: copy the rows under the new key")
    r.add_argument("--new-key-file", type=Path, required=True, help="a file holding the new key (one line)")
    r.add_argument("--ids", type=Path, default=None, help="more customer ids, one per line (the customer master "
                   "list: people with a consent record who never bought)")
    r = rq.add_parser("finish", help="with the new key rolled out: drop the old rows, rewrite the request log")
    r.add_argument("--old-key-file", type=Path, required=True, help="a file holding the old key (one line)")
    r.add_argument("--ids", type=Path, default=None, help="the same extra ids as for start")
    q = psub.add_parser("history", help="every consent record of a customer, oldest first")
    q.add_argument("customer_id", type=int, help="the customer's id")
    q = psub.add_parser("export", help="the right of access: everything held about a customer, as one JSON file",
                        description="Transactions in every retained data version, offline and online features, "
                        "the segment, the answers served (request log, by pseudonym), the model versions trained "
                        "on their data, and their consent history (governance/access.py); audited.")
    q.add_argument("customer_id", type=int, help="the customer's id")
    q.add_argument("--out", type=Path, required=True, help="the bundle's file (JSON)")
    q = psub.add_parser("scan", help="search every store for a customer's id and pseudonym; print each hit",
                        description="The object store (data versions, feature sources, request log, reports), the "
                        "DVC remote and cache, the state database, the online store, every model version's "
                        "artifacts in MLflow and the local Airflow logs (governance/scan.py).")
    q.add_argument("customer_id", type=int, help="the customer's id")
    q.add_argument("--json", action="store_true", help="print the hits as JSON")
    q = psub.add_parser("erase", help="the right to erasure: remove a customer from every store (audited by a keyed "
                        "hash, never the id)",
                        description="A new data version without them (gated), features and online rows from it, "
                        "every earlier version holding them retired (DVC objects deleted from cache and remote), "
                        "their request-log rows and consent records deleted, the predictors told at once; models "
                        "trained on their data retrain when the monitoring DAG next runs, and its retention task "
                        "then deletes the old versions (governance/erasure.py). Check with 'zm privacy scan'.")
    q.add_argument("customer_id", type=int, help="the customer's id")
    q.add_argument("--reason", required=True, help="the request's reference (recorded)")

    p = sub.add_parser(
        "rollout", help="progressive delivery on the local stack: serve, deploy (canary), rollback, status, drills",
        description="Models served by KServe processes behind HAProxy on the public ports. 'deploy' runs the "
        "canary plan (settings ZM_ROLLOUT__*: steps, analysis windows, limits) and ends promoted or rolled "
        "back; 'rollback' sends all traffic back to the warm previous version (no MLflow needed).",
    )
    rsub = p.add_subparsers(dest="action", required=True)
    q = rsub.add_parser("serve", help="start HAProxy and serve a version (default: the production alias) as stable")
    q.add_argument("model", choices=families)
    q.add_argument("--version", default=None, help="registered version (default: the one behind 'production')")
    q = rsub.add_parser("deploy", help="canary a version: 10%% -> 50%% -> 100%%, analysed; promote or roll back")
    q.add_argument("model", choices=families)
    q.add_argument("version", help="registered version to roll out")
    q = rsub.add_parser("rollback", help="all traffic back to the warm previous version, now")
    q.add_argument("model", choices=families)
    q.add_argument("--reason", default="manual rollback", help="recorded in the audit trail and on the version")
    q = rsub.add_parser("status", help="what serves each model, and the latest decisions")
    q = rsub.add_parser("stop", help="stop the servers of a model (and HAProxy with the last one)")
    q.add_argument("model", choices=families)
    q = rsub.add_parser("drills", help="run the rollout drills under load and print their figures")
    q.add_argument("--rate", type=float, default=250.0, help="load in requests/s (default 250)")
    q.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")

    p = sub.add_parser(
        "experiment", help="A/B tests of model versions: plan the sample, run one on simulated clicks",
        description="An experiment splits customers (sticky, by pseudonym) between two model versions and judges "
        "click-through per customer with a group-sequential test that may be read daily (delivery/experiments.py, "
        "docs/experiments.md). 'plan' prints the sample the design needs before it starts; 'simulate' runs one on "
        "the simulator's clicks with a planted uplift, records the decision and its report, and with --deploy "
        "puts the winner into service through the promotion path.",
    )
    esub = p.add_subparsers(dest="action", required=True)
    q = esub.add_parser("shadow", help="the shadow version's answers against production's (serving.shadow_alias)")
    q.add_argument("model", choices=families)
    q.add_argument("--since", default=None, help="only mirrored requests after this ISO time")
    q = esub.add_parser("analyse", help="today's look at a running experiment, from the request and event logs")
    q.add_argument("name")
    q.add_argument("--deploy", action="store_true",
                   help="once decided, put the winner into service through the promotion path (approval, canary)")
    for name, text in (("plan", "the sample per variant and the daily boundaries of a design"),
                       ("simulate", "one experiment on simulated clicks: looks, decision, report, audit"),
                       ("start", "register a running experiment: the predictors route its customers from their next "
                        "poll")):
        q = esub.add_parser(name, help=text)
        if name != "plan":
            q.add_argument("name", help="the experiment's name (its assignment salt and report name; used once)")
            q.add_argument("--control", required=True, help="the control's model version")
            q.add_argument("--treatment", required=True, help="the treatment's model version")
            q.add_argument("--family", choices=families, default="product-recommendation")
        if name == "simulate":
            q.add_argument("--uplift", type=float, default=0.10,
                           help="planted relative click-through uplift of the treatment (the truth; default 0.10)")
            q.add_argument("--seed", type=int, default=0)
            q.add_argument("--deploy", action="store_true",
                           help="put the winner into service through the promotion path (approval, canary)")
        q.add_argument("--baseline-rate", type=float, default=0.05, help="the control's click-through (default 0.05)")
        q.add_argument("--effect", type=float, default=0.10,
                       help="smallest relative uplift worth detecting (default 0.10)")
        q.add_argument("--alpha", type=float, default=0.05, help="two-sided (default 0.05)")
        q.add_argument("--power", type=float, default=0.8, help="(default 0.8)")
        q.add_argument("--looks", type=int, default=7, help="daily looks, at most 14 (default 7)")
        q.add_argument("--treatment-share", type=float, default=0.5, help="share of customers (default 0.5)")
    return parser


def _cmd_experiment(args: argparse.Namespace) -> int:
    from delivery import experiments as x

    if args.action == "analyse":
        return _analyse_experiment(args)
    if args.action == "shadow":
        found = x.shadow_report(get_settings(), args.model, args.since)
        table(f"{args.model}: shadow traffic", ["production", "shadow", "requests", "agreement", "in full agreement",
                                                 "errors", "p50 / p99 production", "p50 / p99 shadow"],
              [[",".join(r["production"]), r["shadow"], r["requests"], f"{r['agreement']:.3f}",
                f"{r['full_agreement_share']:.1%}", f"{r['errors']} ({r['error_rate']:.1%})",
                f"{r['production_p50_ms']:.2f} / {r['production_p99_ms']:.2f} ms",
                f"{r['shadow_p50_ms']:.2f} / {r['shadow_p99_ms']:.2f} ms"] for r in found])
        print(json.dumps(found))
        return 0 if found else 1
    name = getattr(args, "name", "plan")
    variants = {"control": getattr(args, "control", ""), "treatment": getattr(args, "treatment", "")}
    try:
        design = x.Design(name, family=getattr(args, "family", "product-recommendation"), variants=variants,
                          split={"control": 1 - args.treatment_share, "treatment": args.treatment_share},
                          baseline_rate=args.baseline_rate, min_relative_effect=args.effect, alpha=args.alpha,
                          power=args.power, looks=args.looks)
    except ValueError as error:
        print(f"zm experiment: error: {error}", file=sys.stderr)
        return 2
    if args.action == "plan":
        _print_plan(design)
        return 0
    if args.action == "start":
        try:
            planned = x.start(get_settings(), design)
        except ValueError as error:
            print(f"zm experiment: error: {error}", file=sys.stderr)
            return 2
        console.print(f"experiment {name} running on {design.family}: v{design.variants['control']} (control) vs "
                      f"v{design.variants['treatment']} (treatment), up to {planned.per_variant['control']:,} "
                      f"customers each, {design.looks} daily looks (`zm experiment analyse {name}` each day)")
        return 0
    simulate_experiment(get_settings(), design, args.uplift, args.seed, args.deploy)
    return 0


def _analyse_experiment(args: argparse.Namespace) -> int:
    from delivery import experiments as x

    settings = get_settings()
    try:
        analysis = x.analyse_running(settings, args.name)
    except LookupError as error:
        print(f"zm experiment: error: {error.args[0]}", file=sys.stderr)
        return 2
    _print_looks(analysis)
    for variant, read in analysis.guardrails.items():
        console.print(f"guardrails, {variant}: " + ", ".join(f"{k} {v:.4g}" for k, v in read.items()))
    for note in analysis.notes:
        console.print(note)
    console.print(f"decision: {analysis.decision.upper()}: {analysis.reason}")
    if args.deploy and analysis.decision != "continue":
        with step("carry out the decision through the promotion path"):
            console.print(f"   {json.dumps(x.carry_out(settings, analysis), default=str)}")
    return 0


def _print_looks(analysis: Any) -> None:
    v = analysis.design["variants"]
    table(f"experiment {analysis.design['name']}: v{v['control']} (control) vs v{v['treatment']} (treatment)",
          ["day", "customers", "CTR control", "CTR treatment", "uplift (repeated 95% CI)", "z", "boundary"],
          [[look.day, f"{sum(look.customers.values()):,}", f"{look.rate['control']:.4f}",
            f"{look.rate['treatment']:.4f}", f"[{look.relative_ci[0]:+.1%}, {look.relative_ci[1]:+.1%}]",
            f"{look.z:.2f}", f"{look.boundary:.2f}"] for look in analysis.looks])


def _print_plan(design: Any) -> Any:
    import numpy as np

    from delivery import experiments as x

    with step(f"plan: {design.min_relative_effect:.0%} uplift on {design.baseline_rate:.3f}, alpha {design.alpha}, "
              f"power {design.power}, {design.looks} daily looks"):
        planned = x.plan(design)
    table("the plan", ["variant", "customers (single look)", "customers (sequential, at most)"],
          [[v, f"{planned.fixed_per_variant[v]:,}", f"{planned.per_variant[v]:,}"] for v in planned.per_variant])
    console.print(f"   {int(np.ceil(planned.total / design.looks)):,} customers a day for {design.looks} days; "
                  "daily |z| boundaries: " + ", ".join(f"{b:.2f}" for b in planned.boundaries))
    return planned


def simulate_experiment(settings: Settings, design: Any, uplift: float, seed: int = 0, deploy: bool = False) -> Any:
    """``zm experiment simulate`` (and the demo's A/B test): plan, clicks with a planted ``uplift``, daily looks,
    the decision recorded (report, audit) and, with ``deploy``, carried out. Returns the analysis."""
    import numpy as np

    from delivery import experiments as x
    from governance.pseudonyms import pseudonymise
    from training.data.clicks import ClickWorld, events

    planned = _print_plan(design)
    key = settings.pseudonym_key
    per_day = int(np.ceil(planned.total / design.looks))
    world = ClickWorld.with_uplift(design.baseline_rate, uplift, per_day, design.looks, seed)
    with step(f"simulate {design.looks} days of clicks: the treatment planted {uplift:+.0%} over the control"):
        shown = events(world, lambda c: x.assign(design.name, pseudonymise(key, c), design.split))
        daily = x.daily_looks(shown.assign(clicked_day=shown["day"].where(shown["clicked"])), design.looks)
        analysis = x.analyse(design, planned, daily)
    _print_looks(analysis)
    keys = x.record(settings, analysis)
    console.print(f"decision: {analysis.decision.upper()}: {analysis.reason}")
    console.print(f"report: {settings.home.resolve() / keys['report']} (audit: experiment.decided)")
    if deploy:
        with step("carry out the decision through the promotion path"):
            done = x.carry_out(settings, analysis)
        console.print(f"   {json.dumps(done, default=str)}")
    return analysis


def _cmd_rollout(args: argparse.Namespace) -> int:
    import json

    from delivery.controller import Rollout, rollout_for

    settings = get_settings()
    if args.action == "drills":
        from delivery.drills import prepare, run_drills

        drill_settings = prepare(settings.home.resolve(), say=console.print)
        figures = run_drills(drill_settings, rate=args.rate, say=console.print)
        console.print_json(json.dumps(figures))
        if args.out:
            args.out.write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    if args.action in ("deploy", "rollback") and settings.profile == "k8s":
        target = rollout_for(settings)  # KServe: same plan and analysis on the InferenceService
        out = target.deploy(args.model, args.version) if args.action == "deploy" else target.rollback(
            args.model, args.reason)
        console.print(f"{args.model} v{out.version}: {out.result} after {out.seconds:.1f} s: {out.reason}")
        ok = out.result == ("promoted" if args.action == "deploy" else "rolled_back")
        return 0 if ok else 1
    rollout = Rollout(settings)
    if args.action == "serve":
        version = args.version
        if version is None:
            import mlflow

            client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
            version = client.get_model_version_by_alias(args.model, "production").version
        rollout.serve(args.model, str(version))
        console.print(f"{args.model} v{version} on http://{settings.serving.host}:{settings.serving.ports[args.model]}")
        return 0
    if args.action == "deploy":
        out = rollout.deploy(args.model, args.version)
        console.print(f"{args.model} v{args.version}: {out.result} after {out.seconds:.1f} s: {out.reason}")
        return 0 if out.result == "promoted" else 1
    if args.action == "rollback":
        out = rollout.rollback(args.model, args.reason)
        console.print(f"{args.model}: v{out.version} serves again ({out.seconds:.2f} s)")
        return 0
    if args.action == "stop":
        rollout.shutdown(args.model)
        from zmlops.catalog import FAMILIES

        if not any(rollout.state(f).stable for f in FAMILIES):
            rollout.backend.proxy.stop()
        return 0
    from zmlops.catalog import FAMILIES

    rows = []
    for family in FAMILIES:
        st = rollout.state(family)
        rows.append([family, f"v{st.stable.version} ({st.stable.slot})" if st.stable else "-",
                     f"v{st.previous.version} ({st.previous.slot})" if st.previous else "-"])
    table("rollout", ["model", "stable", "previous (warm)"], rows)
    for d in rollout.decisions()[-10:]:
        console.print(f"{d['time']} {d['model']} v{d['version']}: {d['what']} ({d['why']})")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    import json

    from governance import audit

    settings = get_settings()
    if args.action == "list":
        found = audit.entries(settings, args.what, args.subject)
        shown = found[-args.last:] if args.last else found
        table(f"audit trail ({len(shown)} of {len(found)} entries)", ["#", "time", "actor", "action", "subject", "why"],
              [[e.seq, e.created_at[:19], e.actor, e.action, e.subject, str(e.details.get("why", ""))[:70]]
               for e in shown])
        return 0
    if args.action == "show":
        found_one = audit.entry(settings, args.seq)
        if found_one is None:
            print(f"zm audit: error: no entry {args.seq}", file=sys.stderr)
            return 2
        print(json.dumps(found_one.to_dict(), indent=2))
        return 0
    if args.action == "verify":
        problems = audit.verify(settings, args.head)
        count, digest = audit.head(settings)
        if problems:
            for problem in problems:
                console.print(f"[red]broken[/] {problem}")
            console.print(f"{len(problems)} problem(s) in {count} entries")
            return 1
        console.print(f"audit trail intact: {count} entries, head {digest}")
        return 0
    lines = "".join(json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in audit.entries(settings))
    if args.out:
        args.out.write_text(lines)
    else:
        sys.stdout.write(lines)
    count, digest = audit.head(settings)
    print(f"head {digest} ({count} entries)", file=sys.stderr)
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from training.run import prepare_features

    settings = get_settings()
    with step(f"features of data version {args.version}"):
        marker = prepare_features(settings, args.version)
    table("feature tables", ["table", "rows", "newest cutoff"],
          [[k, v["rows"], v["newest"]] for k, v in marker["tables"].items()])
    console.print(f"online store loaded for {marker['materialized'][0]} .. {marker['materialized'][1]}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from delivery.promotion import deploy
    from training.families import FAMILIES, get_family
    from training.run import train_family

    settings = get_settings()
    rows = []
    for name in args.families:
        get_family(name)  # refuse a typo before any training starts
    for name in args.families or list(FAMILIES):
        with step(f"train {name} on data version {args.data_version}"):
            o = train_family(settings, name, args.data_version, reason=args.reason, tune=args.tune)
        deployed = "-"
        if not args.no_deploy and o.decision == "staged":
            with step(f"deploy {name} v{o.version}"):
                d = deploy(settings, o.to_dict())
            deployed = "production" if d["deployed"] else d["why"]
        rows.append([name, o.version, o.data_version, o.primary_metric, f"{o.metric:.4f}", f"{o.baseline:.4f}",
                     "" if o.champion is None else f"{o.champion:.4f}", o.decision + (" (reused)" if o.reused else ""),
                     deployed])
    table("training", ["model", "version", "data", "metric", "model", "baseline", "production before", "gate",
                       "deployed"], rows)
    console.print(f"MLflow: {settings.tracking_uri} (make ui)   model cards: {settings.reports / 'model-cards'}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from training import tracking
    from training.families import FAMILIES
    from training.run import write_production_cards

    settings = get_settings()
    rows = []
    for name in FAMILIES:
        aliases = {a: tracking.alias_version(settings, name, a) for a in tracking.ALIASES}
        rows.append([name, *[v or "-" for v in aliases.values()]])
    table("registered models (aliases -> version)", ["model", *tracking.ALIASES], rows)
    if args.cards:
        for path in write_production_cards(settings, args.cards, alias=args.alias):
            console.print(f"wrote {path}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from training.data import ingest
    from zmlops.console import console, step, table, week_progress
    from zmlops.settings import get_settings

    settings = get_settings()
    if args.data_command == "simulate":
        from training.data.simulator import simulate

        with week_progress("simulating") as progress:
            result = simulate(_sim_config(args), args.out, args.then, progress)
        console.print(f"{result.rows:,} rows in {result.seconds:.1f} s -> {result.transactions}")
        return 0
    if args.data_command == "ingest":
        with step("snapshot"):
            if args.source == "simulator":
                with week_progress("simulating") as progress:
                    version = ingest.snapshot_simulated(
                        settings,
                        _sim_config(args),
                        args.then,
                        progress,
                    )
            else:
                version = ingest.snapshot_file(settings, Path(args.source), args.as_of)
            console.print(f"   data version {version.name}: {version.meta['rows']:,} raw rows")
        return _validate(settings, version.name, force=False)
    if args.data_command == "validate":
        return _validate(settings, args.version, args.force)
    if args.data_command == "versions":
        registry = ingest.registry_for(settings)
        current = registry.current()
        table(
            "data versions",
            ["version", "status", "source", "as of", "raw rows", "current"],
            [
                [
                    v.name,
                    v.status,
                    v.meta.get("source"),
                    v.meta.get("as_of"),
                    v.meta.get("rows"),
                    "*" if current and current.name == v.name else "",
                ]
                for v in registry.versions()
            ],
        )
        return 0
    if args.data_command == "fetch":
        registry = ingest.registry_for(settings)
        version = registry.resolve(args.version)
        registry.fetch(version, args.dest)
        console.print(f"{version.name} -> {args.dest}")
        return 0
    if args.data_command == "clean":
        import tempfile

        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="zm-read-", dir=args.out) as tmp:
            report = ingest.cleaned(settings, ingest.normalised(settings, args.raw, Path(tmp)),
                                    args.out / "clean.parquet")
        (args.out / "cleaning.json").write_text(json.dumps(report.to_dict(), indent=2))
        console.print("\n".join(report.lines()))
        return 0
    if args.data_command == "check":
        import tempfile

        from training.validation import SuiteContext, ValidationFailed

        as_of = args.as_of or dt.date.fromisoformat(json.loads(args.truth.read_text())["period"]["last_day"])
        ctx = SuiteContext(settings.validation, as_of)
        results = []
        try:
            with tempfile.TemporaryDirectory(prefix="zm-read-") as tmp:
                raw = ingest.normalised(settings, args.raw, Path(tmp))
                results.append(ingest.check_raw(settings, raw, ctx, args.raw.stem))
            results.append(ingest.check_clean(settings, args.clean, ctx, args.raw.stem))
        except ValidationFailed as failed:
            console.print(str(failed), markup=False)
            return 1
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {r.suite: {"evaluated": r.evaluated, "failed": len(r.failures), "rows": r.rows} for r in results},
                indent=2,
            )
        )
        for r in results:
            console.print("\n".join(r.summary_lines()), markup=False)
        return 0
    raise AssertionError(args.data_command)


def _validate(settings: Settings, name: str, force: bool) -> int:
    from training.data import ingest
    from training.validation import ValidationFailed
    from zmlops.console import console, step

    try:
        with step(f"validate {name} (Great Expectations: raw suite, clean, clean suite)"):
            result = ingest.validate_version(settings, name, force=force)
    except ValidationFailed as failed:
        current = ingest.registry_for(settings).current()
        console.print(f"[red]Data version {name} failed validation; it is marked bad.[/]")
        console.print(str(failed), markup=False)
        console.print(f"Current data version stays {current.name if current else 'unset'}.")
        return 1
    console.print("\n".join(result.summary_lines()), markup=False)
    console.print(f"{name} is good; current data version: {result.version.name if result.version else name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from zmlops.settings import apply_telemetry_off

    args = build_parser().parse_args(argv)
    apply_telemetry_off()
    if args.command == "data":
        from training.data.cleaning import UnreadableInput
        from training.data.versions import VersionNotFound

        try:
            return _cmd_data(args)
        except (VersionNotFound, UnreadableInput, FileNotFoundError) as error:
            print(f"zm: error: {error}", file=sys.stderr)
            return 2
    if args.command in ("features", "train", "models"):
        import logging

        from training.data.versions import VersionNotFound

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        handler = {"features": _cmd_features, "train": _cmd_train, "models": _cmd_models}[args.command]
        try:
            return handler(args)
        except (VersionNotFound, KeyError) as error:
            print(f"zm: error: {error.args[0] if error.args else error}", file=sys.stderr)
            return 2
    if args.command == "audit":
        return _cmd_audit(args)
    if args.command == "privacy":
        from governance import consent

        settings = get_settings()
        if args.action == "consent":
            try:
                got = consent.record(settings, args.customer_id, args.profiling == "yes",
                                     args.personalisation == "yes", args.source)
            except ValueError as error:
                print(f"zm privacy: error: {error}", file=sys.stderr)
                return 2
            print(f"customer {got.customer} (pseudonym): profiling {'yes' if got.profiling else 'no'}, "
                  f"personalisation {'yes' if got.personalisation else 'no'} ({got.source}, by {got.actor})")
            return 0
        if args.action == "rekey":
            from governance import rekey

            ids = [int(x) for x in args.ids.read_text().split()] if args.ids else []
            try:
                if args.step == "start":
                    done = rekey.start(settings, args.new_key_file.read_text().strip().encode(), ids)
                else:
                    done = rekey.finish(settings, args.old_key_file.read_text().strip().encode(), ids)
            except (ValueError, LookupError, RuntimeError) as error:
                print(f"zm privacy rekey: error: {error}", file=sys.stderr)
                return 2
            print(json.dumps(done, indent=1))
            return 0
        if args.action == "subject":
            print(consent.subject_hash(settings, args.customer_id))
            return 0
        if args.action == "export":
            from governance.access import export

            with step(f"export everything held about customer {consent.pseudonym(settings, args.customer_id)}"):
                summary = export(settings, args.customer_id, args.out)
            print(f"{args.out}: {json.dumps(summary)}")
            return 0
        if args.action == "erase":
            from governance.erasure import erase

            with step(f"erase customer {consent.audit_subject(settings, args.customer_id)} from every store"):
                try:
                    done = erase(settings, args.customer_id, args.reason)
                except (ValueError, RuntimeError) as error:
                    print(f"zm privacy: error: {error}", file=sys.stderr)
                    return 2
            print(json.dumps(done, indent=1))
            return 0
        if args.action == "scan":
            from governance.scan import as_dicts, scan

            if args.json:  # nothing but the JSON on stdout
                hits, unread = scan(settings, args.customer_id)
                print(json.dumps({"hits": as_dicts(hits), "not_searched": unread}, indent=1))
                return 0
            with step(f"search every store for customer {consent.pseudonym(settings, args.customer_id)}"):
                hits, unread = scan(settings, args.customer_id)
            table(f"{len(hits)} hits ({len(unread)} binary files not searched)", ["store", "where", "what"],
                  [[h.store, h.where, h.what] for h in hits])
            return 0
        rows = consent.history(settings, args.customer_id)
        table(f"consent of customer {consent.pseudonym(settings, args.customer_id)} ({len(rows)} records; none: "
              f"{'refused' if settings.privacy.consent_required else 'allowed'} by default)",
              ["time", "profiling", "personalisation", "source", "by"],
              [[c.at[:19], c.profiling, c.personalisation, c.source, c.actor] for c in rows])
        return 0
    if args.command == "auth":
        if args.action in ("pushgateway-users", "analysts-users"):
            import secrets

            passwords = {user: secrets.token_urlsafe(24) for user in args.users}
            try:
                userlist = auth.pushgateway_users(passwords, tuple(args.pushers or ["monitoring"])) \
                    if args.action == "pushgateway-users" else auth.userlist("analysts", passwords)
            except ValueError as error:
                print(f"zm: error: {error}", file=sys.stderr)
                return 2
            for user, password in passwords.items():
                print(f"password of {user} (not stored anywhere): {password}")
            print(f"userlist (the Secret key {args.action}):")
            print(userlist, end="")
            return 0
        key, entry = auth.new_key(args.name, tuple(args.scopes or ["predict"]))
        print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
        print(f"entry (add it to ZM_AUTH__API_KEYS): {json.dumps(entry)}")
        return 0
    if args.command == "experiment":
        return _cmd_experiment(args)
    if args.command == "rollout":
        try:
            return _cmd_rollout(args)
        except RuntimeError as error:
            print(f"zm rollout: error: {error}", file=sys.stderr)
            return 2
    if args.command == "ui":
        from monitoring.workspace import serve

        return serve(get_settings(), args.host, args.port, args.refresh)
    if args.command == "version":
        from zmlops.version import code_version

        print(code_version())
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
