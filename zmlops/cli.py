"""``zm``: the project command line (Click).

Thin by design: each command parses its options, calls package functions and prints. Every
command and group has ``--help``. Settings come from ``ZM_*`` environment variables (see
``zmlops.settings``). A command's failure it can name (a missing data version, a refused input)
is one ``zm: error: ...`` line and exit code 2; a usage error is Click's message and exit code 2.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from zmlops import auth
from zmlops.catalog import FAMILIES
from zmlops.console import console, step, table
from zmlops.settings import get_settings

if TYPE_CHECKING:
    from training.data.world import SimulationConfig
    from zmlops.settings import Settings

__all__ = ["main", "cli", "simulate_experiment"]

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
PATH = click.Path(path_type=Path)
MODEL = click.Choice(FAMILIES)


def _fail(message: str, command: str = "zm") -> int:
    print(f"{command}: error: {message}", file=sys.stderr)
    return 2


def _failures(command: str, *kinds: str) -> Callable[[F], F]:
    """A command's failures it can name (exception classes, ``module:Name`` imported when the command runs, or a
    builtin's name): one ``COMMAND: error: ...`` line and exit 2 instead of a traceback."""
    import builtins
    import functools

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            from zmlops.catalog import load

            caught = tuple(load(k) if ":" in k else getattr(builtins, k) for k in kinds)
            try:
                return f(*args, **kwargs)
            except caught as error:
                named = error.args[0] if isinstance(error, KeyError) and error.args else error  # no repr quotes
                return _fail(str(named), command)

        return wrapped  # type: ignore[return-value]

    return decorate


# a data version or input file that is not there; a family or data version that is not there; a refused rollout
DATA_FAILURES = _failures("zm", "training.data.versions:VersionNotFound", "training.data.cleaning:UnreadableInput",
                          "FileNotFoundError")
TRAINING_FAILURES = _failures("zm", "training.data.versions:VersionNotFound", "KeyError")
ROLLOUT_FAILURES = _failures("zm rollout", "RuntimeError")


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a date, YYYY-MM-DD") from None


def _scenario_periods(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[int, str]]:
    from training.data.world import SCENARIOS

    periods = []
    for text in values:
        weeks, _, scenario = text.partition(":")
        if not weeks.isdigit() or scenario not in SCENARIOS:
            raise click.BadParameter(f"{text!r}: expected WEEKS:SCENARIO with SCENARIO in {', '.join(SCENARIOS)}")
        periods.append((int(weeks), scenario))
    return periods


