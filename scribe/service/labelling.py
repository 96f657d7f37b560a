"""Speaker labels for one live encounter: the online labeller, fed each committed segment with
its own audio, and the short stereo buffer a two-channel recording is labelled from.

The labeller runs on the ASR thread pool (it embeds audio); a failure never stops
transcription — the segment keeps ``unknown``. A segment's audio is taken from memory when it
is still held (two-channel input) and read back from the store otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Executor
from typing import Any

import numpy as np

from ..audio import SAMPLE_RATE, int16_to_float
from ..models import Encounter, Segment, Speaker
from ..store import AsyncStore

log = logging.getLogger(__name__)

STEREO_KEEP_S = 120
"""Seconds of two-channel audio kept for the labeller (a segment is labelled seconds after it
ends; older stereo is dropped and the labeller falls back to the mixdown)."""


class Labeller:
    """One encounter's speaker labeller (``diarizer``: an ``OnlineDiarizer``)."""

    def __init__(self, diarizer: Any, store: AsyncStore, executor: Executor, encounter_id: str, channels: int):
        self.diarizer = diarizer
        self.store = store
        self.executor = executor
        self.encounter_id = encounter_id
        self.channels = channels
        self.stereo: deque[tuple[int, np.ndarray]] = deque()
        """Two-channel input: the last ``STEREO_KEEP_S`` of (start sample, (n, 2) float32); the
        store and the recogniser get the mixdown."""

    @property
    def hold(self) -> int:
        """How many newer segments a label may still be revised by (the drafter waits for them)."""
        return int(self.diarizer.tracker.config.revise_last) + 1

    async def warm(self, enc: Encounter) -> None:
        """A resumed stream: let the labeller hear the recent stored segments again so the
        voices it learned are not lost with the old connection (older labels stay final)."""
        for seg in await self.store.segments(enc.id, since=max(0, enc.segment_count - 60)):
            await self.label(seg)

    def keep_stereo(self, start: int, chunks: list[np.ndarray]) -> None:
        for chunk in chunks:
            self.stereo.append((start, int16_to_float(chunk)))
            start += len(chunk)
        while self.stereo and self.stereo[-1][0] - self.stereo[0][0] > STEREO_KEEP_S * SAMPLE_RATE:
            self.stereo.popleft()

    def _stereo_slice(self, a: int, b: int) -> np.ndarray | None:
        """Both channels of ``[a, b)`` if still held, else None (the labeller then uses the mix)."""
        if not self.stereo or self.stereo[0][0] > a:
            return None
        parts = [c[max(0, a - s):max(0, b - s)] for s, c in self.stereo if s < b and s + len(c) > a]
        return np.concatenate(parts) if parts else None

    async def label(self, seg: Segment) -> tuple[Segment, dict[str, Speaker]]:
        """The segment with its speaker, and revisions of earlier labels."""
        a, b = int(seg.start * SAMPLE_RATE), int(seg.end * SAMPLE_RATE) + 1
        audio = self._stereo_slice(a, b) if self.channels == 2 else None
        if audio is None:
            audio = await self.store.audio_from(self.encounter_id, a, b)
        loop = asyncio.get_running_loop()
        try:
            update = await loop.run_in_executor(self.executor, self.diarizer.add, seg, audio)
        except Exception:
            log.exception("speaker labelling failed", extra={"encounter": self.encounter_id})
            return seg, {}
        return seg.model_copy(update={"speaker": update.speaker}), {r.segment_id: r.speaker for r in update.revisions}
