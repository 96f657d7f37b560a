"""Nothing from nothing (issue 15, item 4): silence, noise, and hum with tones give no text,
offline and through the live service, and the stored draft has no sentences. Whisper is known
to write "Thank you for watching." over silence; these recordings are generated here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scribe.asr.offline import transcribe_samples
from scribe.audio import SAMPLE_RATE, FileSource
from scribe.client import StreamClient
from scribe.models import Consent
from scribe.notes.repo import NoteRepo
from scribe.protocol import StartMessage
from scribe.database import open_store

from conftest import TOKEN, RunningServer

pytestmark = pytest.mark.timeout(600)


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t60 = np.arange(60 * SAMPLE_RATE) / SAMPLE_RATE
    t30 = t60[: 30 * SAMPLE_RATE]
    tones = np.concatenate([0.2 * np.sin(2 * np.pi * f * t30[: 3 * SAMPLE_RATE]) for f in (440, 880, 1000, 300, 600)] * 2)
    return {
        "silence": np.zeros_like(t60, dtype=np.float32),
        "noise": (0.05 * rng.standard_normal(len(t60))).astype(np.float32),
        "hum_and_tones": (0.1 * np.sin(2 * np.pi * 50 * t30) + 0.05 * np.sin(2 * np.pi * 150 * t30)
                          + tones[: len(t30)]).astype(np.float32),
    }


SIGNALS = _signals()


@pytest.mark.parametrize("name", list(SIGNALS))
def test_offline_pass_writes_nothing(recognizer, name: str) -> None:
    transcript = transcribe_samples(recognizer, SIGNALS[name])
    assert transcript.text.strip() == "", transcript.text


@pytest.mark.parametrize("name", list(SIGNALS))
def test_the_decode_that_keeps_skipped_speech_writes_nothing_over_silence_or_noise(recognizer, name: str) -> None:
    """``transcribe_speech`` turns off Whisper's skip of silence (for seconds of VAD-heard
    speech that gave no words); over these signals, in utterance-sized pieces, Whisper then
    writes "you", "." or "I'm going to do that.", all of which it is sure are not speech."""
    audio = SIGNALS[name]
    step = 10 * SAMPLE_RATE
    texts = [r.text for k in range(0, len(audio), step)
             for r in recognizer.transcribe_speech(audio[k:k + step], offset=k / SAMPLE_RATE)]
    assert texts == []


@pytest.mark.parametrize("name", list(SIGNALS))
async def test_live_pass_writes_nothing_and_the_draft_is_empty(live_server: RunningServer, settings, tmp_path: Path,
                                                               name: str) -> None:
    path = tmp_path / f"{name}.wav"
    sf.write(path, SIGNALS[name], SAMPLE_RATE)
    start = StartMessage(encounter_id=f"enc-{name.replace('_', '-')}", clinician_id="dr-a", patient_ref="Patient/p1",
                         consent=Consent.recorded_now("dr-a"))
    client = StreamClient(live_server.url, start, token=TOKEN, wait_for_draft=True)
    transcript = await client.run(FileSource(path, speed=0).chunks())
    assert transcript.text.strip() == "", transcript.text
    note = NoteRepo(open_store(settings)).latest(start.encounter_id)
    if note is not None:  # drafting on: a draft of nothing has no sentences
        assert note.sentences() == []
