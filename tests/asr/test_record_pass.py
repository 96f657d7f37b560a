"""The record pass end to end (issue 15, items 1 and 4): a real recording through the live
server ends with record-pass segments about as accurate as offline transcription; revisions
arrive in order and are stored; a resumed encounter after a server restart still gets one
complete record pass; silence, noise and hum give no text; the note is drafted from it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import medwer
import numpy as np
import pytest
import soundfile as sf

from scribe.asr.offline import transcribe_samples, transcribe_window
from scribe.audio import SAMPLE_RATE, FileSource, load_audio
from scribe.client import StreamClient
from scribe.models import Consent
from scribe.notes.repo import NoteRepo
from scribe.protocol import RevisionEvent, StartMessage
from scribe.database import open_store

from conftest import ROOT, SAMPLES, TOKEN, RunningServer, reference_text, start_server

pytestmark = pytest.mark.timeout(900)

OSCE = ROOT.parent / "shared" / "eval" / "real_audio" / "osce_RES0204.mp3"
DIALOGUE = SAMPLES / "synth_dialogue_dev_01.flac"
CLIP_S = 150


def start_msg(eid: str) -> StartMessage:
    return StartMessage(encounter_id=eid, clinician_id="dr-rec", patient_ref="Patient/p1",
                        consent=Consent.recorded_now("dr-rec"))


def wer(ref: str, hyp: str) -> float:
    return medwer.Scorer().corpus([ref], [hyp])["wer"]


def check_complete(store, eid: str, revisions: list[RevisionEvent] | None = None) -> None:
    """One complete record pass: windows numbered 0, 1, … back to back from 0 to the end of the
    audio; every live segment replaced by exactly one window; the transcript is the record pass."""
    enc = store.get_encounter(eid)
    until, count, windows = store.record_progress(eid)
    assert until == enc.samples_received
    stored = store.record_segments(eid)
    assert [s.index for _, s in stored] == list(range(count))
    assert [w for w, _ in stored] == sorted(w for w, _ in stored) and all(0 <= w < windows for w, _ in stored)
    for (_, a), (_, b) in zip(stored, stored[1:]):
        assert a.start <= b.start and a.end <= b.start + 0.5, (a.start, a.end, b.start, b.end)
    transcript = store.transcript(eid)
    assert [s.id for s in transcript] == [s.id for _, s in stored]  # no live segment left
    if revisions is not None:
        assert [r.number for r in revisions] == list(range(windows))
        assert revisions[0].start == 0.0 and revisions[-1].end == round(until / SAMPLE_RATE, 3)
        for a, b in zip(revisions, revisions[1:]):
            assert b.start == a.end
        assert [s.id for r in revisions for s in r.segments] == [s.id for _, s in stored]
        assert [s.text for r in revisions for s in r.segments] == [s.text for _, s in stored]
        replaced = [i for r in revisions for i in r.replaces]
        assert sorted(replaced) == sorted(s.id for s in store.segments(eid))  # each once


@pytest.mark.skipif(not OSCE.is_file(), reason="the OSCE evaluation recordings are not on this machine")
async def test_a_real_recording_ends_with_a_record_pass_as_accurate_as_offline(live_server: RunningServer, settings,
                                                                               recognizer, tmp_path: Path) -> None:
    # The first 150 s (five record windows), scored against the same share of the reference, as
    # `scribe bench asr --max-seconds` does: offline, live and record pass alike.
    audio = load_audio(OSCE)[: CLIP_S * SAMPLE_RATE]
    words = reference_text(OSCE).split()
    ref = " ".join(words[: int(len(words) * CLIP_S / json.loads(OSCE.with_suffix(".json").read_text())["duration_s"])])
    clip = tmp_path / "osce.wav"
    sf.write(clip, audio, SAMPLE_RATE)
    client = StreamClient(live_server.url, start_msg("enc-osce"), token=TOKEN, wait_for_draft=True)
    transcript = await client.run(FileSource(clip, speed=0).chunks())
    store = open_store(settings)
    live_wer = wer(ref, " ".join(s.text for s in store.segments("enc-osce")))
    record_wer = wer(ref, transcript.text)
    offline_wer = wer(ref, transcribe_samples(recognizer, audio).text)
    # Bound: on 300 s of each OSCE dev recording the record pass measured 1.04–1.09 × offline
    # (docs/benchmarks.md) and the live pass 1.2–1.5 × (RES0204: 1.30); 1.15 × fails if the record
    # pass loses half of its gain over the live pass, and absorbs the run-to-run noise of a few
    # words in a thousand.
    assert record_wer <= 1.15 * offline_wer, (record_wer, offline_wer, live_wer)
    assert record_wer < live_wer
    check_complete(store, "enc-osce", client.revisions)
    assert len(client.revisions) >= 5  # 150 s in windows of at most 30 s
    segments = store.transcript("enc-osce")
    assert {s.speaker.value for s in segments} - {"unknown"}  # labels carried over from the live pass
    assert all(0.0 <= w.probability <= 1.0 for s in segments for w in s.words) and any(s.words for s in segments)
    note = NoteRepo(store).latest("enc-osce")
    assert note is not None and note.sentences()
    cited = {e.segment_id for sentence in note.sentences() for e in sentence.evidence}
    assert cited and cited <= {s.id for s in segments}  # the note is drafted from the record pass


async def test_server_restart_mid_visit_gives_one_complete_record_pass(settings, recognizer) -> None:
    settings.asr.record_window_s = 10.0  # several windows before and after the restart
    server = await start_server(settings, recognizer)
    acks: list[int] = []
    revisions: list[RevisionEvent] = []

    def on_event(e) -> None:
        if getattr(e, "type", "") == "ack":
            acks.append(e.seq)
        elif isinstance(e, RevisionEvent):
            revisions.append(e)

    client = StreamClient(server.url, start_msg("enc-rp-restart"), token=TOKEN, on_event=on_event)
    task = asyncio.create_task(client.run(FileSource(DIALOGUE, speed=2).chunks()))
    while not revisions:  # the record pass has stored a window before the server goes away
        await asyncio.sleep(0.05)
    await server.stop()
    await asyncio.sleep(0.5)
    server = await start_server(settings, recognizer)
    try:
        transcript = await asyncio.wait_for(task, timeout=600)
    finally:
        await server.stop()
    assert client.stats.connects >= 2
    store = open_store(settings)
    check_complete(store, "enc-rp-restart")
    # revisions seen by the client across both connections: in order, none twice
    numbers = [r.number for r in revisions]
    assert numbers == sorted(set(numbers))
    assert [s.id for s in transcript.segments] == [s.id for s in store.transcript("enc-rp-restart")]
    assert wer(reference_text(DIALOGUE), transcript.text) < 0.3, transcript.text


def _noise_signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    t = np.arange(40 * SAMPLE_RATE) / SAMPLE_RATE
    return {
        "silence": np.zeros(len(t), dtype=np.float32),
        "noise": (0.05 * rng.standard_normal(len(t))).astype(np.float32),
        "hum": (0.1 * np.sin(2 * np.pi * 50 * t) + 0.05 * np.sin(2 * np.pi * 150 * t)).astype(np.float32),
    }


NOISE = _noise_signals()


@pytest.mark.parametrize("name", list(NOISE))
@pytest.mark.parametrize("prompt", [None, "Thank you for watching. I have had a cough for two weeks."])
def test_a_record_window_of_silence_or_noise_writes_nothing(recognizer, name: str, prompt: str | None) -> None:
    # A long window with the previous text as context is what invites "Thank you for watching."
    assert transcribe_window(recognizer, NOISE[name], offset=12.0, prompt=prompt) == []


@pytest.mark.parametrize("name", list(NOISE))
async def test_the_record_pass_over_silence_or_noise_writes_nothing(live_server: RunningServer, settings,
                                                                    tmp_path: Path, name: str) -> None:
    settings.asr.record_window_s = 15.0
    path = tmp_path / f"{name}.wav"
    sf.write(path, NOISE[name], SAMPLE_RATE)
    client = StreamClient(live_server.url, start_msg(f"enc-rp-{name}"), token=TOKEN)
    transcript = await client.run(FileSource(path, speed=0).chunks())
    assert transcript.text.strip() == ""
    assert client.revisions and all(r.segments == [] for r in client.revisions)  # it ran, and wrote nothing
    store = open_store(settings)
    assert store.record_progress(f"enc-rp-{name}")[0] == len(NOISE[name])
