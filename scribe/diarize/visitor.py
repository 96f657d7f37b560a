"""Three-voice encounters built from two-voice recordings: a visitor joins a visit.

No evaluation recording has a third speaker, so the third-voice search is measured on
constructed ones: a real doctor–patient recording (A) with sentences of a real person from
another recording (B) spliced in at segment boundaries, twice, three sentences each time —
a relative joining the conversation. The visitor is B's *patient* (they talk about symptoms,
as a relative does), and must be a different person from both of A's speakers: the dev
recordings share actors, so a candidate whose voice centroid is within ``SAME_PERSON`` cosine
of one of A's voices is skipped.

What this does not capture: the visitor's sentences come from another room and microphone,
which makes them easier to tell apart than a relative sitting in the same room would be; and
the visitor never talks over anyone. Results on these are an upper bound for real visits.

Pure: segments, audio arrays and labelled reference words in, the same out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE
from ..models import Segment, Speaker
from .roles import sounds_like_question
from .scoring import LabelledWord, align, hypothesis_words

SAME_PERSON = 0.93
"""Voice-centroid cosine above which two recordings' speakers are taken to be one person
(same-actor pairs in the dev recordings score 0.95–0.99, different people 0.59–0.91)."""
GAP_S = 0.3


@dataclass(frozen=True)
class Recording:
    """One evaluation recording as the benchmark holds it."""

    name: str
    segments: list[Segment]
    audio: np.ndarray
    reference: list[LabelledWord]
    segment_roles: list[Speaker | None]
    """Each segment's reference role when all its aligned words share one, else None."""
    synthetic: bool = False


@dataclass(frozen=True)
class VisitorCase:
    name: str
    segments: list[Segment]
    audio: np.ndarray
    reference: list[LabelledWord]
    segment_roles: list[Speaker | None]
    visitor_from: str
    visitor_s: float


def visitor_sentences(rec: Recording, *, count: int = 6, min_s: float = 2.5) -> list[int]:
    """Indices of the first ``count`` patient statements (not questions) of ``min_s`` or more."""
    out = [i for i, (s, r) in enumerate(zip(rec.segments, rec.segment_roles))
           if r == Speaker.patient and s.end - s.start >= min_s and not sounds_like_question(s.text)]
    return out[:count]


def shift(seg: Segment, index: int, dt: float) -> Segment:
    return seg.model_copy(update={
        "id": Segment.make_id(index), "index": index, "start": seg.start + dt, "end": seg.end + dt,
        "words": [w.model_copy(update={"start": w.start + dt, "end": w.end + dt}) for w in seg.words],
    })


def _word_bounds(segments: Sequence[Segment]) -> list[tuple[int, int]]:
    """Each segment's range in ``hypothesis_words(segments)``."""
    out, k = [], 0
    for seg in segments:
        n = len(hypothesis_words([seg]))
        out.append((k, k + n))
        k += n
    return out


def ref_spans(rec: Recording, picks: Iterable[int]) -> dict[int, tuple[int, int]]:
    """For each picked segment, the reference-word range aligned to its words (one alignment)."""
    bounds = _word_bounds(rec.segments)
    starts = [a for a, _ in bounds]
    wanted = set(picks)
    refs: dict[int, list[int]] = {p: [] for p in wanted}
    for i, j in align(rec.reference, hypothesis_words(rec.segments)):
        p = bisect_right(starts, j) - 1
        if p in wanted and bounds[p][0] <= j < bounds[p][1]:
            refs[p].append(i)
    return {p: (min(r), max(r) + 1) for p, r in refs.items() if r}


def with_visitor(base: Recording, visitor: Recording, picks: Sequence[int], *, stretches: int = 2) -> VisitorCase:
    """``base`` with ``visitor``'s segments ``picks`` spliced in, in ``stretches`` equal groups
    after the segments at 1/(stretches+1), 2/(stretches+1)… of the base."""
    n = len(base.segments)
    per = max(1, len(picks) // stretches)
    groups = {n * (g + 1) // (stretches + 1): list(picks[g * per:(g + 1) * per]) for g in range(stretches)}
    base_bounds = _word_bounds(base.segments)
    base_pairs = align(base.reference, hypothesis_words(base.segments))
    spans = ref_spans(visitor, picks)

    segments: list[Segment] = []
    roles: list[Speaker | None] = []
    audio_parts: list[np.ndarray] = []
    reference: list[LabelledWord] = []
    ref_done = 0
    dt = 0.0
    cursor = 0  # base audio sample already copied
    visitor_s = 0.0
    for i, seg in enumerate(base.segments):
        segments.append(shift(seg, len(segments), dt))
        roles.append(base.segment_roles[i])
        if i not in groups:
            continue
        # cut the base audio and reference after this segment
        cut = int(seg.end * SAMPLE_RATE)
        audio_parts.append(base.audio[cursor:cut])
        cursor = cut
        ref_cut = max((a + 1 for a, b in base_pairs if b < base_bounds[i][1]), default=ref_done)
        reference += base.reference[ref_done:ref_cut]
        ref_done = max(ref_done, ref_cut)
        t = seg.end + dt
        for v in groups[i]:
            vs = visitor.segments[v]
            clip = visitor.audio[int(vs.start * SAMPLE_RATE):int(vs.end * SAMPLE_RATE)]
            gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
            audio_parts += [gap, clip]
            start = t + GAP_S
            segments.append(shift(vs, len(segments), start - vs.start))
            roles.append(Speaker.other)
            span = spans.get(v)
            if span:
                reference += [LabelledWord(w.token, Speaker.other) for w in visitor.reference[span[0]:span[1]]]
            t = start + len(clip) / SAMPLE_RATE
            visitor_s += len(clip) / SAMPLE_RATE
        gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
        audio_parts.append(gap)
        dt = t + GAP_S - seg.end
    audio_parts.append(base.audio[cursor:])
    reference += base.reference[ref_done:]
    return VisitorCase(f"{base.name}+{visitor.name}", segments, np.concatenate(audio_parts).astype(np.float32),
                       reference, roles, visitor.name, visitor_s)


def voice_centroids(rec: Recording, embed, *, max_s: float = 60.0) -> dict[Speaker, np.ndarray]:
    """Mean embedding of up to ``max_s`` of each role's clean segments (``embed``: audio → (n, d))."""
    out: dict[Speaker, np.ndarray] = {}
    for role in (Speaker.clinician, Speaker.patient):
        parts, total = [], 0.0
        for s, r in zip(rec.segments, rec.segment_roles):
            if r == role and total < max_s and s.end - s.start >= 1.0:
                parts.append(embed(rec.audio[int(s.start * SAMPLE_RATE):int(s.end * SAMPLE_RATE)]))
                total += s.end - s.start
        embs = [e for p in parts for e in p]
        if embs:
            v = np.mean(embs, axis=0)
            out[role] = v / np.linalg.norm(v)
    return out


def pick_visitor(base: str, centroids: dict[str, dict[Speaker, np.ndarray]]) -> str | None:
    """The first recording after ``base`` (in order, wrapping) whose patient is nobody in ``base``."""
    names = list(centroids)
    order = names[names.index(base) + 1:] + names[:names.index(base)]
    mine = list(centroids[base].values())
    for other in order:
        cand = centroids[other].get(Speaker.patient)
        if cand is not None and mine and max(float(cand @ v) for v in mine) < SAME_PERSON:
            return other
    return None
