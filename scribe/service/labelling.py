"""Speaker labels for one live encounter: the online labeller, fed each committed segment with
its own audio.

The labeller runs on the ASR thread pool (it embeds audio); a failure never stops
transcription — the segment keeps ``unknown``. A segment's audio is taken from the recent audio
the session already holds in memory (what it just gave the transcriber, and both channels of a
two-channel recording), so it is not read back and decrypted from the store; only audio older
than ``RECENT_S`` (a resumed encounter's warm-up) comes from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio import SAMPLE_RATE, int16_to_float
from ..diarize.tracker import Turn
from ..models import Encounter, Segment, Speaker
from ..store import AsyncStore

log = logging.getLogger(__name__)

RECENT_S = 120
"""Seconds of audio kept for the labeller (a segment is labelled seconds after it ends)."""


class RecentAudio:
    """The last ``RECENT_S`` seconds of one signal, as (start sample, samples) chunks."""

    def __init__(self) -> None:
        self.chunks: deque[tuple[int, np.ndarray]] = deque()

    def add(self, start: int, samples: np.ndarray) -> None:
        if not len(samples):
            return
        if self.chunks and start < self.chunks[-1][0] + len(self.chunks[-1][1]):
            self.chunks.clear()  # not contiguous (a re-read from the store): start again
        self.chunks.append((start, samples))
        while self.chunks and self.chunks[-1][0] - self.chunks[0][0] > RECENT_S * SAMPLE_RATE:
            self.chunks.popleft()

    def slice(self, a: int, b: int) -> np.ndarray | None:
        """Samples ``[a, b)`` if all of them are held, else None."""
        if not self.chunks or self.chunks[0][0] > a:
            return None
        end = self.chunks[-1][0] + len(self.chunks[-1][1])
        if end < b - SAMPLE_RATE // 100:  # a segment may end within 10 ms of what was decoded
            return None
        parts = [c[max(0, a - s):max(0, b - s)] for s, c in self.chunks if s < b and s + len(c) > a]
        return np.concatenate(parts) if parts else None


@dataclass(frozen=True)
class Hindsight:
    """Speaker labels re-decided with the whole visit so far."""

    revisions: dict[str, Speaker]
    """Live segment id → its new speaker (only the changed ones)."""
    turns: list[Turn]
    """Who spoke when, at word resolution where a segment holds two voices."""


class Labeller:
    """One encounter's speaker labeller (``diarizer``: an ``OnlineDiarizer``)."""

    def __init__(self, diarizer: Any, store: AsyncStore, executor: Executor, encounter_id: str, channels: int):
        self.diarizer = diarizer
        self.store = store
        self.executor = executor
        self.encounter_id = encounter_id
        self.channels = channels
        self.store_reads = 0
        """Segments whose audio had to be read back from the store (not held in memory)."""
        self.mono = RecentAudio()
        """What the transcriber was given (the mixdown of two-channel input)."""
        self.stereo = RecentAudio()
        """Two-channel input: both channels as (n, 2) float32, for labels by channel."""
        self._busy = asyncio.Lock()
        """The tracker is not thread-safe: one labelling or re-decision at a time."""

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
            self.stereo.add(start, int16_to_float(chunk))
            start += len(chunk)

    def keep(self, start: int, samples: np.ndarray) -> None:
        """Mono audio (float32) the transcriber is about to decode, from sample ``start``."""
        self.mono.add(start, samples)

    async def label(self, seg: Segment) -> tuple[Segment, dict[str, Speaker]]:
        """The segment with its speaker, and revisions of earlier labels."""
        a, b = int(seg.start * SAMPLE_RATE), int(seg.end * SAMPLE_RATE) + 1
        audio = self.stereo.slice(a, b) if self.channels == 2 else None
        if audio is None:
            audio = self.mono.slice(a, b)
        if audio is None:
            self.store_reads += 1
            audio = await self.store.audio_from(self.encounter_id, a, b)
        loop = asyncio.get_running_loop()
        try:
            async with self._busy:
                update = await loop.run_in_executor(self.executor, self.diarizer.add, seg, audio)
        except Exception:
            log.exception("speaker labelling failed", extra={"encounter": self.encounter_id})
            return seg, {}
        return seg.model_copy(update={"speaker": update.speaker}), {r.segment_id: r.speaker for r in update.revisions}

    async def hindsight(self) -> Hindsight:
        """Every label so far re-decided with the whole visit (``OnlineDiarizer.hindsight``):
        the changed segments' new speakers, and who spoke when at word resolution. Called by
        the record pass, which reads the visit after the fact; a failure changes nothing."""
        loop = asyncio.get_running_loop()

        def decide() -> Hindsight:
            revisions = self.diarizer.hindsight()
            return Hindsight({r.segment_id: r.speaker for r in revisions}, self.diarizer.turns())

        try:
            async with self._busy:
                return await loop.run_in_executor(self.executor, decide)
        except Exception:
            log.exception("speaker re-decision failed", extra={"encounter": self.encounter_id})
            return Hindsight({}, [])
