"""SVG snapshots of the review app's main screens (pytest-textual-snapshot).

The app is fed fixed data through an in-memory stand-in for the API client (same interface as
``tui.client.ReviewClient``) so the pictures do not depend on clocks or ids; the flows against
the real service are in test_tui_flows.py. Update after an intended change with
``pytest tests/tui/test_tui_snapshots.py --snapshot-update`` and look at the new SVGs.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from review_support import CLINICIAN, flagged_note, sample_segments

from scribe.models import Delivery, DeliveryState, Note
from scribe.review.models import (
    DeliveryView,
    DraftView,
    EncounterList,
    EncounterSummary,
    LiveEvent,
    ReviewState,
    TranscriptView,
)
from tui.app import ReviewApp

SEGS = sample_segments()
T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def _summary(eid: str, patient: str, state: ReviewState, minutes: int, flags: int = 0, sentences: int = 0,
             version: int | None = None, delivery: Delivery | None = None) -> EncounterSummary:
    created = T0.replace(minute=minutes)
    return EncounterSummary(id=eid, patient_ref=patient, clinician_id=CLINICIAN, status="draft_ready", state=state,
                            created_at=created, updated_at=created, segment_count=17, draft_version=version,
                            sentences=sentences, open_flags=flags, delivery=delivery,
                            signed_version=1 if delivery else None)


class FakeApi:
    actor = CLINICIAN

    def __init__(self) -> None:
        self.note: Note = flagged_note("enc-0906-a", SEGS)
        n = len(self.note.sentences())
        done = Delivery(id="dlv-1", encounter_id="enc-0840-c", target="fhir", state=DeliveryState.delivered,
                        resource_id="DocumentReference/8f1c")
        self.summaries = [
            _summary("enc-0906-a", "Patient/1042", ReviewState.draft_ready, 6, flags=len(self.note.open_flags),
                     sentences=n, version=1),
            _summary("enc-0921-b", "Patient/1077", ReviewState.recording, 21),
            _summary("enc-0840-c", "Patient/0981", ReviewState.delivered, 40 - 40, sentences=9, version=3,
                     delivery=done),
            _summary("enc-0852-d", "Patient/1003", ReviewState.drafting, 52),
            _summary("enc-0815-e", "Patient/0950", ReviewState.failed, 15, sentences=6, version=2),
        ]

    async def list_encounters(self, state=None, query=None) -> EncounterList:
        counts = {s: sum(1 for e in self.summaries if e.state is s) for s in ReviewState}
        rows = [e for e in self.summaries if state is None or e.state is state]
        return EncounterList(encounters=rows, counts=counts)

    async def encounter(self, encounter_id: str) -> EncounterSummary:
        return next(e for e in self.summaries if e.id == encounter_id)

    async def transcript(self, encounter_id: str, since: int = 0) -> TranscriptView:
        return TranscriptView(encounter_id=encounter_id, status="draft_ready", segments=SEGS[since:],
                              segment_count=len(SEGS))

    async def draft(self, encounter_id: str) -> DraftView | None:
        return DraftView(encounter_id=encounter_id, version=1, note=self.note, state=ReviewState.draft_ready,
                         open_flags=len(self.note.open_flags))

    async def deliveries(self, encounter_id: str) -> DeliveryView:
        return DeliveryView(encounter_id=encounter_id, signed=[], deliveries=[])

    async def audit(self, encounter_id: str):
        return []

    async def events(self, encounter_id=None):
        await asyncio.Event().wait()
        yield LiveEvent(type="hello")  # pragma: no cover

    async def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _app(**kw) -> ReviewApp:
    return ReviewApp(FakeApi(), **kw)  # type: ignore[arg-type]


async def _settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_encounter_list(snap_compare) -> None:
    assert snap_compare(_app(), terminal_size=(100, 30), run_before=_settle)


def test_encounter_view_100x30(snap_compare) -> None:
    assert snap_compare(_app(encounter_id="enc-0906-a"), terminal_size=(100, 30), run_before=_settle)


def test_encounter_view_on_a_flag_200x50(snap_compare) -> None:
    async def run_before(pilot) -> None:
        await _settle(pilot)
        await pilot.press("f")
        await _settle(pilot)

    assert snap_compare(_app(encounter_id="enc-0906-a"), terminal_size=(200, 50), run_before=run_before)


def test_sign_dialog(snap_compare) -> None:
    async def run_before(pilot) -> None:
        await _settle(pilot)
        await pilot.press("s")
        await _settle(pilot)

    assert snap_compare(_app(encounter_id="enc-0906-a"), terminal_size=(100, 30), run_before=run_before)


def test_help_screen(snap_compare) -> None:
    async def run_before(pilot) -> None:
        await _settle(pilot)
        await pilot.press("question_mark")
        await _settle(pilot)

    assert snap_compare(_app(encounter_id="enc-0906-a"), terminal_size=(100, 30), run_before=run_before)
