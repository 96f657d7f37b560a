"""Drafting in the service: the note grows while the visit streams, is finished after stop,
stored as a draft version and sent to the client; every sentence points at real segments."""

from __future__ import annotations

import asyncio

import pytest

from scribe.audio import FileSource
from scribe.client import StreamClient
from scribe.notes.repo import NoteRepo
from scribe.protocol import DraftEvent
from scribe.database import open_store

from conftest import SAMPLES, TOKEN, RunningServer
from stream_support import start_msg

pytestmark = pytest.mark.slow
DIALOGUE = SAMPLES / "synth_dialogue_dev_01.flac"


async def test_draft_is_written_during_the_visit_and_stored_after_stop(live_server: RunningServer, settings):
    live_server.server.settings.notes.live_draft_interval_s = 0.001  # every commit, to see it grow
    events = []
    client = StreamClient(live_server.url, start_msg("enc-draft"), token=TOKEN, on_event=events.append,
                          wait_for_draft=True)
    transcript = await client.run(FileSource(DIALOGUE, speed=0).chunks())
    drafts = [e for e in events if isinstance(e, DraftEvent)]
    done_at = next(i for i, e in enumerate(events) if getattr(e, "type", "") == "done")
    assert any(events.index(d) < done_at for d in drafts), "no draft was sent while the visit streamed"
    final = drafts[-1]
    assert final.final and final.version == 1 and client.draft == final.note
    note = final.note
    ids = {s.id for s in transcript.segments}
    sentences = note.sentences()
    assert len(sentences) >= 3
    assert all(s.evidence and {e.segment_id for e in s.evidence} <= ids for s in sentences)
    store = open_store(settings)
    assert NoteRepo(store).latest("enc-draft") == note
    assert store.get_encounter("enc-draft").status.value == "draft_ready"


async def test_bad_template_does_not_stop_recording(live_server: RunningServer):
    live_server.server.settings.notes.template = "no-such-template"
    events = []
    client = StreamClient(live_server.url, start_msg("enc-notemplate"), token=TOKEN, on_event=events.append)
    transcript = await client.run(FileSource(SAMPLES / "general_jfk.flac", speed=0).chunks())
    assert transcript.segments
    errors = [e for e in events if getattr(e, "type", "") == "error"]
    assert errors and errors[0].code == "draft_failed" and not errors[0].fatal


@pytest.mark.parametrize("sample", ["synth_dialogue_dev_01", "visit_with_visitor_dev_01"])
async def test_stored_draft_is_the_draft_of_the_final_transcript(live_server: RunningServer, settings, sample):
    """Speaker labels change while the visit streams (revisions); the drafter only sees a
    segment once its label is final, so the stored note is exactly the one-shot draft of the
    stored transcript — the one the clinician reviews — not of labels that were later revised."""
    from scribe.notes.extractive import draft

    client = StreamClient(live_server.url, start_msg(f"enc-final-{sample[:5]}"), token=TOKEN, wait_for_draft=True)
    transcript = await client.run(FileSource(SAMPLES / f"{sample}.flac", speed=0).chunks())
    stored = NoteRepo(open_store(settings)).latest(f"enc-final-{sample[:5]}")
    again = draft(transcript.segments, encounter_id=stored.encounter_id)

    def shape(note):
        return [(sec.key, [(s.text, [e.segment_id for e in s.evidence]) for s in sec.sentences]) for sec in note.sections]

    assert shape(stored) == shape(again)


async def test_an_encounters_state_is_released_when_it_ends(live_server: RunningServer, caplog):
    """The per-encounter state (connection, speaker tracker with every segment's embeddings,
    drafting session) grows with the visit; it must be freed when the encounter ends, so a
    server's memory tracks the visits in progress, not every visit since it started."""
    import gc
    import weakref

    refs: dict[str, weakref.ref] = {}

    def grab(event) -> None:
        session = live_server.server.sessions.get("enc-gc")
        if not refs and getattr(event, "type", "") == "segment" and session is not None:
            conn = session.conn
            refs.update(connection=weakref.ref(conn), diarizer=weakref.ref(conn.labeller.diarizer),
                        draft=weakref.ref(conn.drafting.session), session=weakref.ref(session))

    client = StreamClient(live_server.url, start_msg("enc-gc"), token=TOKEN, on_event=grab, wait_for_draft=True)
    await client.run(FileSource(DIALOGUE, speed=0).chunks())
    assert set(refs) == {"connection", "diarizer", "draft", "session"}
    # Records of logged exceptions keep their tracebacks (and so the connection's frames) in
    # pytest's log capture, which a running server does not have: note them for the message,
    # then clear those frames.
    import logging
    import traceback

    logged = [f"{r.levelname}: {r.getMessage()}" for r in caplog.records if r.exc_info]
    for handler in logging.getLogger().handlers:
        for record in getattr(handler, "records", []):
            if record.exc_info and record.exc_info[2] is not None:
                traceback.clear_frames(record.exc_info[2])
    # The connection's handler unwinds after the client returns (the closing handshake may wait
    # out aiohttp's 10 s close timeout); a real leak keeps the references however long we wait.
    alive = list(refs)
    for _ in range(200):
        gc.collect()
        alive = [name for name, ref in refs.items() if ref() is not None]
        if not alive:
            break
        await asyncio.sleep(0.1)
    assert "enc-gc" not in live_server.server.sessions
    assert not alive, f"still referenced 20 s after the encounter ended: {alive} (exceptions logged: {logged})"
