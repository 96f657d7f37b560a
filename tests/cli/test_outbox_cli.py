"""``scribe outbox list|show|retry`` and ``scribe deliver`` on a real store (directory target)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribe.cli import main
from scribe.fhir.outbox import Outbox
from scribe.models import Consent, DeliveryState, Note, Section, Sentence
from scribe.config import Settings
from scribe.store import Store
from scribe.database import open_store


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _sign(data_dir: Path) -> str:
    store = open_store(Settings())  # the CLI's store (SCRIBE_DATA_DIR): the signed note is encrypted
    store.open_encounter("enc-9", clinician_id="dr-lee", patient_ref="Patient/p9", language="en",
                         sample_rate=16000, consent=Consent(given=True))
    outbox = Outbox(store)  # no EHR configured: the directory target
    outbox.sign(Note(encounter_id="enc-9", sections=[Section(key="plan", title="Plan", sentences=[
        Sentence(id="s1", text="Rest.", clinician_authored=True)])]), "dr-lee")
    [d] = outbox.deliveries()
    store.close()
    assert d.target == "directory"
    return d.id


def test_list_deliver_show_and_retry(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    did = _sign(data_dir)
    assert main(["outbox", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["state"]) for r in rows] == [(did, "queued")]

    assert main(["deliver"]) == 0
    assert "processed 1 deliveries; 0 still pending, 0 failed" in capsys.readouterr().out
    written = data_dir / "fhir" / "enc-9" / "note-v1.DocumentReference.json"
    assert json.loads(written.read_text())["resourceType"] == "DocumentReference"

    assert main(["outbox", "show", did]) == 0
    out = capsys.readouterr().out
    assert "delivered" in out and "claimed" in out and str(written) in out.replace("\n", "")

    assert main(["outbox", "retry", did]) == 2  # already delivered: a one-line user error
    assert "already delivered" in capsys.readouterr().err
    assert main(["outbox", "show", "dlv-nope"]) == 2


def test_retry_requeues_a_failed_delivery(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    did = _sign(data_dir)
    store = Store(data_dir / "scribe.db")
    Outbox(store).mark_failed(did, "the FHIR server rejected the request as invalid (HTTP 400)")
    store.close()
    assert main(["outbox", "list", "--state", "failed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["error"].endswith("(HTTP 400)")
    assert main(["outbox", "retry", did]) == 0
    store = Store(data_dir / "scribe.db")
    assert Outbox(store).delivery(did).state == DeliveryState.queued
    store.close()
