"""Which part of a note an utterance belongs to: a small naive Bayes model, pure Python.

Two multinomial naive Bayes models over words, word pairs and a few cue features, fitted on
``../shared/eval/train/`` only by ``scripts/train_section_classifier.py`` and stored in
``scribe/notes/data/section_classifier.json``:

* ``division`` — ``subjective`` / ``objective_exam`` / ``objective_results`` /
  ``assessment_and_plan`` / ``none`` (small talk that no note would contain), learned from
  ACI-Bench train dialogues aligned to their reference notes;
* ``topic`` — the finer kinds templates route on (``hpi``, ``medications``, ``plan`` …), learned
  from MTS-Dialog train section labels.

A filter over the visit (an HMM forward pass with transitions learned from the same dialogues)
lets what came before inform the current utterance. It looks only backwards, so the label of an
utterance never changes when later ones arrive: incremental and one-shot drafting agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .text import tokenize

DATA_PATH = Path(__file__).with_name("data") / "section_classifier.json"

DIVISIONS = ("subjective", "objective_exam", "objective_results", "assessment_and_plan", "none")
SUBJECTIVE_TOPICS = (
    "chief_complaint", "hpi", "ros", "pmh", "psh", "medications", "allergies", "social_family",
)  # fmt: skip
DIVISION_TOPICS: dict[str, tuple[str, ...]] = {
    "subjective": SUBJECTIVE_TOPICS,
    "objective_exam": ("exam",),
    "objective_results": ("results",),
    "assessment_and_plan": ("assessment", "plan"),
}

_QUESTION_OPENERS = frozenset(
    "do did does have has are is was were any how what when where which why can could would".split()
)


def features(text: str, speaker: str = "unknown") -> list[str]:
    """Bag of features for one utterance: words, adjacent word pairs, speaker, cues.

    Numbers become ``<num>``; the same function is used to fit and to predict.
    """
    toks = [t for t in tokenize(text)]
    words = ["<num>" if t.kind == "num" else t.norm for t in toks if t.kind != "sym"]
    feats = list(words)
    feats += [f"{a}_{b}" for a, b in zip(words, words[1:])]
    feats.append(f"spk={speaker}")
    if text.rstrip().endswith("?") or (words and words[0] in _QUESTION_OPENERS):
        feats.append("is_question")
    if len(words) <= 3:
        feats.append("short")
    return feats


@dataclass(frozen=True)
class NaiveBayes:
    labels: tuple[str, ...]
    log_prior: tuple[float, ...]
    log_lik: Mapping[str, tuple[float, ...]]
    """feature → per-label log P(feature | label); unseen features are skipped."""
    unseen: tuple[float, ...] = ()
    """per-label log P of a known feature never seen with that label."""

    def scores(self, feats: Iterable[str], allowed: Sequence[str] | None = None) -> dict[str, float]:
        s = list(self.log_prior)
        for f in feats:
            ll = self.log_lik.get(f)
            if ll is not None:
                for k in range(len(s)):
                    s[k] += ll[k]
        out = dict(zip(self.labels, s))
        if allowed is not None:
            out = {k: v for k, v in out.items() if k in allowed}
        return out

    def predict(self, feats: Iterable[str], allowed: Sequence[str] | None = None) -> str:
        sc = self.scores(feats, allowed)
        return max(sc, key=lambda k: (sc[k], -self.labels.index(k)))

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "NaiveBayes":
        scale = float(d.get("log_lik_scale", 1))
        unseen = tuple(x / scale for x in d["unseen"])
        log_lik = {}
        for k, pairs in d["log_lik"].items():
            row = list(unseen)
            for i in range(0, len(pairs), 2):
                row[pairs[i]] = pairs[i + 1] / scale
            log_lik[k] = tuple(row)
        return NaiveBayes(
            labels=tuple(d["labels"]),
            log_prior=tuple(d["log_prior"]),
            log_lik=log_lik,
            unseen=unseen,
        )


def softmax(scores: Mapping[str, float], temperature: float = 1.0) -> dict[str, float]:
    m = max(scores.values())
    ex = {k: math.exp((v - m) / temperature) for k, v in scores.items()}
    z = sum(ex.values())
    return {k: v / z for k, v in ex.items()}


NOTE_DIVISIONS = DIVISIONS[:-1]


@dataclass(frozen=True)
class SectionClassifier:
    division: NaiveBayes
    topic: NaiveBayes
    transitions: Mapping[str, Mapping[str, float]]
    """P(phase_t | phase_t-1) between the four note divisions (small talk skipped), and from
    ``<start>``: a visit mostly runs subjective → exam → results → assessment and plan."""
    temperature: float
    """Divides naive Bayes log-scores before the forward pass (NB is overconfident)."""
    meta: Mapping[str, object]
    keep_threshold: float = 0.5
    """An utterance is small talk (``none``) when naive Bayes gives P(none) ≥ this."""

    def initial_state(self) -> dict[str, float]:
        start = self.transitions.get("<start>")
        return dict(start) if start else {d: 1 / len(NOTE_DIVISIONS) for d in NOTE_DIVISIONS}

    def step(
        self, belief: Mapping[str, float] | None, text: str, speaker: str = "unknown"
    ) -> tuple[str, str, dict[str, float]]:
        """Classify one utterance given the phase belief after the previous one.

        Returns (division, topic, new belief); ``belief=None`` is the start of the visit. The
        belief moves in proportion to how note-worthy the utterance is, so small talk barely
        shifts the phase.
        """
        feats = features(text, speaker)
        scores = self.division.scores(feats)
        p_none = softmax(scores)["none"]
        lik = softmax({d: scores[d] for d in NOTE_DIVISIONS}, self.temperature)
        phase = dict(belief) if belief is not None else None
        if phase is None:
            prior = self.initial_state()
        else:
            prior = {
                d: sum(phase[p] * self.transitions[p].get(d, 0.0) for p in NOTE_DIVISIONS)
                for d in NOTE_DIVISIONS
            }
        post = {d: prior[d] * lik[d] for d in NOTE_DIVISIONS}
        z = sum(post.values()) or 1.0
        post = {d: v / z for d, v in post.items()}
        w = 1.0 - p_none
        base = phase if phase is not None else prior
        new_belief = {d: round((1 - w) * base[d] + w * post[d], 12) for d in NOTE_DIVISIONS}
        best = max(NOTE_DIVISIONS, key=lambda d: (post[d], -NOTE_DIVISIONS.index(d)))
        division = "none" if p_none >= self.keep_threshold else best
        return division, self.topic_of(division, feats), new_belief

    def best_note_division(
        self, belief: Mapping[str, float] | None, text: str, speaker: str = "unknown"
    ) -> tuple[str, str]:
        """The division an utterance would get if it were kept (for ones that state facts)."""
        feats = features(text, speaker)
        scores = self.division.scores(feats)
        lik = softmax({d: scores[d] for d in NOTE_DIVISIONS}, self.temperature)
        prior = belief or self.initial_state()
        post = {d: prior.get(d, 0.0) * lik[d] for d in NOTE_DIVISIONS}
        best = max(NOTE_DIVISIONS, key=lambda d: (post[d], -NOTE_DIVISIONS.index(d)))
        return best, self.topic_of(best, feats)

    def topic_of(self, division: str, feats: list[str]) -> str:
        allowed = DIVISION_TOPICS.get(division)
        if not allowed:
            return "none"
        if len(allowed) == 1:
            return allowed[0]
        return self.topic.predict(feats, allowed)

    def classify(self, items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """(division, topic) for each (text, speaker) of a visit, in order."""
        belief = None
        out = []
        for text, speaker in items:
            d, t, belief = self.step(belief, text, speaker)
            out.append((d, t))
        return out


def from_json(d: Mapping[str, Any]) -> SectionClassifier:
    return SectionClassifier(
        division=NaiveBayes.from_json(d["division"]),
        topic=NaiveBayes.from_json(d["topic"]),
        transitions={k: dict(v) for k, v in d["transitions"].items()},
        temperature=float(d["temperature"]),
        meta=dict(d.get("meta", {})),
        keep_threshold=float(d.get("keep_threshold", 0.5)),
    )


@lru_cache(maxsize=4)
def load_classifier(path: str | None = None) -> SectionClassifier:
    """The committed model (or one at ``path``)."""
    p = Path(path) if path else DATA_PATH
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"section classifier parameters not found at {p}; "
            "regenerate them with: python scripts/train_section_classifier.py"
        ) from None
    return from_json(data)
