"""Repair of Whisper's known degenerate outputs. Pure code.

Small Whisper models sometimes loop ("ok ok ok ok …", a sentence repeated five times),
mostly on short or noisy stretches. A loop is not speech, and letting it into the
transcript would later look like evidence. Runs of one- or two-word n-grams repeated more
than ``keep`` times in a row are cut back to ``keep`` repeats; a phrase of three to eight
words immediately repeated is cut back to one. The words dropped are counted so the caller
can record that the segment was repaired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def _key(token: str) -> str:
    return "".join(ch for ch in token.lower() if ch.isalnum())


def collapse_loops(tokens: Sequence[T], *, text_of: Callable[[Any], str] = lambda t: t, keep: int = 2,
                   max_n: int = 8) -> tuple[list[T], int]:
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
            # A repeated word or pair is often real ("no, no"); a repeated phrase of three
            # or more words right after itself is the model looping.
            k = keep if n < 3 else 1
            if len(out_keys) < n * k or i + n > len(items):
                continue
            gram = keys[i : i + n]
            if not any(gram):
                continue
            if all(out_keys[-n * (r + 1) : len(out_keys) - n * r] == gram for r in range(k)):
                dropped += n
                i += n
                skipped = True
                break
        if not skipped:
            out.append(items[i])
            out_keys.append(keys[i])
            i += 1
    return out, dropped


def drop_overlap(previous: Sequence[str], new: Sequence[T], *, text_of: Callable[[Any], str] = lambda t: t,
                 min_match: int = 3,
                 search: int = 15) -> tuple[list[T], int]:
    """Drop the start of ``new`` that repeats the end of ``previous`` (already committed).

    Re-decoded lead-in audio can leak a few words past the time filter when word timestamps
    are imprecise. If the longest run of ``previous``'s last words (at least ``min_match``)
    reappears within the first ``search`` words of ``new``, everything up to and including it
    is dropped. Returns the kept items and how many were dropped.
    """
    prev = [k for k in (_key(p) for p in previous) if k]
    keys = [_key(text_of(t)) for t in new]
    best_end = 0
    for n in range(min(len(prev), search), min_match - 1, -1):
        tail = prev[-n:]
        for start in range(0, min(search, len(keys)) - n + 1):
            window = [k for k in keys[start : start + n]]
            if window == tail:
                best_end = start + n
                break
        if best_end:
            break
    return list(new[best_end:]), best_end
