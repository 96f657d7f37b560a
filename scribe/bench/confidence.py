"""How well the recogniser's per-word probability separates wrong words from right ones.

Measures the threshold behind the guard's ``low_confidence_word`` flag: transcribe evaluation
audio offline, align every hypothesis word to the reference (Levenshtein on MedWER-normalised
tokens, trailing reference words free so a truncated reference may run past the audio), and
for candidate thresholds report the share of wrong words a threshold flags (caught) against
the share of correct words it flags (false alarms) — for all words, for the words of numbers
and doses (``find_quantities``) and for drug names (``drug_lexicon``).

Pure helpers (``align_words``, ``word_categories``, ``rates``) are separate from the run
(``measure``), which loads audio and a recogniser.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import Segment

THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class ScoredWord:
    text: str
    probability: float
    correct: bool
    number: bool
    """The word is (part of) a number or dose in the transcript."""
    drug: bool
    """The word is (part of) a drug name in the transcript."""
    file: str
    said_number: bool = False
    """The reference has a number/dose word where this word stands."""
    said_drug: bool = False
    """The reference has a drug name where this word stands (a misheard drug)."""


Normalizer = Callable[[str], str]


def _norm_tokens(text: str, normalizer: Normalizer) -> list[str]:
    return str(normalizer(text)).split()


def align_words(ref_tokens: Sequence[str], hyp_words: Sequence[Sequence[str]]) -> tuple[list[bool], list[set[int]]]:
    """For each hypothesis word (given as its normalised tokens), whether all its tokens align
    to an equal reference token, and the reference positions it is aligned to (matched or
    substituted). Edit distance with unit costs; reference tokens left over at the end are free
    (the reference of truncated audio is cut generously)."""
    hyp = [(wi, t) for wi, toks in enumerate(hyp_words) for t in toks]
    n, m = len(ref_tokens), len(hyp)
    # dp[i][j]: cost of aligning ref[:i] with hyp[:j]
    dp = [[0] * (m + 1) for _ in range(n + 1)]
    for j in range(m + 1):
        dp[0][j] = j
    for i in range(1, n + 1):
        row, prev = dp[i], dp[i - 1]
        row[0] = i
        r = ref_tokens[i - 1]
        for j in range(1, m + 1):
            sub = prev[j - 1] + (0 if r == hyp[j - 1][1] else 1)
            row[j] = min(prev[j] + 1, row[j - 1] + 1, sub)
    i = min(range(n + 1), key=lambda k: (dp[k][m], -k))
    j = m
    ok = [True] * m
    at: list[int | None] = [None] * m
    while j > 0:
        if i > 0 and dp[i][j] == dp[i - 1][j - 1] + (0 if ref_tokens[i - 1] == hyp[j - 1][1] else 1):
            ok[j - 1] = ref_tokens[i - 1] == hyp[j - 1][1]
            at[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif dp[i][j] == dp[i][j - 1] + 1:
            ok[j - 1] = False  # inserted
            j -= 1
        else:
            i -= 1
    out = [True] * len(hyp_words)
    where: list[set[int]] = [set() for _ in hyp_words]
    for (wi, _), good, a in zip(hyp, ok, at):
        out[wi] = out[wi] and good
        if a is not None:
            where[wi].add(a)
    return out, where


def word_categories(seg: Segment) -> list[tuple[bool, bool]]:
    """(number, drug) for each of ``seg.words``: the word overlaps a quantity (value or unit,
    ``find_quantities``) or a drug-lexicon match in the segment text."""
    from ..notes.numbers import find_quantities
    from ..notes.resources import drug_lexicon
    from ..notes.text import tokenize

    text = " ".join(w.text for w in seg.words)
    spans, pos = [], 0
    for w in seg.words:
        spans.append((pos, pos + len(w.text)))
        pos += len(w.text) + 1
    toks = tokenize(text)
    qty = [(q.start, q.end) for q in find_quantities(text, toks)]
    drugs = [(toks[m.start].start, toks[m.end - 1].end) for m in drug_lexicon().find(toks)]

    def hits(a: int, b: int, ranges: list[tuple[int, int]]) -> bool:
        return any(a < e and s < b for s, e in ranges)

    return [(hits(a, b, qty), hits(a, b, drugs)) for a, b in spans]


def score_transcript(segments: Sequence[Segment], reference: str, file: str,
                     normalizer: Normalizer) -> list[ScoredWord]:
    words = [w for s in segments for w in s.words]
    cats = [c for s in segments for c in word_categories(s)]
    hyp_tokens = [_norm_tokens(w.text, normalizer) for w in words]
    ref_tokens = [t for w in reference.split() for t in _norm_tokens(w, normalizer)]
    ref_cats = _reference_categories(reference, normalizer)
    ok, where = align_words(ref_tokens, hyp_tokens)
    return [
        ScoredWord(w.text, w.probability, good, num, drug, file,
                   said_number=any(ref_cats[i][0] for i in at), said_drug=any(ref_cats[i][1] for i in at))
        for w, toks, good, (num, drug), at in zip(words, hyp_tokens, ok, cats, where)
        if toks
    ]


def _reference_categories(reference: str, normalizer: Normalizer) -> list[tuple[bool, bool]]:
    """(number, drug) per normalised reference token, in the order ``score_transcript`` builds
    them (each reference word normalised on its own)."""
    from ..models import Word

    ref_words = reference.split()
    seg = Segment(id="ref", index=0, start=0, end=0, text=reference,
                  words=[Word(text=w, start=0, end=0, probability=1.0) for w in ref_words])
    out = []
    for w, cat in zip(ref_words, word_categories(seg)):
        out += [cat] * len(_norm_tokens(w, normalizer))
    return out


def rates(words: Sequence[ScoredWord], threshold: float) -> dict[str, Any]:
    wrong = [w for w in words if not w.correct]
    right = [w for w in words if w.correct]
    caught = sum(w.probability < threshold for w in wrong)
    false = sum(w.probability < threshold for w in right)
    flagged = caught + false
    return {
        "threshold": threshold,
        "words": len(words),
        "wrong": len(wrong),
        "wrong_flagged": caught / len(wrong) if wrong else None,
        "correct_flagged": false / len(right) if right else None,
        "precision": caught / flagged if flagged else None,
    }


def measure(files: Sequence[Path], recognizer: Callable[[], Any], *, max_seconds: float = 300.0, cache: Path | None = None,
            tag: str = "tiny.en", log: Callable[[str], None] = print) -> list[ScoredWord]:
    """Transcribe (offline, first ``max_seconds``) and score every hypothesis word of each file.
    ``cache``: a folder for the transcripts, so re-analysis does not re-transcribe."""
    import medwer

    from ..asr.offline import transcribe_samples
    from ..audio import load_audio

    normalizer = medwer.Normalizer()
    out: list[ScoredWord] = []
    for path in files:
        meta = json.loads(path.with_suffix(".json").read_text())
        ref = meta["reference_text"]  # the spoken form: "milligrams", not "mg"
        cached = cache / f"{path.stem}-{tag}-{int(max_seconds)}.json" if cache else None
        if cached and cached.is_file():
            segments = [Segment.model_validate(s) for s in json.loads(cached.read_text())]
        else:
            audio = load_audio(path)
            if max_seconds:
                audio = audio[: int(max_seconds * 16000)]
            segments = transcribe_samples(recognizer(), audio).segments
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps([s.model_dump(mode="json") for s in segments]))
        dur = float(meta.get("duration_s") or 0)
        if max_seconds and dur > max_seconds:
            words = ref.split()
            # the reference is not time-aligned: keep a proportional share plus 15 %; the
            # alignment leaves trailing reference words free
            ref = " ".join(words[: int(len(words) * min(1.0, 1.15 * max_seconds / dur))])
        scored = score_transcript(segments, ref, path.name, normalizer)
        log(f"{path.name}: {len(scored)} words, {sum(not w.correct for w in scored)} wrong")
        out.extend(scored)
    return out


def report(words: Sequence[ScoredWord], thresholds: Sequence[float] = THRESHOLDS) -> dict[str, list[dict[str, Any]]]:
    groups = {
        "all words": list(words),
        "numbers/doses": [w for w in words if w.number],
        "drug names": [w for w in words if w.drug],
        "where a number/dose was said": [w for w in words if w.said_number],
        "where a drug name was said": [w for w in words if w.said_drug],
        "number, dose or drug (either side)": [w for w in words if w.number or w.drug or w.said_number or w.said_drug],
    }
    return {name: [rates(ws, t) for t in thresholds] for name, ws in groups.items()}
