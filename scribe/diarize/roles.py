"""Which voice is the clinician, when nobody enrolled: conversational cues in the text.

Rules (no learning, so nothing to overfit; each is a well-known trait of history taking):

- **Questions.** The clinician asks most of them: a segment whose text ends in "?" or opens
  like a question ("do you", "have you", "how long", "any …") counts as one.
- **Plan and instructions.** "I'll prescribe", "we're going to", "I recommend", "let's",
  "follow up", "take … twice a day" — the clinician states the plan.
- **Pronouns.** Clinicians say "you/your" about the patient; patients say "I/my/me" about
  themselves.

Score per voice = question share + 0.5 × plan share + (you-rate − I-rate), over its segments.
The higher-scoring of the two largest voices is the clinician. With too little text
(fewer than ``min_segments`` segments in either) the first voice heard is taken as the
clinician, who usually opens the visit; the caller marks such labels tentative and revises
them as evidence comes in. A single voice is the clinician (a lone voice in a scribe
recording is almost always the clinician dictating).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_WORD = re.compile(r"[a-z']+")
_QUESTION_OPENERS = re.compile(
    r"^(?:and |so |okay,? |ok,? |alright,? |um,? |uh,? )*"
    r"(?:do|does|did|have|has|had|are|is|was|were|can|could|would|will|any|anything|how|what|when|where|"
    r"which|who|why|tell me)\b"
)
_PLAN = re.compile(
    r"\b(?:i'll|i will|we'll|we will|i'm going to|we're going to|going to (?:order|prescribe|start|send|refer|check)|"
    r"i (?:would )?recommend|i'd like (?:you )?to|let's|prescrib\w*|refer\w*|follow[- ]?up|"
    r"(?:blood|urine) tests?|x-?ray|examine|take (?:it|this|one|two)|twice a day|once a day|milligrams?|mg)\b"
)
_YOU = {"you", "your", "you're", "you've", "yours", "yourself"}
_ME = {"i", "i'm", "i've", "my", "me", "mine", "myself", "i'd"}


def sounds_like_question(text: str) -> bool:
    """Looser than ``notes.facts.is_question`` on purpose: the recogniser often drops the "?",
    so an opener ("do you", "have you") counts too. For guessing who asks (the clinician), not
    for deciding what a note sentence says."""
    t = text.strip().lower()
    return t.endswith("?") or bool(_QUESTION_OPENERS.match(t))


@dataclass
class RoleEvidence:
    """Running counts for one voice (cheap to update per segment)."""

    segments: int = 0
    questions: int = 0
    plans: int = 0
    words: int = 0
    you: int = 0
    me: int = 0

    def add(self, text: str) -> None:
        low = text.lower()
        words = _WORD.findall(low)
        self.segments += 1
        self.words += len(words)
        self.questions += sounds_like_question(text) or "?" in text
        self.plans += bool(_PLAN.search(low))
        self.you += sum(w in _YOU for w in words)
        self.me += sum(w in _ME for w in words)

    @property
    def score(self) -> float:
        if not self.segments:
            return 0.0
        pron = (self.you - self.me) / self.words if self.words else 0.0
        return self.questions / self.segments + 0.5 * self.plans / self.segments + pron


@dataclass
class RoleDecision:
    clinician: int | None
    confident: bool
    scores: dict[int, float] = field(default_factory=dict)


def infer_clinician(evidence: dict[int, RoleEvidence], speech_s: dict[int, float], first_heard: Iterable[int],
                    *, min_segments: int = 3) -> RoleDecision:
    """Pick the clinician among voices (cluster ids) from their text evidence."""
    order = list(dict.fromkeys(first_heard))
    voices = sorted(speech_s, key=lambda k: -speech_s[k])[:2]
    if not voices:
        return RoleDecision(None, False)
    scores = {k: evidence.get(k, RoleEvidence()).score for k in voices}
    if len(voices) == 1:
        return RoleDecision(voices[0], True, scores)
    enough = all(evidence.get(k, RoleEvidence()).segments >= min_segments for k in voices)
    if not enough:
        first = next((k for k in order if k in voices), voices[0])
        return RoleDecision(first, False, scores)
    best = max(voices, key=lambda k: scores[k])
    return RoleDecision(best, True, scores)
