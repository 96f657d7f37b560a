"""Speaker embeddings from resemblyzer's pretrained voice encoder, loaded lazily and offline.

The PyPI wheel ``resemblyzer==0.1.4`` ships its weights (``resemblyzer/pretrained.pt``, 17 MB,
a 3-layer 256-unit LSTM over 40 mel bands → 256-d L2-normalised d-vector). Only that file is
used: the package's Python code imports webrtcvad, which imports ``pkg_resources`` (gone from
current setuptools), and librosa/numba, so ``import resemblyzer`` fails or is slow here. The
network is six tensors; rebuilding it in torch and computing the mel input in numpy
(``features.py``) keeps the model identical and the import cheap. The weights are located
without importing the package and loaded with ``weights_only=True`` (no pickle code runs).

``SpeakerEncoder`` is the seam: the tracker only needs "audio → window embeddings".
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .features import FRAMES_PER_SECOND, HOP, SAMPLE_RATE, mel_spectrogram, normalize_volume

log = logging.getLogger(__name__)

MODEL_ID = "resemblyzer-0.1.4"
"""Stored with every profile: an embedding is only comparable with one from the same model."""
EMBEDDING_DIM = 256

WINDOW_S = 1.6
"""The encoder was trained on 1.6 s partial utterances (160 frames)."""
HOP_S = 0.8
MIN_WINDOW_S = 0.4
"""Below this the LSTM sees too little voice for a usable embedding."""


class EncoderMissing(RuntimeError):
    """The embedding model (or torch) is not installed; the message says what to install."""


@dataclass(frozen=True)
class Windows:
    """Embeddings of overlapping windows of one stretch of audio.

    ``spans`` are (start, end) in seconds relative to the audio given; ``embeddings`` is
    (n, 256), each row L2-normalised. Empty when the audio is shorter than ``MIN_WINDOW_S``.
    """

    embeddings: np.ndarray
    spans: list[tuple[float, float]]

    def __len__(self) -> int:
        return len(self.spans)


def plan_windows(n_samples: int, window_s: float = WINDOW_S, hop_s: float = HOP_S,
                 min_s: float = MIN_WINDOW_S) -> list[tuple[int, int]]:
    """Sample ranges to embed: 1.6 s windows every 0.8 s covering the audio; a shorter clip
    gets one window of its own length (sub-second turns still get an embedding, a noisier
    one), a clip under ``min_s`` none. The last window is aligned to the end so the tail of
    a turn (where a second speaker often starts) is always seen."""
    win = int(window_s * SAMPLE_RATE)
    hop = int(hop_s * SAMPLE_RATE)
    if n_samples < int(min_s * SAMPLE_RATE):
        return []
    if n_samples <= win + hop // 2:
        return [(0, n_samples)]
    starts = list(range(0, n_samples - win + 1, hop))
    if starts[-1] + win < n_samples:
        starts.append(n_samples - win)
    return [(s, s + win) for s in starts]


class SpeakerEncoder(Protocol):
    model_id: str

    def embed_windows(self, audio: np.ndarray) -> Windows: ...

    def embed(self, audio: np.ndarray) -> np.ndarray | None: ...


def weights_path() -> Path:
    """Where resemblyzer's wheel put ``pretrained.pt`` (found without importing the package)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderMissing(
            "the speaker embedding model is not installed: install the PyPI package "
            "'resemblyzer==0.1.4' without its dependencies: pip install --no-deps resemblyzer==0.1.4 "
            "(it ships the weights resemblyzer/pretrained.pt)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise EncoderMissing(f"the speaker embedding weights are missing: expected {path} "
                             "(reinstall 'resemblyzer==0.1.4')")
    return path


class ResemblyzerEncoder:
    """The resemblyzer d-vector network on torch CPU (one shared instance is thread-safe:
    calls are serialised; a forward pass on 10 s of audio takes a few tens of ms)."""

    model_id = MODEL_ID

    def __init__(self, threads: int = 1):
        try:
            import torch
            from torch import nn
        except ImportError as exc:
            raise EncoderMissing("speaker labels need torch: install 'torch==2.13.0'") from exc
        path = weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]

        class _Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
                self.linear = nn.Linear(256, EMBEDDING_DIM)

            def forward(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
                packed = nn.utils.rnn.pack_padded_sequence(mels, lengths, batch_first=True, enforce_sorted=False)
                _, (hidden, _) = self.lstm(packed)
                raw = torch.relu(self.linear(hidden[-1]))
                return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-8)

        net = _Net()
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
        net.eval()
        self._torch = torch
        self._net = net
        self._threads = threads
        self._lock = threading.Lock()
        log.info("speaker encoder loaded model=%s", MODEL_ID)

    def embed_windows(self, audio: np.ndarray) -> Windows:
        audio = normalize_volume(np.asarray(audio, dtype=np.float32))
        plan = plan_windows(len(audio))
        if not plan:
            return Windows(np.zeros((0, EMBEDDING_DIM), dtype=np.float32), [])
        mel = mel_spectrogram(audio)
        chunks = []
        for s, e in plan:
            a, b = s // HOP, max(s // HOP + 1, e // HOP)
            chunks.append(mel[a:b])
        lengths = [len(c) for c in chunks]
        batch = np.zeros((len(chunks), max(lengths), mel.shape[1]), dtype=np.float32)
        for i, c in enumerate(chunks):
            batch[i, : len(c)] = c
        torch = self._torch
        with self._lock:
            prev = torch.get_num_threads()
            torch.set_num_threads(self._threads)
            try:
                with torch.inference_mode():
                    out = self._net(torch.from_numpy(batch), torch.tensor(lengths)).numpy()
            finally:
                torch.set_num_threads(prev)
        spans = [(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in plan]
        return Windows(out.astype(np.float32), spans)

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        """One utterance embedding: the normalised mean of its window embeddings."""
        w = self.embed_windows(audio)
        if not len(w):
            return None
        return mean_embedding(w.embeddings)


def mean_embedding(embeddings: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    m = np.average(embeddings, axis=0, weights=weights) if len(embeddings) else np.zeros(EMBEDDING_DIM)
    n = float(np.linalg.norm(m))
    return (m / n if n > 0 else m).astype(np.float32)


_shared: ResemblyzerEncoder | None = None
_shared_lock = threading.Lock()


def load_encoder() -> ResemblyzerEncoder:
    """The process-wide encoder, built on first use (the weights take ~0.2 s to load)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ResemblyzerEncoder()
        return _shared


__all__ = [
    "FRAMES_PER_SECOND",
    "EncoderMissing",
    "ResemblyzerEncoder",
    "SpeakerEncoder",
    "Windows",
    "load_encoder",
    "mean_embedding",
    "plan_windows",
    "weights_path",
]
