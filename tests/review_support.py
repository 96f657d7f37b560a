"""Shared helpers for the review API and review app tests: seeded encounters and a real server.

Encounters are seeded by writing segments straight into the store from the demo transcript
(``samples/synth_dialogue_dev_01.json``: PriMock57 text, CC BY 4.0, re-voiced; see
samples/README.md), so no speech model is needed. The server is the real ``StreamServer`` on a
free loopback port with a temporary store; its recogniser is a placeholder that is never called.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from scribe.config import Settings
from scribe.models import Consent, EncounterStatus, Note, Section, Segment, Sentence, Speaker
from scribe.notes import check_note, draft
from scribe.store import Store
from scribe.database import open_store

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "synth_dialogue_dev_01.json"
TOKEN = "review-test-token-0123456789"
CLINICIAN = "dr-lee"

EXTRA = {
    "objective": ["Temperature 38.5 degrees."],
    "assessment": ["Denies abdominal pain."],
    "plan": ["Start loperamide 2 mg after each loose stool."],
}
"""Sentences the transcript does not support: each gets guard flags (what the tests resolve)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_segments() -> list[Segment]:
    data = json.loads(SAMPLE.read_text())
    speakers = {"doctor": Speaker.clinician, "patient": Speaker.patient}
    return [
        Segment(id=Segment.make_id(s["index"]), index=s["index"], start=s["start"], end=s["end"], text=s["text"],
                speaker=speakers.get(s["speaker"], Speaker.unknown))
        for s in data["segments"]
    ]


def flagged_note(encounter_id: str, segments: list[Segment]) -> Note:
    """The extractive draft of the sample plus three unsupported sentences (flagged by the guard)."""
    note = draft(segments, encounter_id=encounter_id, created_at=datetime(2025, 1, 6, 9, 0, tzinfo=UTC))
    sections: list[Section] = []
    for sec in note.sections:
        extra = [Sentence(id=f"{sec.key}.x{i}", text=t) for i, t in enumerate(EXTRA.get(sec.key, []))]
        sections.append(sec.model_copy(update={"sentences": [*sec.sentences, *extra]}))
    return check_note(note.model_copy(update={"sections": sections}), segments)


def seed_encounter(store: Store, encounter_id: str, *, status: EncounterStatus, segments: list[Segment] | None = None,
                   patient: str = "Patient/example-1", note: Note | None = None) -> None:
    """An encounter as the streaming service leaves it, plus (optionally) a saved draft."""
    segments = sample_segments() if segments is None else segments
    store.open_encounter(encounter_id, clinician_id=CLINICIAN, patient_ref=patient, language="en",
                         sample_rate=16_000, consent=Consent(given=True, method="verbal", recorded_by=CLINICIAN))
    if segments:
        store.commit_segments(encounter_id, segments, int(segments[-1].end * 16_000))
    if status is not EncounterStatus.recording:
        store.set_status(encounter_id, status)
    if note is not None:
        from scribe.notes.repo import NoteRepo

        NoteRepo(store).save_draft(note, "scribe")


def make_settings(tmp_path: Path, **fhir) -> Settings:
    from pydantic import SecretStr

    s = Settings(data_dir=tmp_path / "data")
    s.server.tokens = [SecretStr(TOKEN)]
    s.server.port = free_port()
    s.trust.rate_per_second, s.trust.rate_burst = 10_000.0, 100_000.0  # rate limits have their own test
    for k, v in fhir.items():
        setattr(s.fhir, k, v)
    return s


class Running:
    def __init__(self, server, runner: web.AppRunner, port: int):
        self.server = server
        self.runner = runner
        self.port = port
        self.http = f"http://127.0.0.1:{port}"


@asynccontextmanager
async def review_server(settings: Settings) -> AsyncIterator[Running]:
    """The real service (streaming + review API + outbox worker) on a free loopback port."""
    from scribe.service import Engine, StreamServer

    server = StreamServer(settings, engine=Engine(settings, recognizer=object()))
    runner = server.runner(shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", settings.server.port)
    await site.start()
    try:
        yield Running(server, runner, settings.server.port)
    finally:
        await runner.cleanup()


def seed_standard(settings: Settings) -> dict[str, str]:
    """Four encounters in different states; returns name → encounter id."""
    segs = sample_segments()
    store = open_store(settings)  # as the service writes: encrypted (plaintext PHI columns are refused)
    try:
        ids = {"ready": "enc-ready", "clean": "enc-clean", "recording": "enc-rec", "transcribed": "enc-new"}
        seed_encounter(store, ids["ready"], status=EncounterStatus.draft_ready,
                       note=flagged_note(ids["ready"], segs))
        seed_encounter(store, ids["clean"], status=EncounterStatus.draft_ready,
                       note=draft(segs, encounter_id=ids["clean"]))
        seed_encounter(store, ids["recording"], status=EncounterStatus.recording, segments=segs[:5])
        seed_encounter(store, ids["transcribed"], status=EncounterStatus.transcribed)
    finally:
        store.close()
    return ids
