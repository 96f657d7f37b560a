"""Speaker labels live: the real server labels committed segments of a two-voice recording
(and revises earlier labels over the protocol), and the stored transcript carries them."""

from __future__ import annotations

import json

import pytest

from scribe.audio import FileSource
from scribe.client import StreamClient
from scribe.diarize.scoring import attribution, hypothesis_words, reference_words
from scribe.models import Speaker
from scribe.protocol import SpeakersEvent
from scribe.database import open_store

from conftest import SAMPLES, TOKEN, RunningServer
from stream_support import start_msg

pytestmark = pytest.mark.slow
DIALOGUE = SAMPLES / "synth_dialogue_dev_01.flac"
DICTATION = SAMPLES / "synth_dictation_dev_01.flac"
VISIT_WITH_VISITOR = SAMPLES / "visit_with_visitor_dev_01.flac"


async def test_two_voices_are_labelled_live_and_stored(live_server: RunningServer, settings):
    events = []
    client = StreamClient(live_server.url, start_msg("enc-voices"), token=TOKEN, on_event=events.append)
    transcript = await client.run(FileSource(DIALOGUE, speed=0).chunks())
    manifest = json.loads(DIALOGUE.with_suffix(".json").read_text())
    turns = [(s["speaker"], s["text"]) for s in manifest["segments"]]
    result = attribution(reference_words(turns), hypothesis_words(transcript.segments))
    # Offline on the reference segmentation the labeller errs on <= 5 % of words; live segments
    # come from the streaming recogniser (misrecognised words cannot be aligned), so the bound
    # is looser: a labeller that guessed one role for everything would score ~50 %.
    assert result.error <= 0.15, result
    assert {s.speaker for s in transcript.segments} == {Speaker.clinician, Speaker.patient}
    # The transcript of record is labelled from the labeller's word-level turns re-decided with
    # the whole visit, so its finer segments (Whisper cuts "No, no blood." off the question the
    # live pass joined it to) are labelled no worse than the live segments: 9.3 % against
    # 10.6 % when this was written; carried per live segment it was 12–15 %.
    live = attribution(reference_words(turns), hypothesis_words([client.segments[i] for i in sorted(client.segments)]))
    assert result.error <= live.error + 0.01, (result, live)
    # what the client holds after applying live revisions equals what the server stored
    # (the live segments: the record pass's replace them in ``transcript``, labels carried by time)
    held = [client.segments[i].speaker for i in sorted(client.segments)]
    assert [s.speaker for s in open_store(settings).segments("enc-voices")] == held
    assert all(isinstance(e, SpeakersEvent) for e in events if getattr(e, "type", "") == "speakers")


async def test_a_visitor_is_labelled_other_live(live_server: RunningServer, settings):
    """Real voices through the real server: a visitor joins a doctor–patient visit twice
    (samples/README.md). Once the third voice is believed (15 s of it) its words reach the
    client as ``other`` and the stored transcript agrees. The first visit (~12 s) may already
    be frozen as the patient's by then (docs/benchmarks.md); revisions to ``other`` are tested
    in test_diarize_core."""
    from scribe.diarize.scoring import OtherLabels, confusion

    client = StreamClient(live_server.url, start_msg("enc-visitor"), token=TOKEN)
    transcript = await client.run(FileSource(VISIT_WITH_VISITOR, speed=0).chunks())
    manifest = json.loads(VISIT_WITH_VISITOR.with_suffix(".json").read_text())
    ref = reference_words([(t["speaker"], t["text"]) for t in manifest["dialogue"]])
    hyp = hypothesis_words(transcript.segments)
    conf = confusion(ref, hyp)
    other = OtherLabels.of(conf)
    assert other.visitor_words >= 40  # the visitor's sentences were transcribed and aligned
    assert other.visitor_as_other >= 0.45 * other.visitor_words, conf
    assert other.others_as_other <= 0.08 * other.others_words, conf
    assert attribution(ref, hyp).error <= 0.15
    # the second visit, by time: its words are the visitor's
    visits, prev = [], None
    for seg in manifest["segments"]:
        if seg["speaker"] == "visitor":
            if prev != "visitor":
                visits.append([seg["start"], seg["end"]])
            visits[-1][1] = seg["end"]
        prev = seg["speaker"]
    start, end = visits[-1]
    words = [w.role for w in hyp if w.start is not None and start <= w.start and w.end <= end]
    assert len(words) >= 15 and words.count(Speaker.other) >= 0.9 * len(words), words
    # what the client holds after applying live revisions equals what the server stored
    # (the live segments: the record pass's replace them in ``transcript``, labels carried by time)
    held = [client.segments[i].speaker for i in sorted(client.segments)]
    assert [s.speaker for s in open_store(settings).segments("enc-visitor")] == held


