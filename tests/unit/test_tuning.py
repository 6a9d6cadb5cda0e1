"""training/tuning.py on a family with a known optimum: the defaults come first, TPE finds better, pruning stops
bad trials early, the study lives in the storage and the next data version's study starts from its best."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from training import tuning
from zmlops.settings import Settings, TuningSettings

pytestmark = pytest.mark.unit


def _family(calls: list[dict[str, Any]]) -> SimpleNamespace:
    """Greater is better; the optimum is x = 2, kind = "b"; the first of three folds already shows a bad x."""

    def space(trial: Any) -> dict[str, Any]:
        return {"x": trial.suggest_float("x", -5.0, 5.0), "kind": trial.suggest_categorical("kind", ["a", "b"])}

    def folds(data: Any, params: dict[str, Any]) -> Iterator[float]:
        calls.append(params)
        for fold in range(3):
            yield -(params["x"] - 2.0) ** 2 - (0.5 if params["kind"] == "a" else 0.0) - 0.01 * fold

    return SimpleNamespace(name="toy", primary_metric="score", greater_is_better=True, search_space=space,
                           tuning_folds=folds)


def _settings(tmp_path: Path, **tuning_args: Any) -> Settings:
    return Settings(home=tmp_path, tuning=TuningSettings(startup_trials=4, **tuning_args))


def test_the_defaults_come_first_and_the_search_beats_them(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    result = tuning.tune(_settings(tmp_path), _family(calls), None, "v1", {"x": 0.0, "kind": "a", "other": 7},
                         max_trials=40, budget_seconds=60, say=lambda _: None)
    assert calls[0] == {"x": 0.0, "kind": "a", "other": 7}  # trial 0: the defaults, unsearched ones passed through
    assert result.default == pytest.approx(-4.51)  # the mean over the three folds
    assert result.improved() and result.best > -1.0 and result.params["kind"] == "b"
    assert abs(result.params["x"] - 2.0) < 1.0 and set(result.params) == {"x", "kind"}
    assert sum(result.trials.values()) == 40 and result.trials["pruned"] > 0  # bad trials stop after a fold
    assert len(calls) < 40 * 3 and result.study == "toy/v1"
    assert result.history == sorted(result.history)  # the best so far never gets worse
    assert "from -4.5100 (the defaults)" in "\n".join(result.card_lines())
    tags = result.tags()
    assert tags["tuning.study"] == "toy/v1" and '"kind": "b"' in tags["tuning.params"]


def test_defaults_in_a_later_branch_of_the_space_are_the_first_trial(tmp_path: Path) -> None:
    """A space that branches on a choice (the recommender's kind: ALS, BM25 kNN or EASE, each with its own
    parameters): defaults in the last branch are trial 0 as given, not the branch's names sampled afresh."""
    calls: list[dict[str, Any]] = []

    def space(trial: Any) -> dict[str, Any]:
        kind = trial.suggest_categorical("kind", ["a", "b", "c"])
        if kind == "c":
            return {"kind": kind, "y": trial.suggest_float("y", 1.0, 1_000.0, log=True),
                    "h": trial.suggest_categorical("h", [0.0, 8.0, 16.0])}
        return {"kind": kind, "x": trial.suggest_float("x", -5.0, 5.0)}

    def folds(data: Any, params: dict[str, Any]) -> Iterator[float]:
        calls.append(params)
        yield -abs(params.get("y", 0.0) - 300.0)

    family = SimpleNamespace(name="branches", primary_metric="score", greater_is_better=True, search_space=space,
                             tuning_folds=folds)
    assert tuning._searched_names(family) == {"kind", "x", "y", "h"}
    result = tuning.tune(_settings(tmp_path), family, None, "v1", {"x": 0.0, "kind": "c", "y": 200.0, "h": 16.0},
                         max_trials=3, budget_seconds=60, say=lambda _: None)
    assert calls[0] == {"x": 0.0, "kind": "c", "y": 200.0, "h": 16.0}
    assert result.default == pytest.approx(-100.0)


def test_the_study_is_kept_and_the_next_version_starts_from_its_best(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = tuning.tune(settings, _family([]), None, "v1", {"x": 0.0, "kind": "a"}, max_trials=20,
                        budget_seconds=60, say=lambda _: None)
    storage = settings.tuning_storage
    assert storage.startswith("sqlite:///") and storage.endswith("state.db")  # the state database by default
    assert optuna.load_study(study_name="toy/v1", storage=storage).best_value == pytest.approx(first.best)
    calls: list[dict[str, Any]] = []
    second = tuning.tune(settings, _family(calls), None, "v2", {"x": 0.0, "kind": "a"}, max_trials=2,
                         budget_seconds=60, say=lambda _: None)
    assert second.warm_start == "toy/v1"
    assert calls[1] == {**first.params}  # after the defaults: the previous study's best
    assert second.best == pytest.approx(first.best)
    # continuing the same version's study adds trials to it, the defaults not tried twice
    again = tuning.tune(settings, _family(calls := []), None, "v2", {"x": 0.0, "kind": "a"}, max_trials=1,
                        budget_seconds=60, say=lambda _: None)
    assert sum(again.trials.values()) == 1 and calls[0] != {"x": 0.0, "kind": "a"}
    assert len(optuna.load_study(study_name="toy/v2", storage=storage).trials) == 3


def test_a_non_finite_fold_prunes_the_trial_and_nothing_completing_is_an_error(tmp_path: Path) -> None:
    family = _family([])
    family.tuning_folds = lambda data, params: iter([float("nan")])
    with pytest.raises(tuning.NothingCompleted, match="no trial completed"):
        tuning.tune(_settings(tmp_path), family, None, "v1", {"x": 0.0, "kind": "a"}, max_trials=3,
                    budget_seconds=60, say=lambda _: None)
    family.tuning_folds = lambda data, params: iter(())  # too little history for one fold: pruned, not a crash
    with pytest.raises(tuning.NothingCompleted, match="'pruned': 2"):
        tuning.tune(_settings(tmp_path), family, None, "v2", {"x": 0.0, "kind": "a"}, max_trials=2,
                    budget_seconds=60, say=lambda _: None)


def test_the_card_says_when_the_defaults_stay_best() -> None:
    result = tuning.TuningResult("f/v1", "silhouette", True, {"k_range": (2, 3)}, 0.5, 0.5,
                                 {"complete": 3, "pruned": 1, "fail": 0}, 12.0, 600.0)
    text = "\n".join(result.card_lines())
    assert not result.improved() and "No trial beat the defaults' silhouette of 0.5000" in text
    assert "4 trials in 12 s of a 600 s budget" in text
    flat = tuning.TuningResult("f/v1", "units_wape", False, {}, 0.39, 0.39, {"complete": 3}, 5.0, 600.0, worst=0.39)
    assert "Every completed trial scored the same units_wape (0.3900)" in "\n".join(flat.card_lines())
