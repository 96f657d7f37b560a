"""One draft runner for every way a note gets written: live during a recording, and on request
from the review app (``POST /v1/review/encounters/{id}/draft``).

Both use the configured writer with the site's templates (``Engine.draft_session``), run the
per-segment work on the notes thread, and fall back to the extractive draft when the writer
fails, so a clinician always has something to review. The live path also waits for each
segment's speaker label to be final before the drafter reads it (``SettledSegments``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ..diarize.settle import SettledSegments
from ..models import Encounter, Note, Segment, Speaker
from .engine import Engine

if TYPE_CHECKING:
    from ..notes.writers import DraftSession

log = logging.getLogger(__name__)


class DraftRunner:
    """One encounter's note in progress. ``session`` is the writer's ``DraftSession``."""

    def __init__(self, engine: Engine, encounter_id: str, language: str):
        self.engine = engine
        self.encounter_id = encounter_id
        self.language = language
        self.session: DraftSession | None = None
        self.settling: SettledSegments | None = None
        """Segments wait here until their speaker labels are final, then go to the drafter."""
        self._fed: dict[str, Speaker] = {}
        """The label each segment had when the drafter read it."""

    async def open(self, *, hold: int = 0) -> None:
        """Start the writer's session on the notes thread (raises what the writer raises: a bad
        template or writer configuration). ``hold``: segments a label may still be revised by."""
        loop = asyncio.get_running_loop()
        self.session = await loop.run_in_executor(self.engine.notes_executor, self.engine.draft_session,
                                                  self.encounter_id, self.language)
        self.settling = SettledSegments(hold)

    @property
    def active(self) -> bool:
        return self.session is not None

    async def feed(self, segments: Sequence[Segment]) -> Note | None:
        """Add segments whose labels are final, on the notes thread; the draft after the last."""
        session = self.session
        if session is None or not segments:
            return None
        self._fed.update((s.id, s.speaker) for s in segments)
        return await asyncio.get_running_loop().run_in_executor(
            self.engine.notes_executor, lambda: [session.add(s) for s in segments][-1])

    async def add(self, segments: Sequence[Segment], revisions: dict[str, Speaker] | None = None) -> Note | None:
        """Newly committed segments (and label revisions of earlier ones) during the visit:
        those whose labels are now final reach the drafter."""
        if self.session is None:
            return None
        ready = list(segments)
        if self.settling is not None:
            ready = self.settling.push(ready, revisions or {})
        return await self.feed(ready)

    async def finish(self, transcript: Callable[[], Awaitable[Sequence[Segment]]],
                     on_failure: Callable[[Exception], Awaitable[None]] | None = None) -> AsyncIterator[Note]:
        """After the last segment: every label is final; the writer finishes, yielding growing
        drafts, the last one final. ``transcript()`` (the stored segments) is read once: the
        writer drafts with its labels (``_relabel``), and a writer failure yields its extractive
        draft instead, after ``on_failure`` is told."""
        assert self.session is not None
        if self.settling is not None and len(self.settling):
            await self.feed(self.settling.flush())
        final = await transcript()
        try:
            await self._relabel(final)
            async for note in self.session.finish():
                yield note
            return
        except Exception as exc:  # noqa: BLE001 - any writer failure falls back to the extractive draft
            log.error("note writer failed; using the extractive draft",
                      extra={"encounter": self.encounter_id, "error": type(exc).__name__})
            failure = exc
        if on_failure is not None:
            await on_failure(failure)
        yield await self.extractive(final)

    async def _relabel(self, final: Sequence[Segment]) -> None:
        """Labels re-decided with hindsight after the drafter read their segments (the record
        pass decides every label again with the whole visit, at each window and at stop; the
        drafter had taken a segment once ``hold`` newer ones were labelled): the writer drafts
        with the stored, final labels."""
        session = self.session
        revisions = {s.id: s.speaker for s in final if self._fed.get(s.id, s.speaker) is not s.speaker}
        if session is None or not revisions:
            return
        log.info("speaker labels revised after drafting read them",
                 extra={"encounter": self.encounter_id, "segments": len(revisions)})
        await asyncio.get_running_loop().run_in_executor(self.engine.notes_executor, session.relabel, revisions)
        self._fed.update(revisions)

    async def extractive(self, segments: Sequence[Segment]) -> Note:
        from ..notes import load_template
        from ..notes.writers import ExtractiveWriter, write_note

        notes = self.engine.settings.notes
        note, _ = await write_note(ExtractiveWriter(), list(segments), encounter_id=self.encounter_id,
                                   template=load_template(notes.template, notes.templates_dir),
                                   language=self.language)
        return note


async def write_all(engine: Engine, enc: Encounter, segments: Sequence[Segment],
                    progress: Callable[[int, int], None] | None = None, step: int = 0) -> Note:
    """A whole stored transcript into a note with the configured writer (the review app's
    "write the draft now"): fed in steps so ``progress(done, total)`` can be reported."""
    runner = DraftRunner(engine, enc.id, enc.language)
    await runner.open()
    step = step or max(1, len(segments) // 50)
    for i in range(0, len(segments), step):
        chunk = segments[i:i + step]
        await runner.feed(chunk)
        if progress is not None:
            progress(i + len(chunk), len(segments))
    t0 = time.monotonic()
    note: Note | None = None
    async def stored() -> Sequence[Segment]:
        return segments

    async for note in runner.finish(stored):
        pass
    assert note is not None
    log.info("draft written", extra={"encounter": enc.id, "segments": len(segments),
                                     "finish_s": round(time.monotonic() - t0, 2)})
    return note
