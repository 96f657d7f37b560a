"""Failure drill: SIGKILL the server mid-encounter, three times, and restart it.

A real ``python -m scribe serve`` child process (real model, real SQLite file, token from the
environment) receives a real recording from ``StreamClient``. The server is killed with SIGKILL
(no shutdown code runs) at three different points of one encounter, and restarted each time on
the same port and data directory:

1. mid-stream, once some segments are committed and audio is acked but not yet transcribed;
2. during the resume burst right after the first restart (the client resending its backlog,
   the server re-reading untranscribed audio from the store);
3. after the client sent ``stop``, while the server is still transcribing the backlog.

After every kill, before the restart, the database left on disk is opened and checked: every
frame the client saw acked is there, and every segment the client received is there, identical.
At the end: the client finished by itself (auto-resume), the transcript is contiguous
(indices 0..n-1, unique ids, no overlap), the segments received before each kill are an
unchanged prefix of it, and the stored audio is byte-identical to the source file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import SAMPLES, TOKEN, reference_text, wait_until
from stream_support import as_pcm, assert_clean_sequence, wer

from scribe.audio import FileSource, float_to_pcm16
from scribe.bench.load import ServerProcess
from scribe.client import StreamClient
from scribe.config import Settings
from scribe.models import Consent, Segment
from scribe.protocol import ReadyEvent, StartMessage
from scribe.database import open_store

pytestmark = pytest.mark.slow

DICTATION = SAMPLES / "synth_dictation_dev_01.flac"
EID = "enc-drill-sigkill"


def start_msg() -> StartMessage:
    return StartMessage(encounter_id=EID, clinician_id="dr-drill", patient_ref="Patient/drill-1",
                        consent=Consent.recorded_now("dr-drill"))


def _on_disk(data_dir: Path) -> tuple[int, list[Segment]]:
    """What survived the kill: (last persisted frame, committed segments), read with the
    server's own data key as the server would on restart."""
    store = open_store(Settings(data_dir=data_dir))
    try:
        enc = store.get_encounter(EID)
        assert enc is not None
        return enc.last_seq, store.segments(EID)
    finally:
        store.close()


async def test_sigkill_three_times_mid_encounter_then_resume_loses_and_duplicates_nothing(tmp_path: Path):
    # The drill is about frames and live segments across kills; the record pass (which replaces
    # segments behind the live edge, and has its own restart test in test_record_pass.py) is off.
    server = ServerProcess(tmp_path / "data", TOKEN, env={"SCRIBE_ASR__RECORD_PASS": "false"})
    await asyncio.to_thread(server.start)
    source = FileSource(DICTATION, speed=4)
    readies: list[ReadyEvent] = []
    client = StreamClient(server.url, start_msg(), token=TOKEN,
                          on_event=lambda e: readies.append(e) if isinstance(e, ReadyEvent) else None)
    task = asyncio.create_task(client.run(source.chunks()))
    kills: list[dict] = []

    async def kill_and_check(label: str) -> None:
        assert not task.done(), f"{label}: the encounter finished before the kill point"
        acked, received = client._highest_ack, dict(client.segments)
        server.kill()
        last_seq, stored = await asyncio.to_thread(_on_disk, server.data_dir)
        # Acked means persisted: nothing acked is missing after a SIGKILL.
        assert last_seq >= acked, f"{label}: frame {acked} was acked but the store ends at {last_seq}"
        # Every segment the client holds was committed before it was sent.
        assert stored[: len(received)] == [received[i] for i in sorted(received)], label
        kills.append({"label": label, "acked": acked, "on_disk": last_seq, "segments": dict(received)})
        await asyncio.to_thread(server.start)

    try:
        # 1. mid-stream: segments committed, more audio acked than transcribed
        await wait_until(lambda: client._highest_ack >= 60 and len(client.segments) >= 1, 120, "first segment")
        await kill_and_check("mid-stream")
        # 2. during the resume burst of the second connection
        await wait_until(lambda: len(readies) >= 2, 120, "second ready")
        resumed_at = readies[-1].next_seq
        await wait_until(lambda: client._highest_ack >= resumed_at + 40, 120, "acks after resume")
        await kill_and_check("resume burst")
        # 3. after 'stop', while the server transcribes the backlog
        await wait_until(lambda: len(readies) >= 3 and client._stop_sent, 120, "stop on the third connection")
        await kill_and_check("after stop")
        transcript = await asyncio.wait_for(task, timeout=300)
    finally:
        if not task.done():
            task.cancel()
        server.stop()

    assert client.stats.connects >= 4
    # Each resume started exactly where the store ended: no gap, no duplicate frame.
    for kill, ready in zip(kills, readies[1:]):
        assert ready.resumed and ready.next_seq == kill["on_disk"] + 1 >= kill["acked"] + 1, (kill["label"], ready)
    # Segments received before each kill are an unchanged prefix of the final transcript.
    for kill in kills:
        got = kill["segments"]
        assert transcript.segments[: len(got)] == [got[i] for i in sorted(got)], kill["label"]
    assert_clean_sequence(transcript.segments, source.duration)
    for a, b in zip(transcript.segments, transcript.segments[1:]):
        assert a.end <= b.start + 0.25, ("overlapping segments", a.index, b.index)
    assert wer(reference_text(DICTATION), transcript.text) < 0.45, transcript.text
    store = open_store(Settings(data_dir=server.data_dir))
    try:
        assert store.segments(EID) == transcript.segments
        assert as_pcm(store.audio_from(EID, 0)) == float_to_pcm16(source.samples)
        assert store.get_encounter(EID).status.value != "recording"  # transcribed (or drafting on)
    finally:
        store.close()