async def test_single_voice_dictation_gets_one_speaker(live_server: RunningServer):
    client = StreamClient(live_server.url, start_msg("enc-one-voice"), token=TOKEN)
    transcript = await client.run(FileSource(DICTATION, speed=0).chunks())
    assert len({s.speaker for s in transcript.segments}) == 1
    assert transcript.segments[0].speaker is Speaker.clinician


def two_mic_recording(tmp_path, seconds: float = 45.0):
    """The dialogue as a two-microphone recording: each voice on its own channel, with crosstalk."""
    import numpy as np
    import soundfile as sf

    from scribe.audio import load_audio

    manifest = json.loads(DIALOGUE.with_suffix(".json").read_text())
    audio = load_audio(DIALOGUE)[: int(seconds * 16000)]
    stereo = np.zeros((len(audio), 2), dtype=np.float32)
    turns = [s for s in manifest["segments"] if s["end"] <= seconds]
    for s in turns:
        a, b = int(s["start"] * 16000), int(s["end"] * 16000)
        ch = 0 if s["speaker"] == "doctor" else 1
        stereo[a:b, ch] = audio[a:b]
        stereo[a:b, 1 - ch] = 0.03 * audio[a:b]  # crosstalk
    path = tmp_path / "two_mics.wav"
    sf.write(path, stereo, 16000)
    return path, turns


async def test_two_channel_stream_is_labelled_by_channel_live(live_server: RunningServer, tmp_path, settings):
    path, turns = two_mic_recording(tmp_path, seconds=60)
    source = FileSource(path, speed=0, keep_stereo=True)
    assert source.channels == 2
    start = start_msg("enc-stereo").model_copy(update={"channels": 2})
    transcript = await StreamClient(live_server.url, start, token=TOKEN).run(source.chunks())
    result = attribution(reference_words([(s["speaker"], s["text"]) for s in turns]),
                         hypothesis_words(transcript.segments))
    assert result.error <= 0.05, result
    # the store holds the mixdown (what was transcribed), one sample per stereo frame
    stored = open_store(settings).audio_from("enc-stereo", 0)
    assert len(stored) == len(source.samples)


def test_offline_transcribe_uses_one_speaker_per_channel(tmp_path, capsys, monkeypatch):
    """A two-channel recording (a microphone per person) is labelled by channel."""
    from scribe.cli import main
    from scribe.models import Transcript

    path, turns = two_mic_recording(tmp_path)
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    assert main(["transcribe", "--json", str(path)]) == 0
    transcript = Transcript.model_validate_json(capsys.readouterr().out)
    result = attribution(reference_words([(s["speaker"], s["text"]) for s in turns]),
                         hypothesis_words(transcript.segments))
    assert result.error <= 0.05, result


async def test_live_labels_use_the_audio_in_memory_not_the_store(live_server: RunningServer):
    """The labeller embeds each segment from the audio the session just gave the transcriber;
    nothing is read back (and decrypted) from the store for it during an ordinary visit."""
    labellers = []

    def grab(event) -> None:
        session = live_server.server.sessions.get("enc-mem")
        if not labellers and session is not None and session.conn.labeller is not None:
            labellers.append(session.conn.labeller)

    transcript = await StreamClient(live_server.url, start_msg("enc-mem"), token=TOKEN, on_event=grab).run(
        FileSource(DIALOGUE, speed=0).chunks())
    assert transcript.segments and labellers
    assert labellers[0].store_reads == 0
    assert {s.speaker for s in transcript.segments} == {Speaker.clinician, Speaker.patient}
