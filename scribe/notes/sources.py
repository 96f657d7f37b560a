"""Reading a transcript to draft from: a file in one of the shapes scribe writes or reads.

* ``*.transcript.json`` (what ``scribe demo`` / ``scribe stream -o`` write): a serialised
  ``Transcript``;
* ``*.jsonl``: one ``Segment`` per line, or one dialogue turn ``{"speaker", "text"[, "start",
  "end"]}`` per line;
* ``*.json`` holding a list of segments or turns, or a benchmark record with ``dialogue``.

Errors are ``TranscriptError`` naming the file and, for JSONL, the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..models import Segment, Transcript
from .dialogue import segments_from_turns


class TranscriptError(ValueError):
    pass


def _from_items(items: list[Any], where: str) -> list[Segment]:
    if not items:
        return []
    if all(isinstance(x, dict) and "id" in x and "index" in x for x in items):
        try:
            return [Segment.model_validate(x) for x in items]
        except ValidationError as e:
            raise TranscriptError(f"{where}: not a valid segment list ({e.errors()[0]['msg']})") from None
    if all(isinstance(x, dict) and "text" in x for x in items):
        return segments_from_turns(items)
    raise TranscriptError(f"{where}: expected segments (id, index, start, end, text) or turns (speaker, text)")


def load_transcript(path: Path) -> Transcript:
    """A ``Transcript`` from any supported file (encounter id = the file's stem when absent)."""
    if not path.is_file():
        raise TranscriptError(f"{path}: no such file")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TranscriptError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    stem = path.name.split(".")[0] or "encounter"
    if path.suffix == ".jsonl":
        items = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TranscriptError(f"{path}:{n}: invalid JSON ({e.msg})") from None
        return Transcript(encounter_id=stem, segments=_from_items(items, str(path)))
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise TranscriptError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if isinstance(data, dict) and "segments" in data and "encounter_id" in data:
        try:
            return Transcript.model_validate(data)
        except ValidationError as e:
            raise TranscriptError(f"{path}: not a valid transcript ({e.errors()[0]['msg']})") from None
    if isinstance(data, dict) and isinstance(data.get("dialogue"), list):
        return Transcript(encounter_id=str(data.get("id") or stem).replace("/", "_"),
                          segments=segments_from_turns(data["dialogue"]))
    if isinstance(data, list):
        return Transcript(encounter_id=stem, segments=_from_items(data, str(path)))
    raise TranscriptError(f"{path}: not a transcript (expected a Transcript, a list of segments, or a dialogue)")
