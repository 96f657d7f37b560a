"""Marks on the words the recogniser was unsure of, in transcript lines and evidence quotes.

A word whose probability (``Segment.words``, kept from the recogniser through the API) is below
``LOW_CONFIDENCE_WORD`` — the same threshold at which the guard flags a drug name or number —
is underlined in amber, so the clinician knows which words to check against the recording.
Segments without words (typed or older transcripts) render exactly as before.
"""

from __future__ import annotations

from rich.text import Text

from scribe.models import LOW_CONFIDENCE_WORD, Segment

LOW_CONFIDENCE_STYLE = "underline #ffd75f"


def low_confidence_spans(seg: Segment, threshold: float = LOW_CONFIDENCE_WORD) -> list[tuple[int, int]]:
    """Character spans in ``seg.text`` of the words below ``threshold`` (words found in order;
    one the text no longer holds is skipped)."""
    out, pos, low = [], 0, seg.text.lower()
    for w in seg.words:
        t = w.text.strip().lower()
        i = low.find(t, pos) if t else -1
        if i < 0:
            continue
        pos = i + len(t)
        if w.probability < threshold:
            out.append((i, pos))
    return out


def mark_segment_text(text: Text, at: int, seg: Segment, start: int = 0, end: int | None = None,
                      threshold: float = LOW_CONFIDENCE_WORD) -> None:
    """Style the low-confidence words of ``seg.text[start:end]``, which ``text`` holds from
    offset ``at`` on (in place)."""
    end = len(seg.text) if end is None else end
    for a, b in low_confidence_spans(seg, threshold):
        a, b = max(a, start), min(b, end)
        if a < b:
            text.stylize(LOW_CONFIDENCE_STYLE, at + a - start, at + b - start)
