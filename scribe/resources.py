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


def find_prompts_dir() -> Path | None:
    """The first candidate that holds ``templates/`` (None: none does)."""
    for c in prompt_candidates():
        if (c / "templates").is_dir():
            return c
    return None


def prompts_dir() -> Path:
    """The built-in ``prompts/`` directory (one lookup for the whole project), or a clear error
    naming where it looked."""
    found = find_prompts_dir()
    if found is not None:
        return found
    raise FileNotFoundError(
        "scribe cannot find its prompts/ directory (templates and lexicons); looked in: "
        + ", ".join(str(p) for p in prompt_candidates())
        + ". Set SCRIBE_PROMPTS_DIR to the folder that holds templates/ and lexicon/."
    )


def default_lexicon_path() -> Path | None:
    base = find_prompts_dir()
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