def _simulation_options(f: F) -> F:
    """The simulator's options, shared by ``data simulate`` and ``data ingest``."""
    from training.data.world import SimulationConfig

    d = SimulationConfig()  # one source for the defaults
    options = [
        click.option("--rows", type=int, help="about this many raw rows (sets --customers and --products)"),
        click.option("--customers", type=int, default=d.n_customers, show_default=True, help="number of customers"),
        click.option("--products", type=int, default=d.n_products, show_default=True, help="catalogue size"),
        click.option("--weeks", type=int, default=d.weeks, show_default=True, help="weeks of history"),
        click.option("--seed", type=int, default=d.seed, show_default=True,
                     help="random seed; same seed, same bytes"),
        click.option("--season-shift", type=float, default=d.season_shift_weeks_per_year, show_default=True,
                     metavar="WEEKS", help="changing seasonality: each category's peak moves this many weeks later "
                     "per year"),
        click.option("--season-growth", type=float, default=d.season_amplitude_change_per_year, show_default=True,
                     metavar="SHARE", help="changing seasonality: each category's seasonal amplitude grows by this "
                     "share per year, e.g. 0.25"),
        click.option("--start", default=d.start.isoformat(), show_default=True, callback=_date, metavar="YYYY-MM-DD",
                     help="first Monday"),
        click.option("--then", "then", multiple=True, metavar="WEEKS:SCENARIO", callback=_scenario_periods,
                     help="append a next period, e.g. 8:price_shock (repeatable); scenarios: none, new_product_mix, "
                     "price_shock, segment_growth"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _sim_config(o: dict[str, Any]) -> SimulationConfig:
    from training.data.world import SimulationConfig

    common = {"seed": o["seed"], "weeks": o["weeks"], "start": o["start"],
              "season_shift_weeks_per_year": o["season_shift"],
              "season_amplitude_change_per_year": o["season_growth"]}
    if o["rows"]:
        return SimulationConfig.for_rows(o["rows"], **common)
    return SimulationConfig(n_customers=o["customers"], n_products=o["products"], **common)


@click.group(context_settings=CONTEXT,
             help="Zero Margin MLOps: data, training, serving and monitoring of three retail models.",
             epilog="Settings: ZM_* environment variables (ZM_HOME, ZM_PROFILE, ...); see docs/quickstart.md.")
def cli() -> None:
    import logging

    from zmlops.settings import apply_telemetry_off

    apply_telemetry_off()
    logging.getLogger("mlflow").setLevel(logging.WARNING)


# ---------------------------------------------------------------- data
@cli.group(help="Simulate, snapshot, validate and fetch data versions.")
def data() -> None:
    pass


@data.command(help="Write simulated transactions and planted truth to a folder.")
@_simulation_options
@click.option("--out", type=PATH, required=True, help="output folder")
@DATA_FAILURES
def simulate(out: Path, **options: Any) -> int:
    from training.data.simulator import simulate as run
    from zmlops.console import week_progress

    with week_progress("simulating") as progress:
        result = run(_sim_config(options), out, options["then"], progress)
    console.print(f"{result.rows:,} rows in {result.seconds:.1f} s -> {result.transactions}")
    return 0


@data.command(help="Snapshot a source as a new data version, then validate it.")
@click.argument("source", default="simulator")
@click.option("--as-of", callback=_date, metavar="YYYY-MM-DD", help="extraction date of a file (default: newest "
              "invoice)")
@_simulation_options
@DATA_FAILURES
def ingest(source: str, as_of: dt.date | None, **options: Any) -> int:
    """SOURCE: 'simulator' (default) or a path to an Online Retail II file (.parquet, .csv, .xlsx)."""
    from training.data import ingest as versions
    from zmlops.console import week_progress

    settings = get_settings()
    with step("snapshot"):
        if source == "simulator":
            with week_progress("simulating") as progress:
                version = versions.snapshot_simulated(settings, _sim_config(options), options["then"], progress)
        else:
            version = versions.snapshot_file(settings, Path(source), as_of)
        console.print(f"   data version {version.name}: {version.meta['rows']:,} raw rows")
    return _validate(settings, version.name, force=False)


@data.command(help="Run the Great Expectations gate on a data version (VERSION: vN).")
@click.argument("version")
@click.option("--force", is_flag=True, help="validate again even if already good")
@DATA_FAILURES
def validate(version: str, force: bool) -> int:
    return _validate(get_settings(), version, force)


@data.command(name="versions", help="List data versions and their gate status.")
@DATA_FAILURES
def list_versions() -> int:
    from training.data import ingest as versions

    registry = versions.registry_for(get_settings())
    current = registry.current()
    table("data versions", ["version", "status", "source", "as of", "raw rows", "current"],
          [[v.name, v.status, v.meta.get("source"), v.meta.get("as_of"), v.meta.get("rows"),
            "*" if current and current.name == v.name else ""] for v in registry.versions()])
    return 0


@data.command(help="Write the exact bytes of a data version (vN, or 'latest' for the newest good one) to DEST.")
@click.argument("version")
@click.argument("dest", type=PATH)
@DATA_FAILURES
def fetch(version: str, dest: Path) -> int:
    from training.data import ingest as versions

    registry = versions.registry_for(get_settings())
    found = registry.resolve(version)
    registry.fetch(found, dest)
    console.print(f"{found.name} -> {dest}")
    return 0


@data.command(help="Clean one raw file (a dvc.yaml stage): writes clean.parquet and cleaning.json to --out.")
@click.argument("raw", type=PATH)
@click.option("--out", type=PATH, required=True, help="output folder")
@DATA_FAILURES
def clean(raw: Path, out: Path) -> int:
    import tempfile

    from training.data import ingest as versions

    settings = get_settings()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zm-read-", dir=out) as tmp:
        report = versions.cleaned(settings, versions.normalised(settings, raw, Path(tmp)), out / "clean.parquet")
    (out / "cleaning.json").write_text(json.dumps(report.to_dict(), indent=2))
    console.print("\n".join(report.lines()))
    return 0


@data.command(help="Run both suites on a raw file and its clean table (a dvc.yaml stage); one of --as-of and "
                   "--truth gives the extraction date.")
@click.argument("raw", type=PATH)
@click.argument("clean_table", metavar="CLEAN", type=PATH)
@click.option("--as-of", callback=_date, metavar="YYYY-MM-DD", help="extraction date")
@click.option("--truth", type=PATH, help="simulator truth.json: as-of is its last simulated day")
@click.option("--out", type=PATH, required=True, help="summary JSON (a DVC metric)")
@DATA_FAILURES
def check(raw: Path, clean_table: Path, as_of: dt.date | None, truth: Path | None, out: Path) -> int:
    import tempfile

    from training.data import ingest as versions
    from training.validation import SuiteContext, ValidationFailed

    if (as_of is None) == (truth is None):
        raise click.UsageError("give one of --as-of and --truth")
    settings = get_settings()
    as_of = as_of or dt.date.fromisoformat(json.loads(truth.read_text())["period"]["last_day"])  # type: ignore[union-attr]
    ctx = SuiteContext(settings.validation, as_of)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="zm-read-") as tmp:
            results.append(versions.check_raw(settings, versions.normalised(settings, raw, Path(tmp)), ctx, raw.stem))
        results.append(versions.check_clean(settings, clean_table, ctx, raw.stem))
    except ValidationFailed as failed:
        console.print(str(failed), markup=False)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({r.suite: {"evaluated": r.evaluated, "failed": len(r.failures), "rows": r.rows}
                               for r in results}, indent=2))
    for r in results:
        console.print("\n".join(r.summary_lines()), markup=False)
    return 0


