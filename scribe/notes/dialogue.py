"""Benchmark dialogues (``{speaker, text}`` turns) as transcript segments.

The evaluation files in ``../shared/eval`` hold dialogues, not audio; this turns one into the
``Segment`` list the drafter consumes. Turns without times get synthetic ones (0.4 s a word)
so evidence still carries start/end.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..models import Segment, Speaker

SPEAKERS = {
    "doctor": Speaker.clinician,
    "clinician": Speaker.clinician,
    "guest_clinician": Speaker.clinician,
    "patient": Speaker.patient,
    "patient_guest": Speaker.other,
    "guest_family": Speaker.other,
    "other": Speaker.other,
}

SECONDS_PER_WORD = 0.4


def segments_from_turns(turns: Iterable[Mapping[str, Any]], *, keep_speakers: bool = True) -> list[Segment]:
    """One segment per non-empty turn, ids ``seg-00000``…, speakers mapped to ``Speaker``.

    ``keep_speakers=False`` marks every segment ``unknown`` (a recording without diarization).
    """
    out: list[Segment] = []
    clock = 0.0
    for turn in turns:
        text = str(turn.get("text") or "").strip()
        if not text:
            continue
        start = float(turn["start"]) if turn.get("start") is not None else clock
        dur = max(0.4, SECONDS_PER_WORD * len(text.split()))
        end = float(turn["end"]) if turn.get("end") is not None else start + dur
        end = max(end, start)
        clock = max(clock, end)
        speaker = SPEAKERS.get(str(turn.get("speaker", "")).lower(), Speaker.unknown)
        idx = len(out)
        out.append(
            Segment(
                id=Segment.make_id(idx),
                index=idx,
                start=start,
                end=end,
                text=text,
                speaker=speaker if keep_speakers else Speaker.unknown,
            )
        )
    return out
