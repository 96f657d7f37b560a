"""Note writers behind one seam, chosen by ``settings.notes.writer``.

    writer = writer_from_settings(settings)
    note, stats = write_note_sync(writer, segments, encounter_id="enc-1", template=load_template("soap"))

* ``extractive`` — no model; the fallback and the baseline;
* ``llama`` — a GGUF model in llama.cpp (the embedded CPU engine) writes every section from the
  conversation, fed during the visit; each sentence is verified against the segments it cites;
* ``transformers`` — a local model phrases the extracted, evidence-linked statements;
* ``openai`` — the same, through an OpenAI-compatible chat endpoint (a GPU server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    DraftSession,
    ModelMissing,
    NoteWriter,
    WriterError,
    WriterStats,
    draft_paced,
    write_note,
    write_note_sync,
)
from .extractive import ExtractiveWriter

if TYPE_CHECKING:
    from ...config import Settings

WRITERS = ("extractive", "llama", "openai", "transformers")


def writer_from_settings(settings: Settings, name: str | None = None, **overrides: Any) -> NoteWriter:
    """Build the configured writer (``name`` overrides ``settings.notes.writer``). Cheap: a model
    is loaded on first use, not here."""
    notes = settings.notes
    kind = name or notes.writer
    if kind == "extractive":
        return ExtractiveWriter()
    if kind == "llama":
        from .llama import LlamaConfig, LlamaWriter

        ll = notes.llama
        config = LlamaConfig(
            model=ll.model, cache_dir=settings.model_cache_dir, n_ctx=ll.n_ctx, threads=ll.threads,
            visit_threads=ll.visit_threads, max_tokens=ll.max_tokens, feed_during_visit=ll.feed_during_visit,
            write_during_visit=ll.write_during_visit, write_every_s=ll.write_every_s,
            after_stop_limit_s=ll.after_stop_limit_s, relabel_prompt_tokens=ll.relabel_prompt_tokens,
            hint_lines=ll.hint_lines, allow_amx=ll.allow_amx,
        )
        return LlamaWriter(config, **overrides)
    if kind == "openai":
        from .lm import LMWriter
        from .openai import OpenAIChat

        o = notes.openai
        chat = OpenAIChat(
            o.base_url, o.model, api_key=o.api_key.get_secret_value() if o.api_key else None,
            timeout=o.timeout, connect_timeout=o.connect_timeout, stream=o.stream, temperature=o.temperature,
        )
        return LMWriter("openai", chat, max_tokens=o.max_tokens, **overrides)
    if kind == "transformers":
        from .lm import LMWriter
        from .transformers import TransformersChat

        t = notes.transformers
        tchat = TransformersChat(
            t.model, settings.model_cache_dir, device=t.device, threads=t.threads, int8=t.int8
        )
        return LMWriter("transformers", tchat, max_tokens=t.max_new_tokens, **overrides)
    raise WriterError(f"unknown note writer {kind!r}; choose one of: {', '.join(WRITERS)}")


__all__ = [
    "WRITERS",
    "DraftSession",
    "draft_paced",
    "ExtractiveWriter",
    "ModelMissing",
    "NoteWriter",
    "WriterError",
    "WriterStats",
    "write_note",
    "write_note_sync",
    "writer_from_settings",
]
