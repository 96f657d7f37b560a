"""Repair of Whisper's known degenerate outputs. Pure code.

Small Whisper models sometimes loop ("ok ok ok ok …", a sentence repeated five times),
mostly on short or noisy stretches. A loop is not speech, and letting it into the
transcript would later look like evidence. Runs of the same 1–8 word n-gram repeated more
than ``keep`` times in a row are cut back to ``keep`` repeats; the words dropped are counted
so the caller can record that the segment was repaired.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def _key(token: str) -> str:
    return "".join(ch for ch in token.lower() if ch.isalnum())


def collapse_loops(tokens: Sequence[T], *, text_of=lambda t: t, keep: int = 2, max_n: int = 8) -> tuple[list[T], int]:
    """Return ``tokens`` with n-gram loops cut to ``keep`` repeats, and how many were dropped."""
    items = list(tokens)
    keys = [_key(text_of(t)) for t in items]
    out: list[T] = []
    out_keys: list[str] = []
    dropped = 0
    i = 0
    while i < len(items):
        skipped = False
        for n in range(1, max_n + 1):
            if len(out_keys) < n * keep or i + n > len(items):
                continue
            gram = keys[i : i + n]
            if not any(gram):
                continue
            if all(out_keys[-n * (r + 1) : len(out_keys) - n * r] == gram for r in range(keep)):
                dropped += n
                i += n
                skipped = True
                break
        if not skipped:
            out.append(items[i])
            out_keys.append(keys[i])
            i += 1
    return out, dropped
