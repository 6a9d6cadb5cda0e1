"""Rotating the pseudonymisation key: every consent choice survives and is honoured on either key during the
rollout, the request log follows the new key, and no old pseudonym is left but in the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.request_rows import log_answers
from training.data.world import SimulationConfig
from zmlops.settings import Settings

pytestmark = pytest.mark.integration

NEW_KEY = "a-new-key-0123456789abcdef"


def _stored_text(settings: Settings) -> str:
    from sqlalchemy import select

    from zmlops.statedb import CONSENT, ERASURES, engine
    from zmlops.stores import object_store

    store = object_store(settings)
    with engine(settings).connect() as conn:
        rows = [str(dict(r)) for t in (CONSENT, ERASURES) for r in conn.execute(select(t)).mappings()]
    logs = [k for prefix in ("requests", "events") for k in store.keys(prefix)]
    assert any(k.startswith("events/") for k in logs)  # the event log is rewritten too
    return "".join(rows) + b"".join(store.get(k) or b"" for k in logs).decode()


def test_rotating_the_key_keeps_every_choice_and_leaves_no_old_pseudonym(
        tmp_path: Path, zm_command: Callable[[Path], None], capsys: pytest.CaptureFixture[str]) -> None:
    from governance import audit, consent
    from governance.access import customer_ids
    from training.data import ingest
    from zmlops.cli import main

    settings = Settings(home=tmp_path / "zm")
    ingest.snapshot_simulated(settings, SimulationConfig(seed=5, n_customers=60, n_products=60, weeks=10))
    a, b = sorted(customer_ids(settings))[:2]
    stranger = 999_999_999  # a consent record, no purchase: only the customer master list knows the id
    consent.record(settings, a, profiling=False, personalisation=True, source="web form")
    consent.record(settings, b, profiling=True, personalisation=False, source="call centre")
    consent.record(settings, stranger, profiling=False, personalisation=False, source="web form")
    log_answers(settings, "product-recommendation", (a, b), k=3)
    old_pseudonyms = [consent.pseudonym(settings, i) for i in (a, b, stranger)]
    (tmp_path / "new.key").write_text(NEW_KEY + "\n")
    (tmp_path / "old.key").write_text(settings.pseudonymisation_key.get_secret_value())
    (tmp_path / "ids.txt").write_text(f"{stranger}\n")

    zm_command(settings.home)
    assert main(["privacy", "rekey", "start", "--new-key-file", str(tmp_path / "new.key")]) == 2
    assert "1 customers in the consent register" in capsys.readouterr().err  # their choice would be lost
    assert main(["privacy", "rekey", "start", "--new-key-file", str(tmp_path / "new.key"),
                 "--ids", str(tmp_path / "ids.txt")]) == 0
    assert '"consent_records_copied": 3' in capsys.readouterr().out
    rotated = settings.model_copy(update={"pseudonymisation_key": SecretStr(NEW_KEY)})
    for either in (settings, rotated):  # workloads on the old key and those already rolled: the same answers
        assert consent.allowed(either, "profiling", [a, b, stranger]) == [False, True, False]
        assert consent.allowed(either, "personalisation", [a, b, stranger]) == [True, False, False]
    consent.record(settings, b, profiling=True, personalisation=True, source="app")  # a workload not yet rolled

    zm_command(settings.home, {"ZM_PSEUDONYMISATION_KEY": NEW_KEY})
    assert main(["privacy", "rekey", "finish", "--old-key-file", str(tmp_path / "old.key"),
                 "--ids", str(tmp_path / "ids.txt")]) == 0
    out = capsys.readouterr().out
    # the log rows: 2 answers and the 2 clicks on them
    for figure in ('"consent_records_dropped": 3', '"consent_records_moved": 1', '"log_rows_rekeyed": 4'):
        assert figure in out, out
    assert [c.source for c in consent.history(rotated, b)] == ["call centre", "app"]
    assert consent.allowed(rotated, "personalisation", [a, b, stranger]) == [True, True, False]
    text = _stored_text(settings)
    assert not [p for p in old_pseudonyms if p in text]
    assert all(consent.pseudonym(rotated, i) in text for i in (a, b, stranger))
    entries = audit.entries(settings, "privacy.rekey*")
    assert [e.action for e in entries] == ["privacy.rekey_started", "privacy.rekeyed"]
    assert all(NEW_KEY not in str(e.to_dict()) for e in entries)
