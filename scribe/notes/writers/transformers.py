"""A local model run with transformers, on a worker thread (the event loop never blocks).

The model is loaded once per process and shared (``load_lm``); one generation runs at a time
per model. Greedy decoding, so the same input gives the same note. On CPU, dynamic int8
quantisation of the Linear layers except ``lm_head`` and ``down_proj`` is applied when
``int8=True``: measured 1.4–1.6× faster with the same output on Qwen2.5-1.5B, whereas
quantising every Linear was faster still but wrecked the output.

torch and transformers are imported lazily: ``scribe --help`` and the extractive writer never
pay for them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import WriterError, WriterStats
from .lm_models import _require_transformers, converted_dir, resolve_source

log = logging.getLogger(__name__)
_LOADED: dict[tuple[str, str, bool], LoadedLM] = {}
_LOAD_LOCK = threading.Lock()


@dataclass
class LoadedLM:
    name: str
    model: Any
    tokenizer: Any
    device: str
    load_seconds: float
    lock: threading.Lock


def _keep_float(name: str) -> bool:
    return name.endswith(("lm_head", "down_proj"))


def load_lm(name: str, cache_dir: Path, *, device: str = "auto", threads: int = 0, int8: bool = False) -> LoadedLM:
    """Resolve, convert once if needed, load (cached per process)."""
    _require_transformers()
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (name, device, int8)
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        if threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        path = converted_dir(resolve_source(name, cache_dir), cache_dir)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = torch.float16 if device == "cuda" else torch.float32
        try:
            tok = AutoTokenizer.from_pretrained(str(path))
            # Any: transformers types ``.to`` through a decorator mypy cannot follow
            loaded: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
            model = loaded.to(device).eval()
        except (OSError, ValueError) as exc:
            raise WriterError(f"cannot load the note model from {path}: {exc}") from None
        if int8 and device == "cpu":
            from torch.ao.quantization import quantize_dynamic

            targets = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not _keep_float(n)}
            with warnings.catch_warnings():  # torch.ao deprecation notices; the call itself is what was measured
                warnings.simplefilter("ignore")
                model = quantize_dynamic(model, targets, dtype=torch.qint8)  # type: ignore[no-untyped-call]
        lm = LoadedLM(name, model, tok, device, time.perf_counter() - t0, threading.Lock())
        log.info("note model %s loaded on %s in %.1f s", name, device, lm.load_seconds)
        _LOADED[key] = lm
        return lm


class TransformersChat:
    """``ChatModel`` over a local transformers model; text streams as it is generated."""

    name = "transformers"

    def __init__(
        self,
        model: str,
        cache_dir: Path,
        *,
        device: str = "auto",
        threads: int = 0,
        int8: bool = False,
        repetition_penalty: float = 1.05,
    ):
        self.model_name = model
        self.cache_dir = cache_dir
        self.device = device
        self.threads = threads
        self.int8 = int8
        self.repetition_penalty = repetition_penalty
        self._lm: LoadedLM | None = None

    def load(self) -> LoadedLM:
        if self._lm is None:
            self._lm = load_lm(self.model_name, self.cache_dir, device=self.device, threads=self.threads, int8=self.int8)
        return self._lm

    async def chat(self, messages: list[dict[str, str]], *, max_tokens: int, stats: WriterStats) -> AsyncIterator[str]:
        lm = await asyncio.to_thread(self.load)
        import torch
        from transformers import TextIteratorStreamer

        enc = lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        input_ids = enc["input_ids"].to(lm.device)
        attention = enc["attention_mask"].to(lm.device)
        streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                with lm.lock, torch.inference_mode():
                    t0 = time.perf_counter()
                    out = lm.model.generate(
                        input_ids=input_ids,
                        attention_mask=attention,
                        max_new_tokens=max_tokens,
                        do_sample=False,
                        repetition_penalty=self.repetition_penalty,
                        streamer=streamer,
                        pad_token_id=lm.tokenizer.pad_token_id or lm.tokenizer.eos_token_id,
                    )
                    result["tokens"] = int(out.shape[1] - input_ids.shape[1])
                    result["seconds"] = time.perf_counter() - t0
            except BaseException as exc:  # noqa: BLE001 - handed to the async side
                result["error"] = exc
                streamer.end()  # type: ignore[no-untyped-call]

        worker = threading.Thread(target=run, name="scribe-lm", daemon=True)
        worker.start()
        it = iter(streamer)
        while True:
            piece = await asyncio.to_thread(next, it, None)
            if piece is None:
                break
            if piece:
                yield piece
        await asyncio.to_thread(worker.join)
        if "error" in result:
            raise WriterError(f"the note model {self.model_name} failed: {type(result['error']).__name__}") from None
        stats.prompt_tokens += int(input_ids.shape[1])
        stats.completion_tokens += result.get("tokens", 0)
        stats.extra["lm_seconds"] = stats.extra.get("lm_seconds", 0.0) + result.get("seconds", 0.0)
