"""The problems a clinician names when giving the assessment. Pure.

"for your last problem, your hypertension, you're doing a great job" → "Hypertension."
"so, the diagnosis would be a right hand, index finger contusion" → "Right hand, index finger
contusion."

Why: the small model's Assessment copies the prompt's example more often than it lists the
visit's problems (ACI-Bench dev, session 8: three calls in a row wrote the example's sore throat
for a visit about depression and hypertension), and a clinician who walks through "your first
problem, … your next problem, …" has said the assessment's headings aloud. Only those two
explicit forms are read — a problem introduced as one ("for your second problem, your
hypothyroidism") and a diagnosis stated as one ("your diagnosis is …", "the diagnosis would be
…") — not "I think it's …", which names a diagnosis as often as it says "fine". The rules were
written on the clinician sentences of ACI-Bench *train*.
"""

from __future__ import annotations

import re

from .register import FRAGMENT, register_issues
from .text import AGREEMENT_TAG, YOUR, clean_utterance, content_stems

_INTRODUCED = re.compile(
    r"\b(?:for|regarding|as\s+for|with|now\s+for|moving\s+on\s+to|my\s+assessment\s+for)\s+(?:your|the|my)\s+"
    r"(?:first|second|third|fourth|fifth|next|last|other|final|1st|2nd|3rd)\s+(?:problem|issue|concern|condition)\b"
    r"\s*(?:,|of|is|which\s+is|that\s+is)?\s*(?:for\s+)?(?P<x>[^,.;?!]+)",
    re.I,
)
_DIAGNOSED = re.compile(
    r"\b(?:the|your|my)\s+diagnosis\s+(?:would\s+be|is|will\s+be)\s*(?:that\s+)?(?:you\s+have\s+)?(?P<x>[^.;?!]+)",
    re.I,
)
_ARTICLE = re.compile(r"^(?:(?:your|the|a|an|some|this|that)\s+)+", re.I)
_HEDGE = re.compile(r"\b(?:or|maybe|probably|possibly|might|may|not|no|rule\s+out|versus|vs)\b", re.I)
"""A differential, a hedge or a negation: not a problem to list as one."""
MAX_WORDS = 12


def problem_lines(said: str) -> list[str]:
    """The problems a clinician's sentence names as such (usually none)."""
    out: list[str] = []
    text = " ".join(said.replace("’", "'").split())
    for pattern in (_INTRODUCED, _DIAGNOSED):
        for m in pattern.finditer(text):
            x = YOUR.sub("", _ARTICLE.sub("", AGREEMENT_TAG.sub("", m.group("x").strip(" ,"))))
            if not x or _HEDGE.search(x) or len(x.split()) > MAX_WORDS:
                continue
            line = clean_utterance(x)
            if not content_stems(line) or [i for i in register_issues(line) if i != FRAGMENT] or line in out:
                continue  # a one-word diagnosis ("Gout.") is a heading, not a fragment
            out.append(line)
    return out


__all__ = ["problem_lines"]
