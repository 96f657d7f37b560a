"""Where the plain-text resources (templates, lexicons) live.

They sit in the repository's top-level ``prompts/`` directory so a clinician can read and copy
them. An editable install finds them beside the package; a container or wheel install points
``SCRIBE_PROMPTS_DIR`` at a copy (the Dockerfile does).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def prompt_candidates() -> list[Path]:
    """Where ``prompts/`` is looked for, in order."""
    candidates = []
    if os.environ.get("SCRIBE_PROMPTS_DIR"):
        candidates.append(Path(os.environ["SCRIBE_PROMPTS_DIR"]).expanduser())
    pkg = Path(__file__).resolve().parent
    candidates += [pkg.parent / "prompts", pkg / "prompts", Path(sys.prefix) / "share" / "scribe" / "prompts"]
    return candidates


def prompts_dir() -> Path | None:
    for c in prompt_candidates():
        if (c / "templates").is_dir():
            return c
    return None


def default_lexicon_path() -> Path | None:
    base = prompts_dir()
    return base / "lexicon" / "drugs.txt" if base else None


def samples_dir() -> Path | None:
    for c in (
        Path(os.environ.get("SCRIBE_SAMPLES_DIR", "")) if os.environ.get("SCRIBE_SAMPLES_DIR") else None,
        Path(__file__).resolve().parent.parent / "samples",
        Path(sys.prefix) / "share" / "scribe" / "samples",
    ):
        if c is not None and c.is_dir():
            return c
    return None
