"""The A/B test's statistics against planted truth: simulated experiments with a known click-through per variant.

Power and false-positive rates are estimated from many simulated experiments (binomial clicks per day and
variant, delivery.experiments deciding as it does for a real one); each assertion allows for the estimate's
own Monte Carlo error and nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from delivery import experiments as x
from training.data.clicks import ClickWorld, daily_counts, events

pytestmark = pytest.mark.unit

EXPERIMENTS = 20_000  # power's Monte Carlo error then 0.003: a plan 3% short of its sample fails


@pytest.fixture(scope="module")
def design_and_plan() -> tuple[x.Design, x.Plan]:
    design = x.Design("recs-v5-vs-v4", variants={"control": "4", "treatment": "5"}, baseline_rate=0.05,
                      min_relative_effect=0.10, alpha=0.05, power=0.8, looks=7)
    return design, x.plan(design)


def _decisions(design: x.Design, planned: x.Plan, uplift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    per_day = int(np.ceil(planned.total / design.looks))
    counts = daily_counts(ClickWorld.with_uplift(design.baseline_rate, uplift, per_day, design.looks, seed),
                          design.split, EXPERIMENTS)
    z = x.z_scores(counts["clicks"]["control"], counts["customers"]["control"], counts["clicks"]["treatment"],
                   counts["customers"]["treatment"])
    return x.first_crossing(z, planned.boundaries)


def test_the_plan_is_statsmodels_fixed_sample_inflated_for_seven_looks(
        design_and_plan: tuple[x.Design, x.Plan]) -> None:
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    design, planned = design_and_plan
    fixed = NormalIndPower().solve_power(proportion_effectsize(0.055, 0.05), alpha=0.05, power=0.8)
    assert planned.fixed_per_variant == {"control": int(np.ceil(fixed)), "treatment": int(np.ceil(fixed))}
    assert 1.02 < planned.inflation < 1.05  # O'Brien-Fleming spending costs little (about 3% for 7 looks)
    assert list(planned.boundaries) == sorted(planned.boundaries, reverse=True)
    assert planned.boundaries[0] > 5 and 1.96 < planned.boundaries[-1] < 2.1  # strict early, near 1.96 at the end
    assert x.spent(1.0, 0.05) == pytest.approx(0.05)


def test_daily_looks_at_an_a_a_experiment_keep_false_positives_at_alpha(
        design_and_plan: tuple[x.Design, x.Plan]) -> None:
    design, planned = design_and_plan
    look, _ = _decisions(design, planned, uplift=0.0, seed=1)
    rate = float((look >= 0).mean())
    assert rate <= design.alpha + 0.01, rate
    # the same data judged at 1.96 every day (peeking without a sequential design) would cry wolf three times as often
    per_day = int(np.ceil(planned.total / design.looks))
    counts = daily_counts(ClickWorld.with_uplift(0.05, 0.0, per_day, design.looks, 1), design.split, EXPERIMENTS)
    z = x.z_scores(counts["clicks"]["control"], counts["customers"]["control"], counts["clicks"]["treatment"],
                   counts["customers"]["treatment"])
    assert float((np.abs(z) >= 1.96).any(axis=1).mean()) > 2.5 * design.alpha


def test_a_planted_ten_percent_uplift_is_found_with_the_planned_power(
        design_and_plan: tuple[x.Design, x.Plan]) -> None:
    design, planned = design_and_plan
    look, sign = _decisions(design, planned, uplift=0.10, seed=2)
    shipped = (look >= 0) & (sign > 0)
    power = float(shipped.mean())
    error = float(np.sqrt(power * (1 - power) / EXPERIMENTS))
    assert power + 2 * error >= design.power, power  # not below the plan's 0.8 beyond the estimate's own error
    assert power < design.power + 0.05  # and the plan does not waste customers either
    assert float(((look >= 0) & (sign < 0)).mean()) < 0.001  # never shipped the other way round
    assert float(look[shipped].mean()) < design.looks - 1.5  # a real effect usually stops it before the last day


def test_a_52_48_split_at_the_planned_sample_is_a_sample_ratio_mismatch(
        design_and_plan: tuple[x.Design, x.Plan]) -> None:
    design, planned = design_and_plan
    total = planned.total
    skewed = x.sample_ratio({"control": round(total * 0.52), "treatment": round(total * 0.48)}, design.split)
    assert skewed["mismatch"] and skewed["p_value"] < 1e-10
    rng = np.random.default_rng(3)
    fair = [x.sample_ratio(dict(zip(("control", "treatment"), rng.multinomial(total, [0.5, 0.5]), strict=True)),
                           design.split)["mismatch"] for _ in range(2_000)]
    assert np.mean(fair) < 0.005  # a fair split is flagged at the check's own rate (0.001), give or take


def test_assignment_is_sticky_follows_the_split_and_differs_between_experiments() -> None:
    split = {"control": 0.3, "treatment": 0.7}
    people = [f"p{i}" for i in range(20_000)]
    first = [x.assign("exp-a", p, split) for p in people]
    assert first == [x.assign("exp-a", p, split) for p in people]
    assert abs(first.count("treatment") / len(people) - 0.7) < 0.015
    other = [x.assign("exp-b", p, split) for p in people]
    both = sum(a == b == "treatment" for a, b in zip(first, other, strict=True)) / len(people)
    assert abs(both - 0.49) < 0.015  # independent: 0.7 x 0.7


def test_one_experiment_from_its_events_ships_a_real_uplift_with_an_interval_around_the_truth(
        design_and_plan: tuple[x.Design, x.Plan]) -> None:
    design, planned = design_and_plan
    per_day = int(np.ceil(planned.total / design.looks))
    world = ClickWorld.with_uplift(0.05, 0.25, per_day, design.looks, seed=4)  # a large effect: it stops early
    table = events(world, lambda c: x.assign(design.name, f"customer-{c}", design.split))
    daily = x.daily_looks(table.assign(clicked_day=table["day"].where(table["clicked"])), design.looks)
    result = x.analyse(design, planned, daily)
    assert result.decision == "ship" and len(result.looks) < design.looks, result.reason
    last = result.looks[-1]
    truth = world.rates["treatment"] - world.rates["control"]
    assert last.ci[0] <= truth <= last.ci[1] and last.ci[0] > 0
    assert last.relative_ci[0] <= 0.25 <= last.relative_ci[1]
    assert not last.srm["mismatch"]
    stopped = x.analyse(design, planned, daily, guardrails={"treatment": {"error_rate": 0.05}})
    assert stopped.decision == "stop" and "guardrail" in stopped.reason


def test_zm_experiment_simulate_records_the_decision_and_its_page(
        tmp_path: Path, zm_command: Callable[..., None], capsys: pytest.CaptureFixture[str]) -> None:
    """The command a person runs: the plan, the daily looks, the decision in the audit trail and a report page that
    leads with it; a design that cannot be planned is a clear error."""
    from governance import audit
    from zmlops.cli import main
    from zmlops.settings import get_settings

    zm_command(tmp_path / "zm")
    assert main(["experiment", "simulate", "recs-big", "--control", "1", "--treatment", "2", "--uplift", "0.3",
                 "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "decision: SHIP" in out and "32,209" in out  # the planned sample per variant
    settings = get_settings()
    [decided] = audit.entries(settings, "experiment.decided", "experiment:recs-big")
    assert decided.details["decision"] == "ship" and decided.details["variants"] == {"control": "1", "treatment": "2"}
    page = (settings.home / "reports" / "experiments" / "recs-big.html").read_text()
    assert page.index("SHIP") < page.index("Plan (fixed before the start)") < page.index("<svg")
    assert main(["experiment", "plan", "--baseline-rate", "0.95", "--effect", "0.1"]) == 2
    assert "baseline_rate" in capsys.readouterr().err


def test_an_experiment_name_is_used_once_and_a_family_runs_one_at_a_time(tmp_path: Path) -> None:
    from zmlops.settings import Settings

    settings = Settings(home=tmp_path / "zm")
    design = x.Design("recs-a", variants={"control": "1", "treatment": "2"})
    x.start(settings, design)
    assert x.running(settings, "product-recommendation")["variants"] == {"control": "1", "treatment": "2"}  # type: ignore[index]
    assert x.running(settings, "customer-segmentation") is None
    with pytest.raises(ValueError, match="is running"):
        x.start(settings, x.Design("recs-b", variants={"control": "1", "treatment": "3"}))
    with pytest.raises(ValueError, match="used once"):
        x.start(settings, design)
    with pytest.raises(ValueError, match="model versions are required"):
        x.start(settings, x.Design("segs", family="customer-segmentation"))
    settings = settings.model_copy(update={"rollout": settings.rollout.model_copy(
        update={"prometheus_url": "http://127.0.0.1:9"})})  # nothing listens: the guardrails cannot be read
    empty = x.analyse_running(settings, "recs-a")  # no answers logged yet: nothing to look at, nothing decided
    assert empty.decision == "continue" and empty.looks == [] and empty.guardrails == {}
    assert empty.notes == ["guardrails not read: Prometheus at http://127.0.0.1:9: ConnectError: "
                           "[Errno 111] Connection refused"], empty.notes
    assert x.running(settings, "product-recommendation") is not None


def test_zm_experiment_start_analyse_and_shadow_from_the_logs(
        tmp_path: Path, zm_command: Callable[..., None], capsys: pytest.CaptureFixture[str]) -> None:
    """The commands over the logs the predictors write: a running experiment's look from the request log (the
    routed answers) and the event log (clicks on them), and the shadow report from the shadow log."""
    from inference_services.events import Event, records
    from inference_services.request_log import EVENTS, SHADOW, RequestLog
    from zmlops.cli import main
    from zmlops.settings import get_settings
    from zmlops.stores import object_store

    zm_command(tmp_path / "zm")
    assert main(["experiment", "start", "recs-cli", "--control", "1", "--treatment", "2"]) == 0
    assert main(["experiment", "start", "recs-cli", "--control", "1", "--treatment", "2"]) == 2  # used once
    settings = get_settings()
    key, store, cfg = settings.pseudonymisation_key.get_secret_value(), object_store(settings), settings.request_log
    family = "product-recommendation"
    answers, events = RequestLog(store, family, key, cfg), RequestLog(store, family, key, cfg, prefix=EVENTS)
    for customer in range(40):
        variant = x.assign("recs-cli", answers.pseudonymise(customer), {"control": 0.5, "treatment": 0.5})
        answers.append({"request_id": answers.request_id(f"r{customer}"), "model": family, "version": "1",
                        "rows": [{"customer": answers.pseudonymise(customer), "items": ["A"]}],
                        "experiment": "recs-cli", "variant": variant})
        if customer % 4 == 0:
            events.append(records([Event(type="click", request_id=f"r{customer}", customer_id=customer)], events,
                                  family))
    shadow = RequestLog(store, family, key, cfg, prefix=SHADOW)
    for agreement in (1.0, 0.5):
        shadow.append({"model": family, "version": "1", "shadow": "2", "row_count": 1, "agreement": agreement,
                       "error": None, "latency_ms": 1.0, "shadow_latency_ms": 2.0})
    for log in (answers, events, shadow):
        log.close()
    capsys.readouterr()
    assert main(["experiment", "analyse", "recs-cli"]) == 0
    out = capsys.readouterr().out
    assert "decision: CONTINUE" in out
    [look] = json.loads((settings.home / "experiments" / "recs-cli" / "analysis.json").read_text())["looks"]
    assert sum(look["customers"].values()) == 40 and sum(look["clicks"].values()) == 10
    assert main(["experiment", "shadow", family]) == 0
    [found] = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert found["requests"] == 2 and found["agreement"] == 0.75 and found["full_agreement_share"] == 0.5
