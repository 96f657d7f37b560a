"""Harder speaker-labelling cases built from the two-voice dev recordings.

The dev recordings are easy in the ways the online labeller was fitted on: long visits, the
clinician speaks first and often, the two voices are distinct. Unseen visits break those
habits, so the benchmark also labels recordings rebuilt from the same segments (their audio,
their streaming transcript, their aligned reference words):

- ``short``: only the first ``SHORT_S`` seconds (little evidence before the visit ends);
- ``patient-first``: the patient's first statements moved to the start (the first voice heard
  is not the clinician's);
- ``clinician-silent``: the clinician's segments dropped over the middle ``SILENT_SHARE`` of the
  visit (the patient talks for minutes with no one answering);
- ``similar-voices``: the patient's segments replaced by those of the patient of another
  recording whose voice is the nearest to this clinician's (a different person, by
  ``visitor.SAME_PERSON``) — two voices the encoder hardly tells apart.

Segments are joined with ``GAP_S`` of silence; a segment keeps its own transcript and the
reference words aligned to it, so word errors of the recogniser are not counted as speaker
errors, as in the benchmark's other figures. Pure: recordings in, cases out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE
from ..models import Segment, Speaker
from .scoring import LabelledWord
from .visitor import GAP_S, SAME_PERSON, Recording, ref_spans, shift

SHORT_S = 90.0
"""A short visit: the first minute and a half."""
PATIENT_FIRST_S = 20.0
"""Seconds of the patient's statements moved before everything else."""
SILENT_SHARE = 0.4
"""Share of the visit's segments, from a quarter in, over which the clinician says nothing."""


@dataclass(frozen=True)
class Case:
    """A rebuilt recording: what the labeller is given and what it is scored against."""

    name: str
    kind: str
    segments: list[Segment]
    audio: np.ndarray
    reference: list[LabelledWord]
    segment_roles: list[Speaker | None]


def splice(name: str, kind: str, picks: Sequence[tuple[Recording, int]]) -> Case:
    """The picked segments (recording, index) one after another, ``GAP_S`` apart, with their
    audio and the reference words aligned to each."""
    spans: dict[str, dict[int, tuple[int, int]]] = {}
    for rec, _ in picks:
        if rec.name not in spans:
            spans[rec.name] = ref_spans(rec, range(len(rec.segments)))
    segments: list[Segment] = []
    roles: list[Speaker | None] = []
    reference: list[LabelledWord] = []
    parts: list[np.ndarray] = []
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
    t = 0.0
    for rec, i in picks:
        seg = rec.segments[i]
        clip = rec.audio[int(seg.start * SAMPLE_RATE):int(seg.end * SAMPLE_RATE)]
        start = t + GAP_S
        segments.append(shift(seg, len(segments), start - seg.start))
        roles.append(rec.segment_roles[i])
        span = spans[rec.name].get(i)
        if span:
            reference += rec.reference[span[0]:span[1]]
        parts += [gap, clip]
        t = start + len(clip) / SAMPLE_RATE
    audio = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)
    return Case(name, kind, segments, audio, reference, roles)


def short(rec: Recording, seconds: float = SHORT_S) -> Case:
    picks = [(rec, i) for i, s in enumerate(rec.segments) if s.end <= seconds]
    return splice(f"{rec.name}:short", "short", picks)


def patient_first(rec: Recording, seconds: float = PATIENT_FIRST_S) -> Case | None:
    first, total = [], 0.0
    for i, (s, role) in enumerate(zip(rec.segments, rec.segment_roles)):
        if total >= seconds:
            break
        if role == Speaker.patient:
            first.append(i)
            total += s.end - s.start
    if total < seconds / 2:
        return None
    rest = [i for i in range(len(rec.segments)) if i not in set(first)]
    return splice(f"{rec.name}:patient-first", "patient-first", [(rec, i) for i in first + rest])


def clinician_silent(rec: Recording, share: float = SILENT_SHARE) -> Case:
    n = len(rec.segments)
    a, b = n // 4, n // 4 + int(n * share)
    picks = [(rec, i) for i in range(n)
             if not (a <= i < b and rec.segment_roles[i] != Speaker.patient)]
    return splice(f"{rec.name}:clinician-silent", "clinician-silent", picks)


def similar_voices(rec: Recording, others: Sequence[Recording],
                   centroids: Callable[[Recording], dict[Speaker, np.ndarray]]) -> Case | None:
    """``rec`` with its patient's segments replaced, in order, by the statements of the
    patient (of another recording) whose voice is nearest this clinician's but not theirs."""
    mine = centroids(rec)
    clin = mine.get(Speaker.clinician)
    if clin is None:
        return None
    best, best_sim = None, -2.0
    for other in others:
        if other.name == rec.name:
            continue
        cand = centroids(other).get(Speaker.patient)
        if cand is None or max(float(cand @ v) for v in mine.values()) >= SAME_PERSON:
            continue  # one of this recording's own speakers (the dev recordings share actors)
        sim = float(cand @ clin)
        if sim > best_sim:
            best, best_sim = other, sim
    if best is None:
        return None
    theirs = [i for i, r in enumerate(best.segment_roles) if r == Speaker.patient]
    picks: list[tuple[Recording, int]] = []
    k = 0
    for i, role in enumerate(rec.segment_roles):
        if role == Speaker.clinician:
            picks.append((rec, i))
        elif role == Speaker.patient and k < len(theirs):
            picks.append((best, theirs[k]))
            k += 1
    return splice(f"{rec.name}:similar-voices({best.name}, {best_sim:.2f})", "similar-voices", picks)


def harder_cases(recordings: Sequence[Recording],
                 centroids: Callable[[Recording], dict[Speaker, np.ndarray]]) -> list[Case]:
    """Every harder case the recordings allow, in recording order."""
    out: list[Case] = []
    for rec in recordings:
        out.append(short(rec))
        first = patient_first(rec)
        if first is not None:
            out.append(first)
        out.append(clinician_silent(rec))
        similar = similar_voices(rec, recordings, centroids)
        if similar is not None:
            out.append(similar)
    return out
