"""The seam between the drafting pipeline and whatever writes the prose.

Every writer works in two phases, because the note must be nearly ready when the clinician
presses stop:

* during the visit, ``DraftSession.add(segment)`` does the cheap, per-segment work (utterance
  split, section classification, fact extraction, evidence) and returns the partial note;
* after stop, ``DraftSession.finish()`` is an async iterator of growing drafts: the last one it
  yields is the final, guard-checked note. A writer that does not stream yields once.

A language-model writer never sees the raw transcript alone: it is handed the extractive
drafter's evidence-linked bullets and the extracted facts, rephrases them, and the guard
re-checks what comes back ("extract first, generate second").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ...models import Note, Segment, Speaker
from ..templates import Template


class WriterError(RuntimeError):
    """A writer could not produce a note (endpoint down, timeout, model missing). The message
    says what to fix and carries no transcript or note text."""


class ModelMissing(WriterError):
    """A local model the configured writer needs is not installed; the message names the package."""


@dataclass
class WriterStats:
    """What a draft cost (for ``scribe eval notes`` and logs: numbers only, no PHI)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    generate_seconds: float = 0.0
    lm_sentences: int = 0
    """Sentences the LM wrote that passed the guard and were kept."""
    repaired: int = 0
    """LM sentences the guard flagged, replaced by the evidence-linked bullets they came from."""
    calls: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float | None:
        if self.completion_tokens and self.generate_seconds > 0:
            return self.completion_tokens / self.generate_seconds
        return None


@runtime_checkable
class DraftSession(Protocol):
    """One encounter's draft in progress."""

    stats: WriterStats

    def add(self, segment: Segment) -> Note:
        """Take one committed segment (in order); return the partial note. Cheap: no LM call."""
        ...

    def relabel(self, revisions: Mapping[str, Speaker]) -> None:
        """Speaker labels of segments already taken, re-decided with hindsight (by segment
        id): the draft is written as if they had come with those labels. Called before
        ``finish``, on the notes thread."""
        ...

    def finish(self) -> AsyncIterator[Note]:
        """After stop: growing drafts; the last one yielded is the final note."""
        ...


@runtime_checkable
class NoteWriter(Protocol):
    """Chosen by ``settings.notes.writer``; see ``scribe.notes.writers.writer_from_settings``."""

    name: str
    streams: bool
    """Whether ``finish()`` yields intermediate drafts worth showing."""

    def start(self, encounter_id: str, template: Template, *, language: str = "en") -> DraftSession:
        ...


async def write_note(
    writer: NoteWriter,
    segments: Iterable[Segment],
    *,
    encounter_id: str,
    template: Template,
    language: str = "en",
    on_draft: Callable[[Note], object] | None = None,
) -> tuple[Note, WriterStats]:
    """One-shot: feed every segment, then finish; ``on_draft(note)`` sees each growing draft."""
    session = writer.start(encounter_id, template, language=language)
    for seg in segments:
        session.add(seg)
    note: Note | None = None
    async for note in session.finish():
        if on_draft is not None:
            on_draft(note)
    assert note is not None, "a draft session must yield at least the final note"
    return note, session.stats


async def draft_paced(
    writer: NoteWriter, segments: Sequence[Segment], encounter_id: str, template: Template
) -> tuple[Note, WriterStats, float, float]:
    """(note, stats, seconds in add() per segment, seconds from stop to the final draft), for
    the evaluations.

    A writer that works in the background during the visit (``settle()``: the llama writer
    reads the transcript and writes sections as the visit goes on) is paced as in a live visit,
    where speech arrives far slower than the model reads it: after each segment it is allowed
    to finish what that segment started before the next one comes. How much model time that
    took, against the visit's length, is in its stats (``feed_seconds``,
    ``visit_write_seconds``): above the visit's length the model would fall behind a real visit."""
    session = writer.start(encounter_id, template)
    settle = getattr(session, "settle", None)
    in_add = 0.0
    for s in segments:
        t0 = time.perf_counter()
        session.add(s)
        in_add += time.perf_counter() - t0
        if settle is not None:
            await settle()
    per_seg = in_add / max(1, len(segments))
    t1 = time.perf_counter()
    note: Note | None = None
    async for note in session.finish():
        pass
    assert note is not None, "a draft session must yield at least the final note"
    return note, session.stats, per_seg, time.perf_counter() - t1


def write_note_sync(writer: NoteWriter, segments: Iterable[Segment], **kw: Any) -> tuple[Note, WriterStats]:
    """``write_note`` for synchronous callers (the CLI, the eval harness)."""
    return asyncio.run(write_note(writer, segments, **kw))
