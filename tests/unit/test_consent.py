"""The consent register (SQLite here, PostgreSQL in the k8s profile through the same code): the latest record
wins, both regimes, pseudonyms only, every change audited; training leaves customers without consent out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from governance import audit, consent
from zmlops.settings import PrivacySettings, Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


def test_the_latest_record_of_each_customer_counts(settings: Settings) -> None:
    consent.record(settings, 101, profiling=True, personalisation=False, source="web form")
    consent.record(settings, 102, profiling=False, personalisation=False, source="call centre", actor="agent-7")
    consent.record(settings, 101, profiling=True, personalisation=True, source="web form")  # changed their mind
    p101, p102 = consent.pseudonym(settings, 101), consent.pseudonym(settings, 102)
    assert consent.withdrawn(settings, "personalisation") == {p102}
    assert consent.withdrawn(settings, "profiling") == {p102}
    assert consent.granted(settings, "personalisation") == {p101}
    # opt-out (default): no record means allowed; opt-in: only a grant does
    assert consent.allowed(settings, "profiling", [101, 102, 103]) == [True, False, True]
    opt_in = settings.model_copy(update={"privacy": PrivacySettings(consent_required=True)})
    assert consent.allowed(opt_in, "profiling", [101, 102, 103]) == [True, False, False]
    assert [(c.personalisation, c.source) for c in consent.history(settings, 101)] == [(False, "web form"),
                                                                                      (True, "web form")]
    with pytest.raises(ValueError, match="purpose"):
        consent.withdrawn(settings, "marketing")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source"):
        consent.record(settings, 101, True, True, source=" ")


def test_every_change_is_audited_by_pseudonym_never_by_id(settings: Settings) -> None:
    consent.record(settings, 4242, profiling=False, personalisation=True, source="import", actor="dpo")
    entries = [e for e in audit.entries(settings) if e.action == "consent.changed"]
    assert len(entries) == 1 and entries[0].actor == "dpo"
    assert entries[0].subject == consent.audit_subject(settings, 4242)
    assert consent.pseudonym(settings, 4242) not in repr(entries[0])  # not the request log's pseudonym either
    assert entries[0].details == {"profiling": False, "personalisation": True, "source": "import"}
    assert "4242" not in repr(entries[0])
    assert audit.verify(settings) == []


def test_training_sets_leave_out_customers_without_the_purpose(settings: Settings) -> None:
    from training.trainers import consenting

    frame = pd.DataFrame({"customer_id": [1, 1, 2, 3, 3, 3], "x": range(6)})
    consent.record(settings, 3, profiling=False, personalisation=True, source="web form")
    kept, left_out = consenting(settings, frame, "profiling")
    assert kept["customer_id"].tolist() == [1, 1, 2] and left_out == 1
    kept, left_out = consenting(settings, frame, "personalisation")
    assert len(kept) == 6 and left_out == 0


def test_the_command_records_and_shows_a_choice(settings: Settings, zm_command: Callable[[Path], None],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from zmlops.cli import main

    zm_command(settings.home)
    assert main(["privacy", "consent", "77", "--profiling", "no", "--personalisation", "yes",
                 "--source", "web form"]) == 0
    assert main(["privacy", "history", "77"]) == 0
    out = capsys.readouterr().out
    assert consent.pseudonym(settings, 77) in out and "web form" in out
    assert consent.withdrawn(settings, "profiling") == {consent.pseudonym(settings, 77)}
    assert main(["privacy", "consent", "77", "--profiling", "no", "--personalisation", "yes", "--source", ""]) == 2
    capsys.readouterr()
    assert main(["privacy", "subject", "77"]) == 0  # what a privacy DAG run is given: the audit trail's hash
    assert capsys.readouterr().out.strip() == consent.subject_hash(settings, 77) != consent.pseudonym(settings, 77)
