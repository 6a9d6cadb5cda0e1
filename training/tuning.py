"""Hyper-parameter tuning with Optuna, the same way for every family that declares a search space.

A family (:mod:`training.families`) names its ``search_space`` (an Optuna trial -> estimator parameters) and its
``tuning_folds`` (the primary metric of a parameter set on each backtest fold, computed on the training part
only, never on the weeks the gate evaluates). One study per family and data version, named
``<family>/<data version>``, lives in the RDB storage ``settings.tuning_storage`` (the state database: SQLite
locally, PostgreSQL in the k8s profile). Its first trial is the family's defaults, so the study measures what
tuning bought; the best parameters of the family's newest earlier study come second (the weekly retrain
warm-starts from them). TPE samples the rest (random for the first ``tuning.startup_trials``); a trial whose
running mean over the folds falls below the median of earlier trials at the same fold is pruned. Every trial is
a nested MLflow run under the training run (optuna-integration's ``MLflowCallback``). The study stops at
``tuning.budget_seconds`` or ``tuning.max_trials``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from zmlops.settings import Settings

__all__ = ["TuningResult", "NothingCompleted", "tune", "study_name", "encode"]

log = logging.getLogger(__name__)


class NothingCompleted(RuntimeError):
    """No trial of the study completed (every one pruned or failed, or the budget ran out first)."""


def study_name(family: str, data_version: str) -> str:
    return f"{family}/{data_version}"


def encode(value: Any) -> Any:
    """A parameter value as an Optuna choice (bool, int, float, str or None): sequences join with commas."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(str(v) for v in value)
    return value


@dataclass
class TuningResult:
    """What one study found, as the card, the registered version's tags and the CLI report it."""

    study: str
    metric: str
    greater_is_better: bool
    params: dict[str, Any]  # the best trial's estimator parameters (the searched ones)
    best: float
    default: float | None  # the defaults' value (the study's first trial); None when it did not complete
    trials: dict[str, int]  # complete, pruned, fail
    seconds: float
    budget_seconds: float
    warm_start: str | None = None  # the earlier study whose best parameters were tried second
    history: list[float] = field(default_factory=list)  # the best value after each completed trial
    worst: float | None = None  # the worst completed trial's value

    @property
    def change(self) -> float | None:
        """Relative improvement of the best over the defaults (positive: better), or None."""
        if self.default is None or not self.default:
            return None
        gain = (self.best - self.default) / abs(self.default)
        return gain if self.greater_is_better else -gain

    def improved(self) -> bool:
        return (self.change or 0.0) > 1e-9

    def tags(self) -> dict[str, str]:
        import json

        return {"tuning.study": self.study, "tuning.params": json.dumps(self.params, sort_keys=True, default=str),
                "tuning.best": f"{self.best:.6g}", "tuning.default": "" if self.default is None else
                f"{self.default:.6g}", "tuning.trials": json.dumps(self.trials, sort_keys=True)}

    def card_lines(self) -> list[str]:
        n = sum(self.trials.values())
        lines = [f"Optuna study `{self.study}` (TPE, median pruning on the tuning folds of the training part): "
                 f"{n} trials in {self.seconds:.0f} s of a {self.budget_seconds:.0f} s budget "
                 f"({self.trials.get('complete', 0)} complete, {self.trials.get('pruned', 0)} pruned, "
                 f"{self.trials.get('fail', 0)} failed)"
                 + (f"; warm-started from `{self.warm_start}`" if self.warm_start else "") + ".", ""]
        if self.default is None:
            lines.append(f"The defaults did not complete a trial; the best {self.metric} is {self.best:.4f}.")
        elif self.improved():
            lines.append(f"Tuning improved the tuning folds' {self.metric} from {self.default:.4f} (the defaults) to "
                         f"{self.best:.4f} ({self.change:+.1%}).")
        elif self.worst is not None and abs(self.worst - self.best) <= 1e-12:
            lines.append(f"Every completed trial scored the same {self.metric} ({self.best:.4f}) on the tuning "
                         "folds: on this data the searched parameters do not change the model, so the defaults "
                         "are kept.")
        else:
            lines.append(f"No trial beat the defaults' {self.metric} of {self.default:.4f} on the tuning folds, so "
                         "the defaults are kept: the family's own choice (made inside every fit) already covers "
                         "what the search space varies.")
        lines += ["", "| parameter | chosen |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(self.params.items())]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _storage(settings: Settings) -> Any:
    import optuna

    url = settings.tuning_storage
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}  # the families of one run may tune at the same time
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _previous(storage: Any, family: str, current: str) -> tuple[str, dict[str, Any]] | None:
    """The family's newest other study with a completed trial: its name and best parameters."""
    import optuna

    studies = [s for s in optuna.get_all_study_summaries(storage, include_best_trial=True)
               if s.study_name.startswith(f"{family}/") and s.study_name != current and s.best_trial is not None]
    if not studies:
        return None
    newest = max(studies, key=lambda s: s.datetime_start or dt.datetime.min)
    return newest.study_name, dict(newest.best_trial.params)  # type: ignore[union-attr]


