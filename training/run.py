"""Training steps for one data version, in the order the training DAG runs them.

``prepare_features`` (features built, Feast applied and materialized; defined in :mod:`training.features.store`,
so the features step's process does not import this module) runs once per data version; ``train_family`` then
trains, evaluates, registers and gates one family, moving ``staging`` on a pass (``production`` moves later, in
the deploy step). Both are idempotent: repeating them for the same data version, code and parameters returns what
the first call produced.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from governance import audit
from training import tracking
from training.cards import model_card
from training.data import ingest
from training.data.versions import VersionNotFound
from training.families import get_family
from training.features import store
from training.features.store import prepare_features
from zmlops.settings import Settings
from zmlops.stores import object_store
from zmlops.version import UNKNOWN_CODE, code_version

__all__ = ["train_family", "TrainOutcome", "write_production_cards"]


@dataclass
class TrainOutcome:
    family: str
    version: str
    data_version: str
    decision: str
    reason: str
    primary_metric: str
    metric: float
    baseline: float
    champion: float | None
    champion_version: str | None
    reused: bool = False
    # wall seconds of the training's phases (training set, choice, tuning, fit, evaluation); empty when reused
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trained_on_retired(settings: Settings, family: str, version: str) -> str | None:
    """The data version this registered version was trained on, if an erasure retired it (governance.erasure)."""
    data = tracking.client(settings).get_model_version(family, version).tags.get("data_version")
    if not data:
        return None
    try:
        return data if ingest.registry_for(settings).get(data).status == "retired" else None
    except VersionNotFound:
        return None


def _fingerprint(name: str, data_version: str, sha: str, code: str, params: dict[str, Any]) -> str:
    blob = json.dumps([name, data_version, sha, code, params], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def train_family(
    settings: Settings,
    name: str,
    data_version: str = "current",
    reason: str = "scheduled",
    params: dict[str, Any] | None = None,
    tune: bool | None = None,
) -> TrainOutcome:
    """Train, evaluate, register (``candidate``), gate against ``production``, ``staging`` on a pass.

    ``tune`` (default ``settings.tuning.enabled``) runs the family's Optuna study first (training/tuning.py);
    explicit ``params`` still win over what it chose."""
    family = get_family(name)
    tune = (settings.tuning.enabled if tune is None else tune) and family.search_space is not None
    version = ingest.registry_for(settings).resolve(data_version)
    published = store.published_version(settings)
    if published is None or published["data_version"] != version.name:
        prepare_features(settings, version.name)
    clean_file = ingest.clean_file(settings, version.name)
    sha = version.files.get(version.transactions_file, "")
    code = code_version()
    tuning_key = {"tuning": [settings.tuning.budget_seconds, settings.tuning.max_trials]} if tune else {}
    fingerprint = _fingerprint(name, version.name, sha, code, {**(params or {}), **tuning_key})
    # an unknown code version proves nothing: two different builds would share the fingerprint, so no reuse
    done = None if code == UNKNOWN_CODE else tracking.existing_version(settings, name, fingerprint)
    if done is not None:
        tags = tracking.client(settings).get_model_version(name, done.version).tags
        champion_tag = tags.get("gate.champion")
        return TrainOutcome(
            name,
            done.version,
            version.name,
            tags.get("gate.decision", "unknown"),
            tags.get("gate.reason", ""),
            family.primary_metric,
            float(tags.get("gate.challenger", "nan")),
            float(tags.get("gate.baseline", "nan")),
            None if champion_tag is None else float(champion_tag),
            tags.get("gate.champion_version"),
            reused=True,
        )

    seconds: dict[str, float] = {}

    @contextmanager
    def phase(what: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        seconds[what] = round(time.perf_counter() - started, 3)

    with phase("training_set"):
        data = family.training_data(settings, clean_file, version.name)
    # tuning's trials nest under the training run; the family's session spans tuning, fit and evaluation
    with tracking.training_run(settings, name, version.name), family.session():
        with phase("choice"):
            chosen = family.tune(data) if family.tune else {}
        tuned, skipped = None, ""
        if tune:
            from training import tuning

            defaults = {**family.make_estimator().get_params(), **chosen}
            try:
                with phase("tuning"):
                    tuned = tuning.tune(settings, family, data, version.name, defaults,
                                        experiment_id=tracking.experiment_id(settings, name))
                chosen = {**chosen, **tuned.params}
            except tuning.NothingCompleted as why:  # e.g. too little history for a tuning fold: the defaults
                skipped = str(why)
        with phase("fit"):
            estimator = family.fit(family.make_estimator(**{**chosen, **(params or {})}), data)
        with phase("evaluation"):
            evaluation = family.evaluate(estimator, data)
        if tuned is not None:
            evaluation.sections["Hyper-parameter tuning"] = tuned.card_lines()
        elif skipped:
            evaluation.sections["Hyper-parameter tuning"] = [f"Tuning was asked for and skipped: {skipped}; the "
                                                              "defaults are used."]
        model = _log(settings, family, version, sha, code, data, estimator, evaluation, reason, fingerprint,
                     {**(tuned.tags() if tuned is not None else {}), "seconds": json.dumps(seconds)})
    outcome = _gate_and_card(settings, family, version, sha, code, data, estimator, evaluation, reason, model)
    outcome.seconds = seconds
    return outcome


def _log(settings: Settings, family: Any, version: Any, sha: str, code: str, data: Any, estimator: Any,
         evaluation: Any, reason: str, fingerprint: str, extra_tags: dict[str, str]) -> tracking.RegisteredModel:
    """The training run's parameters, metrics, tags and model, registered as ``candidate``."""
    name = family.name
    features = store.service_features(settings, family.feature_service)
    tags = {
        "data_version": version.name,
        "data_sha256": sha,
        "data_source": str(version.meta.get("source")),
        "feature_service": family.feature_service,
        "features": json.dumps(features),
        "feature_cutoff": data.as_of.isoformat(),
        "code_version": code,
        "lock_hash": tracking.lock_hash(),
        "reason": reason,
        **extra_tags,
    }
    if "consent_excluded" in data.extra:  # customers left out of the training set for want of consent
        tags["consent_excluded"] = str(data.extra["consent_excluded"])
    metrics = {**evaluation.metrics, **{f"baseline_{k}": v for k, v in evaluation.baseline.items()}}
    example = family.input_example(data)
    model = tracking.log_training_run(
        settings,
        name,
        estimator=estimator,
        wrapper=family.wrapper,
        params=estimator.get_params(),
        metrics=metrics,
        tags=tags,
        texts={"evaluation.json": json.dumps(asdict(evaluation), indent=2)},
        input_example=example,
        fingerprint=fingerprint,
    )
    tracking.set_alias(settings, name, "candidate", model.version)
    return model