# ---------------------------------------------------------------- features, training, models
@cli.command(help="Build the feature tables of a data version (vN, or 'current': the newest good one), apply "
                  "Feast, materialize.")
@click.argument("version", default="current")
@TRAINING_FAILURES
def features(version: str) -> int:
    from training.features.store import prepare_features

    settings = get_settings()
    with step(f"features of data version {version}"):
        marker = prepare_features(settings, version)
    table("feature tables", ["table", "rows", "newest cutoff"],
          [[k, v["rows"], v["newest"]] for k, v in marker["tables"].items()])
    console.print(f"online store loaded for {marker['materialized'][0]} .. {marker['materialized'][1]}")
    return 0


@cli.command(
    help="Train, evaluate, register, gate (staging) and deploy model families (FAMILY: any of "
    f"{', '.join(FAMILIES)}; default all).\n\nEach family is trained on a data version, the run logged to MLflow, "
    "the model registered as 'candidate', compared with 'production' on the same evaluation data, and 'staging' "
    "moved to it on a pass; then the deploy step (the training DAG's): approval where required (ZM_APPROVAL__*), "
    "the canary where a rollout serves the family, and only then 'production'. Repeating a call for the same "
    "data version, code and parameters reuses the registered version.")
@click.argument("families", nargs=-1, metavar="[FAMILY]...")
@click.option("--no-deploy", is_flag=True, help="stop at 'staging' (production unchanged)")
@click.option("--data-version", default="current", show_default=True, help="vN or 'current'")
@click.option("--reason", default="manual", show_default=True, help="why this run happens (recorded on the run and "
              "version)")
@click.option("--tune/--no-tune", default=None, help="run each family's Optuna study before the fit (default: "
              "ZM_TUNING__ENABLED); its budget is ZM_TUNING__BUDGET_SECONDS per family, its trials nested MLflow "
              "runs, its choice in the card")
@TRAINING_FAILURES
def train(families: tuple[str, ...], no_deploy: bool, data_version: str, reason: str, tune: bool | None) -> int:
    from delivery.promotion import deploy
    from training.families import get_family
    from training.run import train_family

    settings = get_settings()
    rows = []
    for name in families:
        get_family(name)  # refuse a typo before any training starts
    for name in families or FAMILIES:
        with step(f"train {name} on data version {data_version}"):
            o = train_family(settings, name, data_version, reason=reason, tune=tune)
        deployed = "-"
        if not no_deploy and o.decision == "staged":
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


@cli.command(help="Show registered versions and aliases; write model cards.")
@click.option("--cards", type=PATH, default=None, help="write model cards to this folder (one per model)")
@click.option("--alias", default="production", show_default=True, help="whose cards --cards writes: a registry "
              "alias, or 'latest' for the newest version whatever its gate decision")
@TRAINING_FAILURES
def models(cards: Path | None, alias: str) -> int:
    from training import tracking
    from training.run import write_production_cards

    settings = get_settings()
    rows = []
    for name in FAMILIES:
        aliases = {a: tracking.alias_version(settings, name, a) for a in tracking.ALIASES}
        rows.append([name, *[v or "-" for v in aliases.values()]])
    table("registered models (aliases -> version)", ["model", *tracking.ALIASES], rows)
    if cards:
        for path in write_production_cards(settings, cards, alias=alias):
            console.print(f"wrote {path}")
    return 0


@cli.command(help="Serve the analysts' Evidently UI over the monitoring workspace (docs/monitoring.md).\n\nRuns "
             "`evidently ui` over the workspace the monitoring checks write (ZM_HOME/evidently locally, <object "
             "store>/evidently in the k8s profile, copied to the pod's cache and refreshed; "
             "ZM_MONITORING__WORKSPACE_URL moves it), telemetry off. In the chart it listens on the pod's loopback "
             "behind HAProxy's basic auth.")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=int, default=8000, show_default=True, help="port")
