"""The ``extractive`` writer: the existing no-LM drafter behind the ``NoteWriter`` seam."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from ...models import Note, Segment, Speaker
from ..extractive import IncrementalDrafter
from ..templates import Template
from .base import WriterStats


class ExtractiveSession:
    def __init__(self, encounter_id: str, template: Template, language: str):
        self.drafter = IncrementalDrafter(encounter_id, template, language=language)
        self.stats = WriterStats()

    def add(self, segment: Segment) -> Note:
        return self.drafter.add(segment)

    def relabel(self, revisions: Mapping[str, Speaker]) -> None:
        if revisions:
            self.drafter = self.drafter.relabelled(revisions)

    async def finish(self) -> AsyncIterator[Note]:
        # all the work was done in add(); finishing only assembles and lists omissions
        yield self.drafter.finish()


class ExtractiveWriter:
    """Utterances placed in sections and cleaned up, every one with its evidence. No model.

    A dictation comes back as dictated (headings, numbered items, wording; ``writer`` is
    ``"dictation"``): the drafter routes it, see ``scribe/notes/dictation.py``."""

    name = "extractive"
    streams = False

    def start(self, encounter_id: str, template: Template, *, language: str = "en") -> ExtractiveSession:
        return ExtractiveSession(encounter_id, template, language)
