"""Enrolment: ~30 s of a clinician's speech → one voice profile.

Checked before anything is stored, so a bad recording is refused with a reason instead of
becoming a profile that mislabels every visit: the audio must contain at least
``MIN_SPEECH_S`` of voiced audio (silence, a hum or a two-second clip is refused), and
should contain ``RECOMMENDED_SPEECH_S``.
"""

from __future__ import annotations

import numpy as np

from .encoder import SpeakerEncoder, mean_embedding
from .features import SAMPLE_RATE, rms_dbfs, voiced
from .profiles import SpeakerProfile

MIN_SPEECH_S = 10.0
RECOMMENDED_SPEECH_S = 30.0


class EnrolmentError(ValueError):
    """The enrolment audio cannot make a usable profile; the message says what to record."""


def speech_seconds(audio: np.ndarray) -> float:
    """Voiced seconds by Silero VAD (the recogniser's own VAD), falling back to energy."""
    try:
        from ..asr.vad import WINDOW, StreamingVad

        probs = StreamingVad()(np.asarray(audio, dtype=np.float32))
        return float((probs >= 0.5).sum()) * WINDOW / SAMPLE_RATE
    except Exception:  # noqa: BLE001 — VAD model unavailable: energy is a coarser but safe stand-in
        return len(voiced(audio)) / SAMPLE_RATE


def build_profile(encoder: SpeakerEncoder, clinician_id: str, audio: np.ndarray) -> SpeakerProfile:
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    duration = len(audio) / SAMPLE_RATE
    if duration < 1.0 or rms_dbfs(audio) < -60:
        raise EnrolmentError(f"the enrolment audio is silent or empty ({duration:.1f} s): record about "
                             f"{RECOMMENDED_SPEECH_S:.0f} s of the clinician speaking")
    speech = speech_seconds(audio)
    if speech < MIN_SPEECH_S:
        raise EnrolmentError(f"the enrolment audio has only {speech:.1f} s of speech; at least {MIN_SPEECH_S:.0f} s "
                             f"is needed ({RECOMMENDED_SPEECH_S:.0f} s recommended) of the clinician speaking alone")
    windows = encoder.embed_windows(voiced(audio))
    if len(windows) < 3:
        raise EnrolmentError("the enrolment audio has too little clear speech for a voice profile: record about "
                             f"{RECOMMENDED_SPEECH_S:.0f} s of the clinician speaking")
    return SpeakerProfile.from_embedding(clinician_id, encoder.model_id, mean_embedding(windows.embeddings),
                                         speech_seconds=speech, windows=len(windows))
