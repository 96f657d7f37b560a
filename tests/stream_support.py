"""Shared helpers for the tests that stream real audio through the live server (service/,
diarize/, drills/, notes/writers/): the start message, exact PCM, WER and the shape every
committed transcript must have."""

from __future__ import annotations

import medwer
import numpy as np

from scribe.models import Consent
from scribe.protocol import StartMessage

from conftest import SAMPLES

DICTATION = SAMPLES / "synth_dictation_dev_01.flac"


def start_msg(eid: str = "enc-test", rate: int = 16_000) -> StartMessage:
    return StartMessage(encounter_id=eid, clinician_id="dr-test", patient_ref="Patient/p1", sample_rate=rate,
                        consent=Consent.recorded_now("dr-test"))


def as_pcm(samples: np.ndarray) -> bytes:
    """Exact inverse of the store's int16 → float conversion."""
    return np.round(samples * 32768.0).astype("<i2").tobytes()


def wer(ref: str, hyp: str) -> float:
    return medwer.Scorer().corpus([ref], [hyp])["wer"]


def assert_clean_sequence(segments, duration: float) -> None:
    assert [s.index for s in segments] == list(range(len(segments)))
    assert len({s.id for s in segments}) == len(segments)
    for a, b in zip(segments, segments[1:]):
        assert a.start <= b.start and a.end <= b.start + 0.5, (a, b)
    for s in segments:
        assert 0 <= s.start < s.end <= duration + 0.5
        for w in s.words:
            assert s.start - 0.05 <= w.start <= w.end <= s.end + 0.05
