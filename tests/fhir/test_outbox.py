"""The durable outbox and the directory target (no FHIR server needed).

Real SQLite store on disk, real files; the clock is injected so retry schedules are checked
without sleeping.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference

from scribe.fhir.document import attachment_bytes, note_identifier
from scribe.fhir.errors import DeliveryError
from scribe.fhir.outbox import Outbox, OutboxWorker, SignRefused
from scribe.fhir.render import render_note
from scribe.fhir.targets import (
    DeliveryContext,
    DeliveryJob,
    DeliveryResult,
    DirectoryTarget,
    deliver_note_to_directory,
)
from scribe.models import (
    Consent,
    DeliveryState,
    Evidence,
    Flag,
    FlagKind,
    Note,
    Section,
    Sentence,
    SignedNote,
)
from scribe.store import Store

T0 = datetime(2024, 5, 1, 14, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_note(eid: str = "enc-1", text: str = "Patient reports a dry cough for three days.", **kw) -> Note:
    return Note(
        encounter_id=eid,
        sections=[
            Section(key="subjective", title="Subjective", sentences=[
                Sentence(id="s1", text=text, evidence=[Evidence(segment_id="seg-00000", start=0.0, end=2.0, quote=text)])
            ]),
            Section(key="plan", title="Plan", sentences=[Sentence(id="s2", text="Fluids and rest.", clinician_authored=True)]),
        ],
        **kw,
    )


def open_store(path: Path, eid: str = "enc-1") -> Store:
    store = Store(path)
    store.open_encounter(eid, clinician_id="dr-lee", patient_ref="Patient/p1", language="en", sample_rate=16000,
                         consent=Consent(given=True, method="verbal"))
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path):
    s = open_store(tmp_path / "scribe.db")
    yield s
    s.close()


class FlakyTarget:
    """A target that fails the way it is told, then delegates to a directory."""

    def __init__(self, inner: DirectoryTarget, failures: list[Exception]) -> None:
        self.inner, self.failures, self.name, self.calls = inner, failures, "directory", 0

    async def deliver(self, job: DeliveryJob) -> DeliveryResult:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return await self.inner.deliver(job)

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------- signing


def test_sign_refused_with_open_flags_and_nothing_recorded(store: Store) -> None:
    outbox = Outbox(store, targets=("directory",))
    note = make_note()
    note.sections[0].sentences[0].flags.append(Flag(kind=FlagKind.unsupported_number, message="3 days not said"))
    with pytest.raises(SignRefused, match="1 unresolved flag.*unsupported_number"):
        outbox.sign(note, "dr-lee")
    assert outbox.signed("enc-1") == [] and outbox.deliveries() == []
    note.sections[0].sentences[0].flags[0].resolved = True
    note.sections[0].sentences[0].flags[0].resolution = "accepted"
    assert outbox.sign(note, "dr-lee").version == 1


def test_sign_records_signature_and_queues_one_delivery_per_target(store: Store, clock: Clock) -> None:
    outbox = Outbox(store, targets=("fhir", "directory"), clock=clock)
    signed = outbox.sign(make_note(), "dr-lee")
    assert signed.id and signed.version == 1 and signed.signed_by == "dr-lee" and signed.signed_at == T0
    assert signed.content_hash and len(signed.content_hash) == 64
    rows = outbox.deliveries("enc-1")
    assert sorted(d.target for d in rows) == ["directory", "fhir"]
    assert all(d.state == DeliveryState.queued and d.signature_id == signed.id and d.version == 1 for d in rows)
    assert outbox.signed("enc-1") == [signed]


def test_sign_and_enqueue_are_one_transaction(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = Outbox(store, targets=("fhir", "directory"))
    calls = {"n": 0}
    real = outbox._ledger

    def failing_ledger(db, did, event, detail):
        calls["n"] += 1
        if calls["n"] == 2:  # after the signature and the first delivery row were inserted
            raise RuntimeError("disk full")
        real(db, did, event, detail)

    monkeypatch.setattr(outbox, "_ledger", failing_ledger)
    with pytest.raises(RuntimeError):
        outbox.sign(make_note(), "dr-lee")
    assert outbox.signed("enc-1") == [] and outbox.deliveries() == []


def test_double_sign_is_idempotent_and_different_content_needs_amend(store: Store) -> None:
    outbox = Outbox(store, targets=("directory",))
    first = outbox.sign(make_note(), "dr-lee")
    again = outbox.sign(make_note(), "dr-lee")  # new Note object, same content (other created_at)
    assert again == first
    assert len(outbox.deliveries()) == 1
    with pytest.raises(SignRefused, match="already signed.*amend"):
        outbox.sign(make_note(text="Patient reports a wet cough."), "dr-lee")
    amended = outbox.sign(make_note(text="Patient reports a wet cough."), "dr-lee", replaces=first.id)
    assert amended.version == 2 and amended.replaces == first.id
    assert len(outbox.deliveries()) == 2


def test_unknown_encounter_needs_context(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    outbox = Outbox(store, targets=("directory",))
    with pytest.raises(SignRefused, match="unknown to the store"):
        outbox.sign(make_note("enc-x"), "dr-lee")
    outbox.set_context("enc-x", patient="mrn:123", practitioner="Practitioner/dr", period_start=T0)
    assert outbox.sign(make_note("enc-x"), "dr-lee").version == 1
    store.close()


# --------------------------------------------------------------------------- directory target


async def test_directory_target_writes_valid_fhir_json_and_bundle(store: Store, tmp_path: Path) -> None:
    outbox = Outbox(store, targets=("directory",))
    out = tmp_path / "fhir"
    worker = OutboxWorker(outbox, {"directory": DirectoryTarget(out, bundle=True)})
    note = make_note()
    signed = outbox.sign(note, "dr-lee")
    assert await worker.run_once() == 1
    [d] = outbox.deliveries()
    assert d.state == DeliveryState.delivered and d.location
    path = Path(d.location)
    assert path.parent.parent == out and path.name == "note-v1.DocumentReference.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    DocumentReference.model_validate(doc)  # parses as R4(B)
    assert doc["identifier"][0] == note_identifier("enc-1", 1)
    assert doc["subject"] == {"reference": "Patient/p1"}
    assert doc["context"]["encounter"][0]["identifier"]["value"] == "enc-1"  # no EHR encounter: logical ref
    assert doc["author"] == [{"reference": "Practitioner/dr-lee"}]
    assert attachment_bytes(doc) == render_note(signed.note).encode("utf-8")
    bundle = json.loads(path.with_name("note-v1.bundle.json").read_text())
    Bundle.model_validate(bundle)
    assert bundle["type"] == "transaction" and bundle["entry"][0]["resource"] == doc
    assert not list(path.parent.glob("*.tmp"))  # atomic writes leave no temp files


async def test_directory_amend_and_retract(store: Store, tmp_path: Path) -> None:
    outbox = Outbox(store, targets=("directory",))
    worker = OutboxWorker(outbox, {"directory": DirectoryTarget(tmp_path / "out")})
    v1 = outbox.sign(make_note(), "dr-lee")
    v2 = outbox.amend(make_note(text="Patient reports a wet cough."), "dr-lee")
    assert await worker.run_once() == 2  # v2 waits for v1 (ordering), both done in one call
    d1, d2 = outbox.deliveries()
    old, new = (json.loads(Path(d.location).read_text()) for d in (d1, d2))
    assert old["status"] == "superseded" and new["status"] == "current" and new["docStatus"] == "amended"
    assert new["relatesTo"][0]["code"] == "replaces"
    assert new["relatesTo"][0]["target"]["identifier"] == note_identifier("enc-1", 1)
    retracted = outbox.retract(v2.id, "dr-lee", reason="wrong patient")
    assert retracted.retracted_at is not None
    assert await worker.run_once() == 1
    assert json.loads(Path(d2.location).read_text())["status"] == "entered-in-error"
    assert [d.action for d in outbox.deliveries()] == ["create", "create", "retract"]
    assert v1.version == 1


def test_deliver_note_to_directory_helper(tmp_path: Path) -> None:
    signed = SignedNote(note=make_note("demo-1"), signed_by="demo-clinician", signed_at=T0)
    ctx = DeliveryContext(patient="Patient/demo", practitioner="Practitioner/demo-clinician", period_start=T0)
    path = deliver_note_to_directory(signed, ctx, tmp_path)
    doc = json.loads(path.read_text())
    assert DocumentReference.model_validate(doc).status == "current"
    assert path.with_name("note-v1.bundle.json").is_file()


# --------------------------------------------------------------------------- worker


async def test_transient_failures_back_off_then_deliver_and_permanent_ones_park(store: Store, clock: Clock,
                                                                               tmp_path: Path) -> None:
    outbox = Outbox(store, targets=("directory",), clock=clock)
    target = FlakyTarget(DirectoryTarget(tmp_path / "out"), [
        DeliveryError("EHR unavailable", retryable=True),
        DeliveryError("throttled", retryable=True, retry_after=120),
    ])
    worker = OutboxWorker(outbox, {"directory": target}, backoff_base_s=2.0)
    outbox.sign(make_note(), "dr-lee")
    await worker.run_once()
    [d] = outbox.deliveries()
    assert d.state == DeliveryState.queued and d.attempts == 1 and d.error == "EHR unavailable"
    assert timedelta(seconds=1) <= d.next_attempt_at - T0 <= timedelta(seconds=2)
    assert await worker.run_once() == 0  # not due yet
    clock.advance(2)
    await worker.run_once()
    [d] = outbox.deliveries()
    assert d.attempts == 2 and d.next_attempt_at - clock.now >= timedelta(seconds=120)  # Retry-After honoured
    clock.advance(121)
    await worker.run_once()
    [d] = outbox.deliveries()
    assert d.state == DeliveryState.delivered and d.attempts == 3 and d.error is None
    events = [e.event for e in outbox.ledger(d.id)]
    assert events.count("retry_scheduled") == 2 and events[-1] == "delivered"

    # a non-retryable failure is parked at once, with its reason; retry() requeues it
    target.failures = [DeliveryError("the FHIR server rejected the request as invalid (HTTP 400): bad code")]
    outbox.sign(make_note("enc-1", text="Patient reports a wet cough."), "dr-lee", replaces=outbox.signed("enc-1")[0].id)
    await worker.run_once()
    d = outbox.deliveries()[-1]
    assert d.state == DeliveryState.failed and d.attempts == 1 and "HTTP 400" in d.error
    assert await worker.run_once() == 0  # not retried by itself
    outbox.retry(d.id)
    await worker.run_once()
    assert outbox.delivery(d.id).state == DeliveryState.delivered


async def test_transient_errors_never_give_up_but_unexpected_ones_do(store: Store, clock: Clock,
                                                                      tmp_path: Path) -> None:
    """An EHR that is down is retried for as long as it is down (the note must reach the chart
    without a person); an unexpected error (a bug retrying will not fix) is parked after
    ``max_attempts``, and the signed note is kept either way."""
    outbox = Outbox(store, targets=("directory",), clock=clock)
    down = FlakyTarget(DirectoryTarget(tmp_path / "out"), [DeliveryError("down", retryable=True)] * 6)
    worker = OutboxWorker(outbox, {"directory": down}, max_attempts=3)
    outbox.sign(make_note(), "dr-lee")
    for _ in range(6):
        await worker.run_once()
        clock.advance(3600)
    [d] = outbox.deliveries()
    assert d.state == DeliveryState.queued and d.attempts == 6 and "down" in d.error
    await worker.run_once()
    assert outbox.delivery(d.id).state == DeliveryState.delivered

    buggy = FlakyTarget(DirectoryTarget(tmp_path / "out2"), [RuntimeError("bug")] * 3)
    worker = OutboxWorker(outbox, {"directory": buggy}, max_attempts=3)
    outbox.set_context("enc-2", patient="Patient/p2", practitioner="Practitioner/dr-lee", period_start=T0)
    outbox.sign(make_note("enc-2"), "dr-lee")
    for _ in range(3):
        await worker.run_once()
        clock.advance(3600)
    d2 = outbox.deliveries()[-1]
    assert d2.state == DeliveryState.failed and d2.error.startswith("gave up after 3 attempts")
    assert outbox.signed("enc-2")[0].note.sentences()[0].text.startswith("Patient reports")


async def test_outbox_survives_store_reopen(tmp_path: Path, clock: Clock) -> None:
    db = tmp_path / "scribe.db"
    store = open_store(db)
    outbox = Outbox(store, targets=("directory",), clock=clock)
    signed = outbox.sign(make_note(), "dr-lee")
    store.close()

    store = Store(db)
    outbox = Outbox(store, targets=("directory",), clock=clock)
    assert outbox.signed("enc-1") == [signed]
    [d] = outbox.deliveries()
    assert d.state == DeliveryState.queued
    worker = OutboxWorker(outbox, {"directory": DirectoryTarget(tmp_path / "out")})
    await worker.run_once()
    assert outbox.delivery(d.id).state == DeliveryState.delivered
    store.close()


async def test_crashed_worker_row_is_taken_over_after_its_lease(tmp_path: Path, clock: Clock) -> None:
    store = open_store(tmp_path / "db")
    outbox = Outbox(store, targets=("directory",), clock=clock)
    outbox.sign(make_note(), "dr-lee")
    assert len(outbox.claim_due(10, lease_s=60)) == 1  # a worker claimed it, then died
    worker = OutboxWorker(outbox, {"directory": DirectoryTarget(tmp_path / "out")})
    assert await worker.run_once() == 0  # still leased
    clock.advance(61)
    assert await worker.run_once() == 1
    [d] = outbox.deliveries()
    assert d.state == DeliveryState.delivered and d.attempts == 2
    assert "reclaimed_after_lease" in [e.event for e in outbox.ledger(d.id)]
    store.close()


async def test_status_events_stream_for_the_tui(store: Store, tmp_path: Path) -> None:
    outbox = Outbox(store, targets=("directory",))
    seen_cb = []
    worker = OutboxWorker(outbox, {"directory": DirectoryTarget(tmp_path / "out")}, on_event=seen_cb.append)
    seen = []

    async def collect() -> None:
        async for d in worker.events():
            seen.append(d.state)
            if d.state == DeliveryState.delivered:
                return

    task = asyncio.create_task(collect())
    await asyncio.sleep(0)
    outbox.sign(make_note(), "dr-lee")
    await worker.run_once()
    await asyncio.wait_for(task, 5)
    assert seen == [DeliveryState.queued, DeliveryState.in_flight, DeliveryState.delivered]
    assert [d.state for d in seen_cb] == seen
