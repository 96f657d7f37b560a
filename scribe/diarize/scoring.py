"""Speaker attribution error: the share of words attributed to the wrong role.

The OSCE references have speaker turns but no times, so hypothesis words (ASR output with
the labeller's roles) are aligned to reference words by text (difflib on normalised words,
no junk heuristic), and only aligned pairs are scored: an ASR error is not a speaker error.
``coverage`` says how many reference words took part. This is the word-level diarization
error rate (WDER) used in the clinical-ASR literature, restricted to aligned words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from ..models import Segment, Speaker

_ROLE = {"doctor": Speaker.clinician, "clinician": Speaker.clinician, "guest_clinician": Speaker.clinician,
         "patient": Speaker.patient}
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def role_of(reference_speaker: str) -> Speaker:
    """Reference speaker tags → roles: doctors are clinicians, patients patients, anyone else other."""
    return _ROLE.get(reference_speaker.lower(), Speaker.other)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("’", "'"))


@dataclass(frozen=True)
class LabelledWord:
    token: str
    role: Speaker
    start: float | None = None
    end: float | None = None


def reference_words(turns: Iterable[tuple[str, str]]) -> list[LabelledWord]:
    """(speaker tag, text) turns → labelled reference tokens, in order."""
    return [LabelledWord(t, role_of(spk)) for spk, text in turns for t in tokens(text)]


def hypothesis_words(segments: Sequence[Segment], word_roles: dict[str, list[Speaker]] | None = None
                     ) -> list[LabelledWord]:
    """Segments → labelled tokens; ``word_roles`` (segment id → one role per word) overrides a
    segment's single label when the labeller split a segment at a speaker change."""
    out: list[LabelledWord] = []
    for seg in segments:
        roles = (word_roles or {}).get(seg.id)
        words = seg.words or []
        if not words:
            out += [LabelledWord(t, seg.speaker) for t in tokens(seg.text)]
            continue
        for i, w in enumerate(words):
            role = roles[i] if roles and i < len(roles) else seg.speaker
            out += [LabelledWord(t, role, w.start, w.end) for t in tokens(w.text)]
    return out


@dataclass(frozen=True)
class Attribution:
    reference_words: int
    matched: int
    wrong: int

    @property
    def error(self) -> float:
        return self.wrong / self.matched if self.matched else 0.0

    @property
    def coverage(self) -> float:
        return self.matched / self.reference_words if self.reference_words else 0.0

    def __add__(self, other: Attribution) -> Attribution:
        return Attribution(self.reference_words + other.reference_words, self.matched + other.matched,
                           self.wrong + other.wrong)


def align(ref: Sequence[LabelledWord], hyp: Sequence[LabelledWord]) -> list[tuple[int, int]]:
    """(ref index, hyp index) pairs of identical tokens on the longest-matching alignment."""
    sm = SequenceMatcher(a=[w.token for w in ref], b=[w.token for w in hyp], autojunk=False)
    return [(blk.a + k, blk.b + k) for blk in sm.get_matching_blocks() for k in range(blk.size)]


def attribution(ref: Sequence[LabelledWord], hyp: Sequence[LabelledWord],
                pairs: list[tuple[int, int]] | None = None, *, from_time: float = 0.0) -> Attribution:
    """Score aligned words whose hypothesis time is ≥ ``from_time`` (to leave out audio that
    was used for enrolment)."""
    pairs = align(ref, hyp) if pairs is None else pairs
    scored = [(i, j) for i, j in pairs if (hyp[j].start or 0.0) >= from_time]
    first_ref = min((i for i, _ in scored), default=len(ref))
    wrong = sum(1 for i, j in scored if ref[i].role != hyp[j].role)
    return Attribution(len(ref) - first_ref, len(scored), wrong)


def true_roles(ref: Sequence[LabelledWord], hyp: Sequence[LabelledWord],
               pairs: list[tuple[int, int]] | None = None) -> list[Speaker | None]:
    """The reference role of each hypothesis word (None where it aligned to nothing)."""
    pairs = align(ref, hyp) if pairs is None else pairs
    out: list[Speaker | None] = [None] * len(hyp)
    for i, j in pairs:
        out[j] = ref[i].role
    return out


def confusion(ref: Sequence[LabelledWord], hyp: Sequence[LabelledWord],
              pairs: list[tuple[int, int]] | None = None) -> dict[tuple[Speaker, Speaker], int]:
    """Aligned words counted by (reference role, labelled role)."""
    pairs = align(ref, hyp) if pairs is None else pairs
    out: dict[tuple[Speaker, Speaker], int] = {}
    for i, j in pairs:
        key = (ref[i].role, hyp[j].role)
        out[key] = out.get(key, 0) + 1
    return out


@dataclass(frozen=True)
class OtherLabels:
    """How a third voice fared, from a ``confusion`` count: its aligned words, how many of
    them were labelled ``other``, and how many of everyone else's words wrongly were."""

    visitor_words: int
    visitor_as_other: int
    others_words: int
    others_as_other: int

    @classmethod
    def of(cls, conf: dict[tuple[Speaker, Speaker], int]) -> OtherLabels:
        other = Speaker.other
        return cls(sum(n for (r, _), n in conf.items() if r == other), conf.get((other, other), 0),
                   sum(n for (r, _), n in conf.items() if r != other),
                   sum(n for (r, h), n in conf.items() if r != other and h == other))

    @property
    def recall(self) -> float:
        return self.visitor_as_other / self.visitor_words if self.visitor_words else 0.0

    @property
    def false_share(self) -> float:
        return self.others_as_other / self.others_words if self.others_words else 0.0