def tune(
    settings: Settings,
    family: Any,
    data: Any,
    data_version: str,
    defaults: Mapping[str, Any],
    *,
    experiment_id: str | None = None,
    budget_seconds: float | None = None,
    max_trials: int | None = None,
    say: Callable[[str], None] = print,
) -> TuningResult:
    """Run (or continue) the family's study for ``data_version``; returns the best parameters and the figures.

    ``defaults`` are the parameters training would use without tuning: the study's first trial."""
    import optuna
    from optuna.trial import TrialState

    if family.search_space is None or family.tuning_folds is None:
        raise ValueError(f"{family.name} declares no search space")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = settings.tuning
    budget = cfg.budget_seconds if budget_seconds is None else budget_seconds
    limit = cfg.max_trials if max_trials is None else max_trials
    name = study_name(family.name, data_version)
    storage = _storage(settings)
    study = optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True,
        direction="maximize" if family.greater_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=cfg.startup_trials),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=0),
    )
    study.set_user_attr("family", family.name)
    study.set_user_attr("data_version", data_version)
    before = len(study.trials)
    searched = _searched_names(family)
    first = {k: encode(v) for k, v in defaults.items() if k in searched}
    study.enqueue_trial(first, skip_if_exists=True)
    warm = _previous(storage, family.name, name)
    if warm is not None:
        study.enqueue_trial(warm[1], skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        params = {**defaults, **family.search_space(trial)}
        for done in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if done.params == trial.params:  # TPE proposes a point again (small categorical spaces): same folds
                trial.set_user_attr("repeats", done.number)
                return float(done.value)  # type: ignore[arg-type]
        scores: list[float] = []
        for step, score in enumerate(family.tuning_folds(data, params)):
            if not math.isfinite(score):
                raise optuna.TrialPruned(f"fold {step}: {score}")
            scores.append(score)
            trial.report(sum(scores) / len(scores), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        if not scores:  # the history is too short for a single tuning fold
            raise optuna.TrialPruned("no tuning fold")
        return sum(scores) / len(scores)

    history: list[float] = []

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = study.best_value if done else float("nan")
        if trial.state == TrialState.COMPLETE:
            history.append(best)
        if trial.state == TrialState.COMPLETE:
            value = f"{trial.value:.4f}" + (f" (as trial {trial.user_attrs['repeats']})"
                                            if "repeats" in trial.user_attrs else "")
        elif trial.state == TrialState.PRUNED and trial.intermediate_values:
            step = max(trial.intermediate_values)
            value = f"pruned after fold {step + 1} ({trial.intermediate_values[step]:.4f})"
        else:
            value = trial.state.name.lower()
        say(f"  {family.name} trial {trial.number}: {family.primary_metric} {value} (best {best:.4f}) "
            + " ".join(f"{k}={v}" for k, v in sorted(trial.params.items())))

    callbacks: list[Any] = [progress]
    if experiment_id is not None:
        from optuna_integration.mlflow import MLflowCallback

        callbacks.append(MLflowCallback(
            tracking_uri=settings.tracking_uri, metric_name=family.primary_metric, create_experiment=False,
            mlflow_kwargs={"nested": True, "experiment_id": experiment_id}))
    started = time.monotonic()
    say(f"{family.name}: tuning ({name}, budget {budget:.0f} s, at most {limit} trials)")
    with _quiet_mlflow():
        study.optimize(objective, n_trials=limit, timeout=budget, callbacks=callbacks, catch=(ValueError,),
                       gc_after_trial=False)
    seconds = time.monotonic() - started
    trials = study.trials
    ran = trials[before:]
    counts = {s: sum(t.state.name.lower() == s for t in ran) for s in ("complete", "pruned", "fail")}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise NothingCompleted(f"{name}: no trial completed within {budget:.0f} s "
                               f"({sum(counts.values())} tried: {counts})")
    # the defaults' trial: its parameters are the defaults' of the branch it took (the others are never suggested)
    default_trial = next((t for t in trials if (first and t.params and t.params.items() <= first.items())
                          or (not first and t.number == 0)), None)
    default = default_trial.value if default_trial is not None and default_trial.state == TrialState.COMPLETE \
        else None
    best = study.best_trial
    values = [float(t.value) for t in complete if t.value is not None]
    worst = min(values) if family.greater_is_better else max(values)
    params = family.search_space(optuna.trial.FixedTrial(best.params))
    return TuningResult(name, family.primary_metric, family.greater_is_better, params, float(study.best_value),
                        None if default is None else float(default), counts, round(seconds, 1), budget,
                        warm[0] if warm else None, history, worst)


def _searched_names(family: Any) -> set[str]:
    """The Optuna parameter names the family's search space suggests in any of its branches (asked of recording
    trials: pass ``i`` takes every categorical's ``i``-th choice, so a space that branches on a choice, such as
    the recommender's kind, shows each branch's names)."""
    names: set[str] = set()
    widest = 1

    class _Recorder:
        def __init__(self, turn: int) -> None:
            self.turn = turn

        def __getattr__(self, attr: str) -> Callable[..., Any]:
            if not attr.startswith("suggest_"):
                raise AttributeError(attr)

            def suggest(name: str, *args: Any, **kwargs: Any) -> Any:
                nonlocal widest
                names.add(name)
                if attr == "suggest_categorical":
                    choices = list(args[0] if args else kwargs["choices"])
                    widest = max(widest, len(choices))
                    return choices[self.turn % len(choices)]
                return args[0] if args else kwargs["low"]

            return suggest

    turn = 0
    while turn < widest:
        family.search_space(_Recorder(turn))
        turn += 1
    return names


class _quiet_mlflow:
    """MLflow prints a line per run it ends ("View run ... at ..."); a study would print hundreds."""

    def __enter__(self) -> None:
        self._level = logging.getLogger("mlflow").level
        logging.getLogger("mlflow").setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("mlflow").setLevel(self._level)
