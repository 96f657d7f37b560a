"""Plan lines from what the clinician said they will do. Pure.

"we'll go ahead and order your routine blood work" → "Order routine blood work."

Why: the small model writes one to three plan lines where the clinician gave five to ten (the
whole ACI-Bench dev run, session 7), and the extractive statements it leaves behind are the
clinician's words in the first and second person ("I do wanna order just, an echocardiogram
for that murmur."), which are not note language. A decision the clinician states with a
lead-in ("I want to", "let's", "we'll go ahead and", "I would recommend we") is a plan line once
the lead-in is taken off, "your" is dropped and "you" becomes "the patient": nothing is added, the words are the
clinician's. Only a statement that is plainly a decision is rewritten: one with a negation, a
condition or a hedge ("I don't think we need…", "if it gets worse…", "maybe we could…") or a
question is left alone, and what comes out must be note language and is verified like a model
line (``conversation.verify_line``) before it reaches the note.

The rules were written on the clinician sentences of ACI-Bench *train* (``../shared/eval/train``).
"""

from __future__ import annotations

import re

from .instructions import WAKE_WORDS
from .register import register_issues
from .text import AGREEMENT_TAG, YOUR, clean_utterance

PLAN_VERBS = (
    "order", "continue", "start", "increase", "decrease", "reduce", "stop", "discontinue", "hold", "refer",
    "schedule", "get", "give", "prescribe", "check", "obtain", "repeat", "send", "keep", "switch", "taper",
    "add", "begin", "put", "restart", "resume", "recheck", "draw", "arrange",
)

IMPERATIVE_VERBS = (
    "order", "prescribe", "refer", "schedule", "continue", "start", "increase", "decrease", "reduce",
    "discontinue", "stop", "hold", "resume", "restart", "taper",
)
"""Verbs a sentence may open with and still be the clinician's decision ("Order a refill of
protonix 40 milligrams daily.", dictated, or said to the dictation assistant)."""

_WAKE = rf"(?:(?:hey|ok|okay)\s*,?\s*)?(?:{'|'.join(WAKE_WORDS + ('dax',))})\s*,?\s+"
_OPENERS = rf"(?:(?:so|and|okay|ok|now|then|alright|all right|well|also|next|but)\s*,?\s+|{_WAKE})*"
_MODAL = (r"(?:'m|am|are|'re|'d|would|'ll|will|do|can|should|shall)?\s*(?:also\s+|just\s+|still\s+|definitely\s+)?"
          r"(?:going\s+to\s+|gonna\s+|wanna\s+|want\s+to\s+|like\s+to\s+|need\s+to\s+|have\s+to\s+)?")
_INTENT = (
    rf"(?P<who>i|we)\s*(?P<modal>{_MODAL})"
    r"|let's\s+|let\s+us\s+"
    r"|i\s+(?:would\s+|'d\s+)?(?:recommend|suggest)\s+(?:that\s+)?(?:we\s+|you\s+)?"
    r"|i\s+(?:want|would\s+like|'d\s+like)\s+(?:for\s+)?you\s+to\s+"
)
_FILLS = (r"(?:(?:also|just|go\s+(?:ahead\s+)?and|go\s+on\s+and|then|first"
          r"|recommend\s+(?:that\s+)?(?:we|you)?)\s*,?\s+)*")
_LEAD = re.compile(rf"^{_OPENERS}(?:{_INTENT}){_FILLS}(?P<verb>{'|'.join(PLAN_VERBS)})\b(?P<rest>.*)$", re.I)
_IMPERATIVE = re.compile(rf"^{_OPENERS}(?:please\s+)?(?P<verb>{'|'.join(IMPERATIVE_VERBS)})\b(?P<rest>.*)$", re.I)