@click.option("--refresh", type=float, default=60.0, show_default=True,
              help="seconds between copies of the object store's workspace (k8s profile)")
def ui(host: str, port: int, refresh: float) -> int:
    from monitoring.workspace import serve

    return serve(get_settings(), host, port, refresh)


@cli.command(help="Print the code version training records (the commit, -dirty-<hash> with uncommitted changes; an "
             "image's ZM_CODE_VERSION): the images' build argument.")
def version() -> int:
    from zmlops.version import code_version

    print(code_version())
    return 0


# ---------------------------------------------------------------- auth
@cli.group(name="auth", help="The predictors' API keys and the userlists of the Pushgateway and the analysts' UI.\n\n"
           "Keys are stored hashed: a predictor holds {name, sha256, scopes} entries (ZM_AUTH__API_KEYS, from a "
           "Secret); the client holds the key. Rotation: add the new entry beside the old, roll the predictors, move "
           "the clients, remove the old entry (docs/security.md).")
def auth_group() -> None:
    pass


@auth_group.command(name="new-key", help="Print a new key for NAME (who holds it, e.g. shop-frontend) and its "
                    "ZM_AUTH__API_KEYS entry (JSON).")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(auth.SCOPES),
              help="what it may do (repeatable; default predict)")
def new_key(name: str, scopes: tuple[str, ...]) -> int:
    key, entry = auth.new_key(name, scopes or ("predict",))
    print(f"key (give it to {name}; it is not stored anywhere): {key}")
    print(f"entry (add it to ZM_AUTH__API_KEYS): {json.dumps(entry)}")
    return 0


def _userlist(kind: str, users: tuple[str, ...], make: Callable[[dict[str, str]], str]) -> int:
    import secrets

    passwords = {user: secrets.token_urlsafe(24) for user in users}
    try:
        userlist = make(passwords)
    except ValueError as error:
        return _fail(str(error))
    for user, password in passwords.items():
        print(f"password of {user} (not stored anywhere): {password}")
    print(f"userlist (the Secret key {kind}):")
    print(userlist, end="")
    return 0


@auth_group.command(name="pushgateway-users", help="New passwords for USERS (e.g. monitoring prometheus) and the "
                    "Pushgateway's userlist (only bcrypt hashes) admitting them: the users named by --pusher may "
                    "push, the others only read (docs/security.md).")
@click.argument("users", nargs=-1, required=True)
@click.option("--pusher", "pushers", multiple=True, help="a user who may push (repeatable; default: monitoring)")
def pushgateway_users(users: tuple[str, ...], pushers: tuple[str, ...]) -> int:
    return _userlist("pushgateway-users", users,
                     lambda passwords: auth.pushgateway_users(passwords, pushers or ("monitoring",)))


@auth_group.command(name="analysts-users", help="New passwords for USERS (e.g. ana ben) and the userlist (only bcrypt "
                    "hashes) of the analysts' Evidently UI (docs/monitoring.md).")
@click.argument("users", nargs=-1, required=True)
def analysts_users(users: tuple[str, ...]) -> int:
    return _userlist("analysts-users", users, lambda passwords: auth.userlist("analysts", passwords))


# ---------------------------------------------------------------- audit
@cli.group(help="The audit trail: list, show, verify (tamper evidence), export.\n\nEvery data version, gate, "
           "approval, rollout step and workload start is an entry chained to the one before by its SHA-256 hash (in "
           "the state database: ZM_STATE_DB_URL, SQLite by default).")
def audit() -> None:
    pass


@audit.command(name="list", help="Entries, oldest first.")
@click.option("--action", "what", default=None, help="only these actions (e.g. 'model.*', 'rollout.promoted')")
@click.option("--subject", default=None, help="only these subjects (e.g. 'model:demand-forecast:*', 'data:v2')")
@click.option("--last", type=int, default=50, show_default=True, help="the newest N matching entries (0: all)")
def audit_list(what: str | None, subject: str | None, last: int) -> int:
    from governance import audit as trail

    found = trail.entries(get_settings(), what, subject)
    shown = found[-last:] if last else found
    table(f"audit trail ({len(shown)} of {len(found)} entries)", ["#", "time", "actor", "action", "subject", "why"],
          [[e.seq, e.created_at[:19], e.actor, e.action, e.subject, str(e.details.get("why", ""))[:70]]
           for e in shown])
    return 0


@audit.command(name="show", help="One entry in full (JSON); SEQ is its number.")
@click.argument("seq", type=int)
def audit_show(seq: int) -> int:
    from governance import audit as trail

    found = trail.entry(get_settings(), seq)
    if found is None:
        return _fail(f"no entry {seq}", "zm audit")
    print(json.dumps(found.to_dict(), indent=2))
    return 0