def _gate_and_card(settings: Settings, family: Any, version: Any, sha: str, code: str, data: Any, estimator: Any,
                   evaluation: Any, reason: str, model: tracking.RegisteredModel) -> TrainOutcome:
    """Champion / challenger on the same evaluation data; ``staging`` on a pass; the model card."""
    name = family.name
    features = store.service_features(settings, family.feature_service)
    champion_version = tracking.alias_version(settings, name, "production")
    metric = evaluation.metrics[family.primary_metric]
    baseline = evaluation.baseline[family.primary_metric]
    champion: float | None = None
    # a champion trained on a data version an erasure retired may not stay: the challenger need only beat the baseline
    erased_champion = champion_version is not None and bool(trained_on_retired(settings, name, champion_version))
    if champion_version is not None and champion_version != model.version and not erased_champion:
        champ_est = tracking.load_estimator(settings, name, champion_version)
        if family.evaluation_refits and champ_est.get_params() == estimator.get_params():
            champion = metric  # same configuration on the same data: the evaluation would only repeat itself
        else:
            champion = family.evaluate(champ_est, data).metrics[family.primary_metric]
    failures = []
    if not family.beats_baseline(metric, baseline):
        failures.append(f"{family.primary_metric} {metric:.4f} does not beat the baseline {baseline:.4f}")
    if champion is not None and not family.better(metric, champion, family.tolerance):
        failures.append(
            f"{family.primary_metric} {metric:.4f} is worse than production v{champion_version} "
            f"({champion:.4f}) beyond {family.tolerance:.0%}"
        )
    if erased_champion and not failures:
        why_erased = f"production v{champion_version} was trained on data an erasure retired: not compared"
    else:
        why_erased = ""
    if failures:
        decision, why = "rejected", "; ".join(failures)
    else:
        decision = "staged"
        why = why_erased or (
            "first version"
            if champion is None
            else (f"{family.primary_metric} {metric:.4f} vs production v{champion_version} {champion:.4f}")
        )
    gate = {
        "decision": decision,
        "reason": why,
        "metric": family.primary_metric,
        "challenger": round(metric, 6),
        "baseline": round(baseline, 6),
        "champion": None if champion is None else round(champion, 6),
        "champion_version": champion_version,
        "tolerance": family.tolerance,
        "trigger": reason,
    }
    tracking.record_gate(settings, model, gate)
    if decision == "staged":  # production moves later, in the deploy step (approval, canary)
        tracking.stage(settings, model)
    audit.record(settings, "model.gated", audit.model_subject(name, model.version),
                 {"why": why, "decision": decision, "data_version": version.name, "run_id": model.run_id, **gate})

    card = model_card(
        family,
        version=model.version,
        run_id=model.run_id,
        data={
            "data_version": version.name,
            "source": version.meta.get("source"),
            "as_of": version.meta.get("as_of"),
            "rows": int(version.meta.get("rows", 0)),
            "sha256": sha,
            "feature_cutoff": data.as_of.isoformat(),
            "code_version": code,
            "lock_hash": tracking.lock_hash(),
        },
        features=features,
        params=estimator.get_params(),
        evaluation=evaluation,
        gate=gate,
    )
    c = tracking.client(settings)
    c.log_text(model.run_id, card, "model_card.md")
    c.update_model_version(name, model.version, description=card)
    object_store(settings).put(f"reports/model-cards/{name}-v{model.version}.md", card.encode())
    return TrainOutcome(
        name,
        model.version,
        version.name,
        decision,
        why,
        family.primary_metric,
        metric,
        baseline,
        champion,
        champion_version,
    )


def write_production_cards(settings: Settings, out: Path, alias: str = "production") -> list[Path]:
    """Copy the cards of the versions behind ``alias`` (or the ``latest`` versions) to ``out``."""
    from training.families import FAMILIES

    out.mkdir(parents=True, exist_ok=True)
    written = []
    c = tracking.client(settings)
    for name in FAMILIES:
        if alias == "latest":
            found = c.search_model_versions(f"name = '{name}'")
            version = str(max(int(v.version) for v in found)) if found else None
        else:
            version = tracking.alias_version(settings, name, alias)
        if version is None:
            continue
        card = c.get_model_version(name, version).description
        path = out / f"{name}.md"
        path.write_text(card)
        written.append(path)
    return written