_NOT_A_DECISION = re.compile(
    r"\b(?:not|no|never|n't|if|unless|whether|maybe|might|may|perhaps|probably|possibly|consider|think|wonder|"
    r"hopefully|try|see\s+if|depending)\b|n't\b|\?",
    re.I,
)
"""Negation, condition, hedge, or a question: not a decision to chart as one."""
_NOT_A_PLAN = re.compile(r"^start\s+(?:with|by)\b|\b(?:dax|dragon|nuance|thank)\b|\bdr\.?$|\b(?:check(?:ed)?|sign(?:ed)?)\s+out\b"
                         r"|\b(?:listen\w*|examin\w*|look\w*\s+at)\b"
                         r"|\b(?:on|in|to|for|with|of|at|from|by|the|a|an|this|that|some)$", re.I)
"""A topic opened ("let's start with your diabetes"), the examination about to be done ("start
by listening to your heart"), the dictation device, thanks, a name or an object cut off ("put
you on, …")."""
_SELF_CORRECTED = re.compile(r"\b(?:sorry|i\s+mean|scratch\s+that|actually|rather)\b", re.I)
"""The clinician corrected themselves in the sentence ("a couple weeks, or, I'm sorry, a couple months")."""
_CONDITION_BEFORE = re.compile(r"\b(?:if|unless|whether|when|until|in\s+case)\b|\bonce\s+(?:we|you|i|they|it|he|she|the)\b",
                               re.I)
"""A condition stated before the decision ("if you're still having symptoms, I wanna order an MRI")."""
_TRAILING = re.compile(r"(?:\s*,?\s*\b(?:and|or|but|so|then)\b)+\s*[.,]?\s*$|\s*,\s*$", re.I)
_CLAUSES = re.compile(r"\s*,?\s+(?:and|then|also|but)\s+(?=(?:i|we|let's)\b)|\s*[,;]\s+(?=(?:i|we|let's)\b)", re.I)
"""Where a sentence starts a second decision ("…, and I'd like to refer you to physical therapy")."""

_TAIL = re.compile(r"\s*,?\s*(?:and|so|but|because|cause)\s+(?:i|we|i'll|we'll|i'm|we're|i've|we've)\b.*$"
                   r"|" + AGREEMENT_TAG.pattern, re.I)
"""What follows the decision and is about the speaker ("…, and I'll be in touch through the portal")."""

_JUST = re.compile(r"\b(?:just|um+|uh|kind of|sort of|you know)\b\s*,?\s*", re.I)
_YOU = re.compile(r"\byou\b", re.I)
_YOURSELF = re.compile(r"\byourself\b", re.I)


def plan_lines(said: str) -> list[str]:
    """The plan lines a clinician's sentence states (one per decision it makes; none when it is
    not plainly a decision)."""
    text = " ".join(said.replace("’", "'").replace("…", " ").split())
    if _SELF_CORRECTED.search(text):
        return []
    out: list[str] = []
    before = ""
    for clause in _CLAUSES.split(text):
        line = None if _CONDITION_BEFORE.search(before) else _plan_line(clause)
        if line is not None and line not in out:
            out.append(line)
        before += " " + clause
    return out


def _plan_line(clause: str) -> str | None:
    clause = _JUST.sub("", clause).rstrip(" .!,")
    m = _LEAD.match(clause)
    if m is not None and m.group("who") and not m.group("modal").strip():
        m = None  # "we get a lot of…": a statement, not an intention
    m = m or _IMPERATIVE.match(clause)
    if m is None or _NOT_A_DECISION.search(m.group("rest")):
        return None
    rest = _TRAILING.sub("", _TAIL.sub("", m.group("rest")).rstrip(" .!"))
    rest = _YOURSELF.sub("themselves", rest)
    rest = YOUR.sub("", rest)
    rest = _YOU.sub("the patient", rest)
    line = clean_utterance(f"{m.group('verb').lower()} {rest.lstrip(' ,')}".strip(" ,"))
    words = line.split()
    if len(words) < 3 or len(words) > 30 or _NOT_A_PLAN.search(line.rstrip(".")) or register_issues(line):
        return None
    return line


__all__ = ["IMPERATIVE_VERBS", "PLAN_VERBS", "plan_lines"]
