"""Streaming voice activity detection with the Silero model that ships in faster-whisper.

faster-whisper only exposes whole-file VAD; a live stream needs per-window speech
probabilities as audio arrives, with the model's recurrent state carried across calls. This
wrapper keeps that state (LSTM ``h``/``c`` and the 64-sample context) so feeding audio in any
split gives the same probabilities as feeding it at once. Cost: ~1–2 ms per second of audio.
"""

from __future__ import annotations

import numpy as np

WINDOW = 512
"""Samples per VAD decision (32 ms at 16 kHz)."""
_CONTEXT = 64


class StreamingVad:
    """Call with float32 16 kHz samples; returns one speech probability per full window."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._rest, samples.astype(np.float32, copy=False)])
        n = len(audio) // WINDOW
        self._rest = audio[n * WINDOW :]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        windows = audio[: n * WINDOW].reshape(n, WINDOW)
        contexts = np.empty((n, _CONTEXT), dtype=np.float32)
        contexts[0] = self._context
        contexts[1:] = windows[:-1, -_CONTEXT:]
        self._context = windows[-1, -_CONTEXT:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        out, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(out, dtype=np.float32).reshape(-1)