@audit.command(name="verify", help="Recompute the hash chain; exit 1 naming every broken entry.")
@click.option("--head", default=None, help="a head hash exported earlier: also detects deleted newest entries")
def audit_verify(head: str | None) -> int:
    from governance import audit as trail

    settings = get_settings()
    problems = trail.verify(settings, head)
    count, digest = trail.head(settings)
    if problems:
        for problem in problems:
            console.print(f"[red]broken[/] {problem}")
        console.print(f"{len(problems)} problem(s) in {count} entries")
        return 1
    console.print(f"audit trail intact: {count} entries, head {digest}")
    return 0


@audit.command(name="export", help="Every entry as JSON lines (stdout or --out), then the head hash on stderr.")
@click.option("--out", type=PATH, default=None, help="write to this file instead of stdout")
def audit_export(out: Path | None) -> int:
    from governance import audit as trail

    settings = get_settings()
    lines = "".join(json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in trail.entries(settings))
    if out:
        out.write_text(lines)
    else:
        sys.stdout.write(lines)
    count, digest = trail.head(settings)
    print(f"head {digest} ({count} entries)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- privacy
CUSTOMER = click.argument("customer_id", type=int, metavar="CUSTOMER_ID")


@cli.group(help="Customers' rights: consent, access (export), erasure, where they are (scan).\n\nThe consent register "
           "(governance.consent; the state database, keyed by the customer's pseudonym): profiling lets segmentation "
           "use a customer's behaviour, personalisation lets recommendations be computed for them. Training leaves "
           "out customers without the purpose; the predictors answer them as an unknown customer and log nothing "
           "that identifies them (docs/security.md).")
def privacy() -> None:
    pass


@privacy.command(name="consent", help="Record a customer's consent as it now stands (audited).")
@CUSTOMER
@click.option("--profiling", type=click.Choice(["yes", "no"]), required=True, help="may segmentation profile them?")
@click.option("--personalisation", type=click.Choice(["yes", "no"]), required=True,
              help="may recommendations be personalised for them?")
@click.option("--source", required=True, help="where the choice was made (web form, call centre, import)")
def privacy_consent(customer_id: int, profiling: str, personalisation: str, source: str) -> int:
    from governance import consent

    try:
        got = consent.record(get_settings(), customer_id, profiling == "yes", personalisation == "yes", source)
    except ValueError as error:
        return _fail(str(error), "zm privacy")
    print(f"customer {got.customer} (pseudonym): profiling {'yes' if got.profiling else 'no'}, "
          f"personalisation {'yes' if got.personalisation else 'no'} ({got.source}, by {got.actor})")
    return 0


@privacy.command(name="subject", help="The customer's audit subject hash: what a zmlops_privacy DAG run is given.\n\n"
                 "The keyed hash the audit trail and the erasure register name a customer by (governance/pseudonyms."
                 "py). Trigger the zmlops_privacy DAG (export, erase, scan) with it in Airflow's UI or REST API: "
                 "Airflow keeps a run's parameters where an erasure cannot reach, so the id never goes there "
                 "(docs/privacy.md).")
@CUSTOMER
def privacy_subject(customer_id: int) -> int:
    from governance import consent

    print(consent.subject_hash(get_settings(), customer_id))
    return 0


@privacy.group(name="rekey", help="Rotate the pseudonymisation key: start (old key set), roll out, finish.\n\nRewrites "
               "the stored keyed hashes (consent register, erasure register, request log) from the old key to the new "
               "one in two steps around the rollout of the new key, so every workload honours every choice on either "
               "key meanwhile (governance/rekey.py; the procedure: docs/privacy.md). The ids come from the retained "
               "data versions and --ids.")
def rekey() -> None:
    pass


def _rekey(step_name: str, key_file: Path, ids: Path | None) -> int:
    from governance import rekey as rotation

    settings = get_settings()
    more = [int(x) for x in ids.read_text().split()] if ids else []
    key = key_file.read_text().strip().encode()
    try:
        done = rotation.start(settings, key, more) if step_name == "start" else rotation.finish(settings, key, more)
    except (ValueError, LookupError, RuntimeError) as error:
        return _fail(str(error), "zm privacy rekey")
    print(json.dumps(done, indent=1))
    return 0


@rekey.command(name="start", help="With the old key in ZM_PSEUDONYMISATION_KEY: copy the rows under the new key.")
@click.option("--new-key-file", type=PATH, required=True, help="a file holding the new key (one line)")
@click.option("--ids", type=PATH, default=None, help="more customer ids, one per line (the customer master list: "
              "people with a consent record who never bought)")
def rekey_start(new_key_file: Path, ids: Path | None) -> int:
    return _rekey("start", new_key_file, ids)


@rekey.command(name="finish", help="With the new key rolled out: drop the old rows, rewrite the request log.")
@click.option("--old-key-file", type=PATH, required=True, help="a file holding the old key (one line)")
@click.option("--ids", type=PATH, default=None, help="the same extra ids as for start")
def rekey_finish(old_key_file: Path, ids: Path | None) -> int:
    return _rekey("finish", old_key_file, ids)


@privacy.command(name="history", help="Every consent record of a customer, oldest first.")
@CUSTOMER
def privacy_history(customer_id: int) -> int:
    from governance import consent

    settings = get_settings()
    rows = consent.history(settings, customer_id)
    table(f"consent of customer {consent.pseudonym(settings, customer_id)} ({len(rows)} records; none: "
          f"{'refused' if settings.privacy.consent_required else 'allowed'} by default)",
          ["time", "profiling", "personalisation", "source", "by"],
          [[c.at[:19], c.profiling, c.personalisation, c.source, c.actor] for c in rows])
    return 0


@privacy.command(name="export", help="The right of access: everything held about a customer, as one JSON file.\n\n"
                 "Transactions in every retained data version, offline and online features, the segment, the answers "
                 "served (request log, by pseudonym), the model versions trained on their data, and their consent "
                 "history (governance/access.py); audited.")
@CUSTOMER
@click.option("--out", type=PATH, required=True, help="the bundle's file (JSON)")
def privacy_export(customer_id: int, out: Path) -> int:
    from governance import consent
    from governance.access import export

    settings = get_settings()
    with step(f"export everything held about customer {consent.pseudonym(settings, customer_id)}"):
        summary = export(settings, customer_id, out)
    print(f"{out}: {json.dumps(summary)}")
    return 0


@privacy.command(name="scan", help="Search every store for a customer's id and pseudonym; print each hit.\n\nThe "
                 "object store (data versions, feature sources, request log, reports), the DVC remote and cache, the "
                 "state database, the online store, every model version's artifacts in MLflow and the local Airflow "
                 "logs (governance/scan.py).")
@CUSTOMER
@click.option("--json", "as_json", is_flag=True, help="print the hits as JSON")
def privacy_scan(customer_id: int, as_json: bool) -> int:
    from governance import consent
    from governance.scan import as_dicts, scan

    settings = get_settings()
    if as_json:  # nothing but the JSON on stdout
        hits, unread = scan(settings, customer_id)
        print(json.dumps({"hits": as_dicts(hits), "not_searched": unread}, indent=1))
        return 0
    with step(f"search every store for customer {consent.pseudonym(settings, customer_id)}"):
        hits, unread = scan(settings, customer_id)
    table(f"{len(hits)} hits ({len(unread)} binary files not searched)", ["store", "where", "what"],
          [[h.store, h.where, h.what] for h in hits])
    return 0


@privacy.command(name="erase", help="The right to erasure: remove a customer from every store (audited by a keyed "
                 "hash, never the id).\n\nA new data version without them (gated), features and online rows from it, "
                 "every earlier version holding them retired (DVC objects deleted from cache and remote), their "
                 "request-log rows and consent records deleted, the predictors told at once; models trained on their "
                 "data retrain when the monitoring DAG next runs, and its retention task then deletes the old "
                 "versions (governance/erasure.py). Check with 'zm privacy scan'.")
@CUSTOMER
@click.option("--reason", required=True, help="the request's reference (recorded)")
def privacy_erase(customer_id: int, reason: str) -> int:
    from governance import consent
    from governance.erasure import erase

    settings = get_settings()
    with step(f"erase customer {consent.audit_subject(settings, customer_id)} from every store"):
        try:
            done = erase(settings, customer_id, reason)
        except (ValueError, RuntimeError) as error:
            return _fail(str(error), "zm privacy")
    print(json.dumps(done, indent=1))
    return 0


# ---------------------------------------------------------------- rollout
@cli.group(help="Progressive delivery on the local stack: serve, deploy (canary), rollback, status, drills.\n\nModels "
           "served by KServe processes behind HAProxy on the public ports. 'deploy' runs the canary plan (settings "
           "ZM_ROLLOUT__*: steps, analysis windows, limits) and ends promoted or rolled back; 'rollback' sends all "
           "traffic back to the warm previous version (no MLflow needed). In the k8s profile deploy and rollback "
           "act on the InferenceService.")
def rollout() -> None:
    pass


@rollout.command(name="serve", help="Start HAProxy and serve a version (default: the production alias) as stable.")
@click.argument("model", type=MODEL)
@click.option("--version", "version_", default=None, help="registered version (default: the one behind "
              "'production')")
@ROLLOUT_FAILURES
def rollout_serve(model: str, version_: str | None) -> int:
    from delivery.controller import Rollout

    settings = get_settings()
    if version_ is None:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
        version_ = str(client.get_model_version_by_alias(model, "production").version)
    Rollout(settings).serve(model, version_)
    console.print(f"{model} v{version_} on http://{settings.serving.host}:{settings.serving.ports[model]}")
    return 0


@rollout.command(name="deploy", help="Canary VERSION of MODEL: 10% -> 50% -> 100%, analysed; promote or roll back.")
@click.argument("model", type=MODEL)
@click.argument("version_", metavar="VERSION")
@ROLLOUT_FAILURES
def rollout_deploy(model: str, version_: str) -> int:
    from delivery.controller import rollout_for

    return _outcome(model, rollout_for(get_settings()).deploy(model, version_), "promoted")


def _outcome(model: str, out: Any, wanted: str) -> int:
    """A rollout's outcome in one line; exit 0 when it ended as ``wanted``."""
    console.print(f"{model} v{out.version}: {out.result} after {out.seconds:.2f} s: {out.reason}")
    return 0 if out.result == wanted else 1


@rollout.command(name="rollback", help="All traffic back to the warm previous version, now.")
@click.argument("model", type=MODEL)
@click.option("--reason", default="manual rollback", show_default=True,
              help="recorded in the audit trail and on the version")
@ROLLOUT_FAILURES
def rollout_rollback(model: str, reason: str) -> int:
    from delivery.controller import rollout_for

    return _outcome(model, rollout_for(get_settings()).rollback(model, reason), "rolled_back")


@rollout.command(name="status", help="What serves each model, and the latest decisions.")
@ROLLOUT_FAILURES
def rollout_status() -> int:
    from delivery.controller import Rollout

    target = Rollout(get_settings())
    rows = []
    for family in FAMILIES:
        st = target.state(family)
        rows.append([family, f"v{st.stable.version} ({st.stable.slot})" if st.stable else "-",
                     f"v{st.previous.version} ({st.previous.slot})" if st.previous else "-"])
    table("rollout", ["model", "stable", "previous (warm)"], rows)
    for d in target.decisions()[-10:]:
        console.print(f"{d['time']} {d['model']} v{d['version']}: {d['what']} ({d['why']})")
    return 0


@rollout.command(name="stop", help="Stop the servers of a model (and HAProxy with the last one).")
@click.argument("model", type=MODEL)
@ROLLOUT_FAILURES
def rollout_stop(model: str) -> int:
    from delivery.controller import Rollout

    target = Rollout(get_settings())
    target.shutdown(model)
    if not any(target.state(f).stable for f in FAMILIES):
        target.backend.proxy.stop()
    return 0


@rollout.command(name="drills", help="Run the rollout drills under load and print their figures.")
@click.option("--rate", type=float, default=250.0, show_default=True, help="load in requests/s")
@click.option("--out", type=PATH, default=None, help="also write the figures as JSON here")
@ROLLOUT_FAILURES
def rollout_drills(rate: float, out: Path | None) -> int:
    from delivery.drills import prepare, run_drills

    drill_settings = prepare(get_settings().home.resolve(), say=console.print)
    figures = run_drills(drill_settings, rate=rate, say=console.print)
    console.print_json(json.dumps(figures))
    if out:
        out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


# ---------------------------------------------------------------- experiments
@cli.group(help="A/B tests of model versions: plan the sample, run one on simulated clicks.\n\nAn experiment splits "
           "customers (sticky, by pseudonym) between two model versions and judges click-through per customer with a "
           "group-sequential test that may be read daily (delivery/experiments.py, docs/experiments.md). 'plan' "
           "prints the sample the design needs before it starts; 'simulate' runs one on the simulator's clicks with "
           "a planted uplift, records the decision and its report, and with --deploy puts the winner into service "
           "through the promotion path.")
def experiment() -> None:
    pass


def _design_options(f: F) -> F:
    options = [
        click.option("--baseline-rate", type=float, default=0.05, show_default=True, help="the control's "
                     "click-through"),
        click.option("--effect", type=float, default=0.10, show_default=True,
                     help="smallest relative uplift worth detecting"),
        click.option("--alpha", type=float, default=0.05, show_default=True, help="two-sided"),
        click.option("--power", type=float, default=0.8, show_default=True),
        click.option("--looks", type=int, default=7, show_default=True, help="daily looks, at most 14"),
        click.option("--treatment-share", type=float, default=0.5, show_default=True, help="share of customers"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _variant_options(f: F) -> F:
    options = [
        click.argument("name"),
        click.option("--control", required=True, help="the control's model version"),
        click.option("--treatment", required=True, help="the treatment's model version"),
        click.option("--family", type=MODEL, default="product-recommendation", show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _design(name: str = "plan", control: str = "", treatment: str = "", family: str = "product-recommendation",
            **o: Any) -> Any:
    """The experiment's design from the options, or None after printing why it is not one."""
    from delivery import experiments as x

    try:
        return x.Design(name, family=family, variants={"control": control, "treatment": treatment},
                        split={"control": 1 - o["treatment_share"], "treatment": o["treatment_share"]},
                        baseline_rate=o["baseline_rate"], min_relative_effect=o["effect"], alpha=o["alpha"],
                        power=o["power"], looks=o["looks"])
    except ValueError as error:
        _fail(str(error), "zm experiment")
        return None


@experiment.command(name="plan", help="The sample per variant and the daily boundaries of a design.")
@_design_options
def experiment_plan(**options: Any) -> int:
    design = _design(**options)
    if design is None:
        return 2
    _print_plan(design)
    return 0


@experiment.command(name="simulate", help="One experiment on simulated clicks: looks, decision, report, audit. NAME "
                    "is its assignment salt and report name (used once).")
@_variant_options
@click.option("--uplift", type=float, default=0.10, show_default=True,
              help="planted relative click-through uplift of the treatment (the truth)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--deploy", is_flag=True, help="put the winner into service through the promotion path (approval, "
              "canary)")
@_design_options
def experiment_simulate(uplift: float, seed: int, deploy: bool, **options: Any) -> int:
    design = _design(**options)
    if design is None:
        return 2
    simulate_experiment(get_settings(), design, uplift, seed, deploy)
    return 0


@experiment.command(name="start", help="Register a running experiment: the predictors route its customers from "
                    "their next poll. NAME is its assignment salt and report name (used once).")
@_variant_options
@_design_options
def experiment_start(**options: Any) -> int:
    from delivery import experiments as x

    design = _design(**options)
    if design is None:
        return 2
    try:
        planned = x.start(get_settings(), design)
    except ValueError as error:
        return _fail(str(error), "zm experiment")
    console.print(f"experiment {design.name} running on {design.family}: v{design.variants['control']} (control) vs "
                  f"v{design.variants['treatment']} (treatment), up to {planned.per_variant['control']:,} "
                  f"customers each, {design.looks} daily looks (`zm experiment analyse {design.name}` each day)")
    return 0


@experiment.command(name="analyse", help="Today's look at a running experiment, from the request and event logs.")
@click.argument("name")
@click.option("--deploy", is_flag=True, help="once decided, put the winner into service through the promotion path "
              "(approval, canary)")
def experiment_analyse(name: str, deploy: bool) -> int:
    from delivery import experiments as x

    settings = get_settings()
    try:
        analysis = x.analyse_running(settings, name)
    except LookupError as error:
        return _fail(str(error.args[0]), "zm experiment")
    _print_looks(analysis)
    for variant, read in analysis.guardrails.items():
        console.print(f"guardrails, {variant}: " + ", ".join(f"{k} {v:.4g}" for k, v in read.items()))
    for note in analysis.notes:
        console.print(note)
    console.print(f"decision: {analysis.decision.upper()}: {analysis.reason}")
    if deploy and analysis.decision != "continue":
        with step("carry out the decision through the promotion path"):
            console.print(f"   {json.dumps(x.carry_out(settings, analysis), default=str)}")
    return 0


@experiment.command(name="shadow", help="The shadow version's answers against production's (serving.shadow_alias).")
@click.argument("model", type=MODEL)
@click.option("--since", default=None, help="only mirrored requests after this ISO time")
def experiment_shadow(model: str, since: str | None) -> int:
    from delivery import experiments as x

    found = x.shadow_report(get_settings(), model, since)
    table(f"{model}: shadow traffic", ["production", "shadow", "requests", "agreement", "in full agreement",
                                       "errors", "p50 / p99 production", "p50 / p99 shadow"],
          [[",".join(r["production"]), r["shadow"], r["requests"], f"{r['agreement']:.3f}",
            f"{r['full_agreement_share']:.1%}", f"{r['errors']} ({r['error_rate']:.1%})",
            f"{r['production_p50_ms']:.2f} / {r['production_p99_ms']:.2f} ms",
            f"{r['shadow_p50_ms']:.2f} / {r['shadow_p99_ms']:.2f} ms"] for r in found])
    print(json.dumps(found))
    return 0 if found else 1


# ---------------------------------------------------------------- printing
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
    """The ``zm`` entry point: the command's exit code (usage errors: Click's message on stderr and SystemExit 2)."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="zm", standalone_mode=False)
    except click.ClickException as error:
        error.show()
        raise SystemExit(error.exit_code) from None
    except click.Abort:
        print("zm: aborted", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
