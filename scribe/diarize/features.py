"""The voice encoder's input: a 40-band mel power spectrogram, in numpy.

Resemblyzer computes this with ``librosa.feature.melspectrogram`` (25 ms Hann window, 10 ms hop,
40 Slaney mel bands, power 2, centred frames). Importing its own audio module needs librosa,
numba, scipy and webrtcvad (which in turn needs the removed ``pkg_resources``), seconds of
import time for a few lines of arithmetic, so the same filterbank is computed here. A test
checks it against librosa when librosa is importable.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from ..audio import SAMPLE_RATE

N_FFT = 400
"""25 ms analysis window."""
HOP = 160
"""10 ms hop: 100 frames per second."""
N_MELS = 40
FRAMES_PER_SECOND = SAMPLE_RATE // HOP


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(freq >= min_log_hz, min_log_mel + np.log(np.maximum(freq, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters with Slaney area normalisation."""
    fftfreqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2.0)), N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : N_MELS + 2] - mel_f[:N_MELS]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)  # periodic Hann


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(frames, 40) float32 mel power spectrogram of 16 kHz float audio, one frame per 10 ms."""
    wav = np.asarray(wav, dtype=np.float32)
    padded = np.pad(wav, (N_FFT // 2, N_FFT // 2), mode="constant")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    if n_frames <= 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0])
    )
    spec = np.abs(np.fft.rfft(frames * _window(), axis=1)) ** 2
    return (spec.astype(np.float32) @ mel_filterbank().T).astype(np.float32)


def normalize_volume(wav: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Raise quiet audio to the level the encoder was trained on (never lower it), as
    resemblyzer's preprocessing does; silence is returned unchanged."""
    wav = np.asarray(wav, dtype=np.float32)
    rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) if len(wav) else 0.0
    if rms < 1e-6:
        return wav
    gain_db = target_dbfs - 20 * np.log10(rms)
    if gain_db <= 0:
        return wav
    return (wav * (10 ** (gain_db / 20))).astype(np.float32)


def rms_dbfs(wav: np.ndarray) -> float:
    wav = np.asarray(wav, dtype=np.float64)
    if not len(wav):
        return -120.0
    return float(20 * np.log10(max(1e-6, np.sqrt(np.mean(wav**2)))))


def voiced(wav: np.ndarray, frame_ms: int = 30, floor_db: float = 12.0, peak_db: float = 35.0,
           keep_gap_frames: int = 6) -> np.ndarray:
    """The audio with pauses cut out (as resemblyzer's training preprocessing did with webrtcvad).

    A window that is mostly pause yields an embedding of the room, not the voice, and rooms
    are shared by both speakers, so pauses make different speakers look alike. Frames
    louder than both the noise floor + ``floor_db`` and the peak − ``peak_db`` are kept, with
    up to ``keep_gap_frames`` of quiet between them (short gaps are part of speech).
    """
    wav = np.asarray(wav, dtype=np.float32)
    n = int(SAMPLE_RATE * frame_ms / 1000)
    k = len(wav) // n
    if k < 3:
        return wav
    frames = wav[: k * n].reshape(k, n).astype(np.float64)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    floor = np.percentile(db, 10)
    thresh = max(floor + floor_db, db.max() - peak_db)
    loud = db > thresh
    if not loud.any():
        return wav[:0]
    keep = loud.copy()
    # fill short gaps between loud frames
    idx = np.flatnonzero(loud)
    for a, b in itertools.pairwise(idx):
        if 1 < b - a <= keep_gap_frames + 1:
            keep[a:b] = True
    return frames[keep].reshape(-1).astype(np.float32)
