"""A language-model writer, independent of where the model runs.

During the visit the session is the extractive drafter (cheap, per segment). After stop it asks
the model to rephrase the drafted statements chunk by chunk (``phrasing.py``), verifies every
bullet as soon as its line is complete, and yields the growing note: sections already phrased,
the chunk in progress (kept bullets, then the statements not yet covered), and the rest still in
their extractive form. The final note is guard-checked as a whole.

The model is anything with ``chat(messages, max_tokens, stats)`` returning an async iterator of
text deltas: ``OpenAIChat`` (an HTTP endpoint) or ``TransformersChat`` (a local model on a
worker thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from ...models import Note, Section, Segment, Sentence, Speaker
from ..extractive import IncrementalDrafter
from ..guard import GuardContext, check_note
from ..templates import Template
from .base import WriterStats
from .phrasing import (
    CHUNK_STATEMENTS,
    Chunk,
    ChunkVerifier,
    LineBuffer,
    PhrasePrompt,
    default_prompt,
    messages_for,
    plan_chunks,
)

log = logging.getLogger(__name__)


class ChatModel(Protocol):
    name: str

    def chat(self, messages: list[dict[str, str]], *, max_tokens: int, stats: WriterStats) -> AsyncIterator[str]:
        """Text deltas of the assistant's reply; raises ``WriterError`` on failure."""
        ...


class LMSession:
    def __init__(
        self,
        writer_name: str,
        model: ChatModel,
        encounter_id: str,
        template: Template,
        language: str,
        *,
        max_tokens: int,
        prompt: PhrasePrompt | None,
        chunk_size: int,
    ):
        self.writer_name = writer_name
        self.model = model
        self.template = template
        self.drafter = IncrementalDrafter(encounter_id, template, language=language)
        self.stats = WriterStats()
        self.max_tokens = max_tokens
        self.prompt = prompt or default_prompt()
        self.chunk_size = chunk_size

    def add(self, segment: Segment) -> Note:
        return self.drafter.add(segment).model_copy(update={"writer": self.writer_name})

    def relabel(self, revisions: Mapping[str, Speaker]) -> None:
        if revisions:
            self.drafter = self.drafter.relabelled(revisions)

    async def finish(self) -> AsyncIterator[Note]:
        if self.drafter.is_dictation:  # the clinician dictated the note: kept as dictated, not phrased
            yield self.drafter.finish()
            return
        base = self.drafter.finish()
        segments = [s for s in self.drafter.state.segments if s.text.strip()]
        facts = self.drafter.facts
        chunks = plan_chunks(base, self.template, facts, self.chunk_size)
        instructions = self.prompt.system + "\n" + self.template.instructions
        ctx = GuardContext.build(segments, facts, instructions)
        done: dict[str, list[Sentence]] = {s.key: [] for s in base.sections}
        earlier: set[str] = set()
        yield self._assemble(base, done, chunks, 0, None)
        for n, chunk in enumerate(chunks):
            verifier = ChunkVerifier(chunk, ctx, id_prefix=f"{chunk.section.key}.lm{n}", earlier=earlier)
            lines = LineBuffer()
            t0 = time.perf_counter()
            async for delta in self.model.chat(
                messages_for(chunk, self.template, self.prompt), max_tokens=self.max_tokens, stats=self.stats
            ):
                for line in lines.feed(delta):
                    if verifier.offer(line) is not None:
                        yield self._assemble(base, done, chunks, n, verifier)
            for line in lines.flush():
                verifier.offer(line)
            self.stats.calls += 1
            self.stats.generate_seconds += time.perf_counter() - t0
            self.stats.lm_sentences += len(verifier.accepted)
            self.stats.repaired += verifier.rejected
            done[chunk.section.key] += verifier.sentences()
            log.info(
                "chunk %d/%d section=%s kept=%d rejected=%d sources_kept=%d",
                n + 1, len(chunks), chunk.section.key, len(verifier.accepted), verifier.rejected, verifier.kept_sources,
            )
            yield self._assemble(base, done, chunks, n + 1, None)
        final = self._assemble(base, done, chunks, len(chunks), None)
        yield check_note(final, segments, facts=facts, instructions=instructions)

    def _assemble(
        self, base: Note, done: dict[str, list[Sentence]], chunks: list[Chunk], upto: int, current: ChunkVerifier | None
    ) -> Note:
        """Phrased chunks [0, upto), the chunk in progress, then the rest as drafted."""
        sections = {k: list(v) for k, v in done.items()}
        if current is not None:
            sections[current.chunk.section.key] += current.sentences()
            upto += 1
        for chunk in chunks[upto:]:
            sections[chunk.section.key] += chunk.sources
        return base.model_copy(
            update={
                "writer": self.writer_name,
                "sections": [Section(key=s.key, title=s.title, sentences=sections[s.key]) for s in base.sections],
            }
        )


class LMWriter:
    """``NoteWriter`` over any ``ChatModel``."""

    streams = True

    def __init__(
        self,
        name: str,
        model: ChatModel,
        *,
        max_tokens: int = 256,
        prompt: PhrasePrompt | None = None,
        chunk_size: int = CHUNK_STATEMENTS,
    ):
        self.name = name
        self.model = model
        self.max_tokens = max_tokens
        self.prompt = prompt
        self.chunk_size = chunk_size

    def start(self, encounter_id: str, template: Template, *, language: str = "en") -> LMSession:
        return LMSession(
            self.name, self.model, encounter_id, template, language,
            max_tokens=self.max_tokens, prompt=self.prompt, chunk_size=self.chunk_size,
        )
