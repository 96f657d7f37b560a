"""Facts in a transcript, each with the segments it came from.

Pure functions from ``Segment``s (speaker possibly ``unknown``) to ``Fact``s:

* **medications** — a name from ``prompts/lexicon/drugs.txt`` with dose and unit, frequency and
  status (current / new / changed / stopped / unknown) read from cue words ("continue",
  "start", "increase … to", "stop");
* **numbers** — vitals (BP 120/80, heart rate, temperature, SpO2, weight …), lab values,
  durations ("for three days"), ages, anything else with a unit; spoken numbers are read
  ("one hundred milligrams", "one twenty over eighty");
* **findings** — symptoms and problems from ``prompts/lexicon/findings.txt``, negated or not.
  Negation is resolved within an utterance ("I don't have any chest pain", "denies nausea") and
  across a question and its answer ("any fever or chills?" / "no" → no fever, no chills).

The same readers are used on note sentences by the guard, so both sides are parsed alike.
``extract_facts(segments)`` is ``segment_facts(seg, previous)`` over the list: each segment's
facts depend only on it and the one before it, which is what lets drafting run incrementally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Iterable, Sequence

from ..models import Segment, Speaker
from .numbers import DOSE_DIMENSIONS, Quantity, find_frequency, find_quantities
from .resources import Match, PhraseLexicon, drug_lexicon, findings_lexicon
from .text import FILLERS, Span, Token, split_sentences, tokenize


class FactKind(StrEnum):
    medication = "medication"
    vital = "vital"
    lab = "lab"
    duration = "duration"
    age = "age"
    quantity = "quantity"
    finding = "finding"


class MedStatus(StrEnum):
    current = "current"
    new = "new"
    changed = "changed"
    stopped = "stopped"
    unknown = "unknown"


@dataclass(frozen=True)
class Fact:
    kind: FactKind
    value: str
    """Normalised: ``"lasix 80 mg daily"``, ``"blood pressure 120/80"``, ``"fever"``."""
    text: str
    """What was said (the surface span; for a question–answer pair, both parts)."""
    segment_ids: tuple[str, ...]
    name: str | None = None
    """Drug (as said, lowercase), vital/lab name, or canonical finding."""
    generic: str | None = None
    quantity: Quantity | None = None
    previous_dose: Quantity | None = None
    frequency: str | None = None
    status: MedStatus | None = None
    negated: bool = False
    via: str = "statement"
    """``statement`` or ``question-answer``."""
    speaker: str = "unknown"

    def describe(self) -> str:
        """One line a clinician can read (used for omissions)."""
        if self.kind is FactKind.finding:
            what = ("no " if self.negated else "") + self.value
        elif self.kind is FactKind.medication and self.status not in (None, MedStatus.unknown):
            what = f"{self.value} ({self.status})"
        else:
            what = self.value
        return f"{self.kind}: {what} [{', '.join(self.segment_ids)}]"


# ------------------------------------------------------------ negation / findings

_NEG_PRE: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "no", "not", "n't", "never", "without", "denies", "denied", "deny", "denying",
        "negative for", "free of", "absence of", "nor", "neither", "none", "nothing",
        "no longer", "resolution of", "not had", "haven't", "hasn't", "hadn't", "don't",
        "doesn't", "didn't", "isn't", "aren't", "wasn't", "weren't", "won't", "can't",
        "cannot", "couldn't",
    )
]  # fmt: skip
_PSEUDO_NEG: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "not sure", "n't sure", "not certain", "no change", "no changes", "not only",
        "not just", "not necessarily", "no problem", "no problems with", "n't know",
        "don't know", "no idea", "not bad", "n't remember", "can't remember", "not worse",
        "no doubt", "not that bad", "no matter", "not even", "n't think", "don't think",
        "not too bad", "nothing else", "no other",
    )
]  # fmt: skip
_BELIEF_NEG: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "n't think i", "n't think i've", "n't think i 've", "n't think i have", "n't think i had",
        "n't think i ever", "n't think there", "n't think there's", "n't think there 's",
        "don't think i", "don't think i've", "don't think i have", "don't think i had", "don't think there",
        "don't think there's", "not think i",
    )
]  # fmt: skip
"""A belief about oneself negated ("I don't think I've had a fever", "I don't think there was any
blood") negates what follows, where "I don't think it's serious" (a pseudo-negation) does not."""
_HYPOTHETICAL: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "if", "unless", "in case", "watch for", "look out for", "should you", "risk of",
        "rule out", "to prevent", "prevent", "whether", "call me", "let me know", "or else",
        "make sure", "worried about", "concerned about", "possible", "possibly", "could be",
        "might be", "may be", "screen for", "check for", "test for", "evaluate for",
        "signs of", "symptoms of",
    )
]  # fmt: skip
_AFFIRM: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in ("reports", "reported", "endorses", "endorsed", "complains of", "positive for",
              "notes", "admits to", "has had", "presents with", "with")
]  # fmt: skip
_SCOPE_STOP = frozenset(
    """. ? ! ; : but however though although except which who because since while whereas
    other than apart besides yet still anyway""".split()
)
_NEGATION_STOP = _SCOPE_STOP | frozenset("yeah yes yep just".split())
"""Words that also end a negation's reach: an affirmation or a "just" starts what *is* there
("no, no blood, yeah, just watery and loose stool", PriMock57 dev, denies blood, not the stool).
A hypothetical runs on ("not sure if it's just a head cold")."""
_SUBJECTS = frozenset("i he she we they it you my his her their our its this that there".split())
_SCOPE_WORDS = 8


_PHRASE_INDEX: dict[int, dict[str, list[tuple[str, ...]]]] = {}


def _index(phrases: list[tuple[str, ...]]) -> dict[str, list[tuple[str, ...]]]:
    idx = _PHRASE_INDEX.get(id(phrases))
    if idx is None:
        idx = {}
        for p in sorted(phrases, key=len, reverse=True):
            idx.setdefault(p[0], []).append(p)
        _PHRASE_INDEX[id(phrases)] = idx
    return idx


def _phrase_at(tokens: Sequence[Token], i: int, phrases: list[tuple[str, ...]]) -> int:
    """Length of the longest phrase from ``phrases`` starting at tokens[i] (0 if none)."""
    if i >= len(tokens):
        return 0
    for p in _index(phrases).get(tokens[i].norm, ()):
        L = len(p)
        if i + L <= len(tokens) and all(tokens[i + k].norm == p[k] for k in range(1, L)):
            return L
    return 0


def _is_neg_word(tok: Token) -> bool:
    return tok.norm.endswith("n't") and tok.norm not in ("n't",)


@dataclass(frozen=True, slots=True)
class FindingMention:
    canonical: str
    negated: bool
    hypothetical: bool
    start: int
    end: int
    surface: str


def _scopes(tokens: Sequence[Token], findings_spans: list[tuple[int, int]]) -> tuple[list[bool], list[bool]]:
    """Per token: inside a negation scope? inside a hypothetical scope?"""
    n = len(tokens)
    neg = [False] * n
    hyp = [False] * n
    inside_finding = [False] * n
    for a, b in findings_spans:
        for x in range(a, b):
            inside_finding[x] = True

    def open_scope(start: int, flags: list[bool]) -> None:
        words = 0
        j = start
        stops = _SCOPE_STOP if flags is hyp else _NEGATION_STOP
        while j < n:
            t = tokens[j]
            if t.norm in stops:
                break
            # a new clause: ", and i have a cough" / "and she"
            if t.norm in (",", "and", "or", "so") and j + 1 < n and tokens[j + 1].norm in _SUBJECTS:
                break
            if t.norm in ("and",) and j + 1 < n and tokens[j + 1].norm in ("then", "now"):
                break
            flags[j] = True
            if t.kind != "sym":
                words += 1
                if words >= _SCOPE_WORDS and not inside_finding[j]:
                    break
            j += 1

    i = 0
    while i < n:
        if inside_finding[i]:
            i += 1
            continue
        b = _phrase_at(tokens, i, _BELIEF_NEG)
        if b:
            # "i don't think i've ever had heartburn": the speaker's negative about themselves
            open_scope(i + b, neg)
            i += b
            continue
        p = _phrase_at(tokens, i, _PSEUDO_NEG)
        if p:
            i += p
            continue
        h = _phrase_at(tokens, i, _HYPOTHETICAL)
        if h:
            open_scope(i + h, hyp)
            i += h
            continue
        L = _phrase_at(tokens, i, _NEG_PRE) or (1 if _is_neg_word(tokens[i]) else 0)
        if L:
            open_scope(i + L, neg)
            i += L
            continue
        i += 1
    return neg, hyp


def findings_in(text: str) -> list[FindingMention]:
    """Symptoms/problems in ``text`` with negation and hypothetical scope (NegEx-style).

    ``"I don't have any chest pain"`` → chest pain, negated. ``"call me if you get a fever"`` →
    fever, hypothetical. ``"no fever, chills or night sweats"`` → all three negated.
    """
    return list(_findings_cached(text))


@lru_cache(maxsize=4096)
def _findings_cached(text: str) -> tuple[FindingMention, ...]:
    return tuple(_findings(text))


_RISKS = re.compile(r"\b(?:risks?|complications?|side[- ]effects?)\b(?!\s+factors?)", re.I)
"""Where a disclosure of risks begins: what is listed after it, to the end of the turn, may
happen, it has not ("there are some risks i have to inform you of … seizure, stroke, permanent
numbness, weakness, difficulty speaking, or even death" became a symptom line in a history).
The list runs over several sentences, past any sentence-bounded scope. On ACI-Bench train, 10
of the 11 findings after such a word in a clinician turn were risks (the other, a fracture, is
said elsewhere in its visit). "Risk factors" are the patient's own and are not a disclosure."""


def _findings(text: str) -> list[FindingMention]:
    toks = tokenize(text)
    lex = findings_lexicon()
    matches = lex.find(toks)
    matches = _refine_pain(toks, matches, lex)
    neg, hyp = _scopes(toks, [(m.start, m.end) for m in matches])
    risks = _RISKS.search(text)
    disclosed = risks.end() if risks else len(text) + 1
    out = []
    for m in matches:
        out.append(
            FindingMention(
                canonical=m.canonical,
                negated=neg[m.start],
                hypothetical=hyp[m.start] or m.char_start >= disclosed,
                start=m.char_start,
                end=m.char_end,
                surface=text[m.char_start : m.char_end],
            )
        )
    return out


_BODY_PAIN = re.compile(r"^(?P<part>[a-z]+) pain$")


def _refine_pain(toks: list[Token], matches: list[Match], lex: PhraseLexicon) -> list[Match]:
    """Generic "pain"/"hurts" next to a body part becomes "<part> pain" when the lexicon has it
    ("pain in my left knee", "my knee really hurts")."""
    names = lex.canonical_names()
    out = []
    for m in matches:
        if m.canonical == "pain":
            part = None
            # pain in (the|my|your) (left|right)? PART
            j = m.end
            if j < len(toks) and toks[j].norm in ("in", "on", "of", "around"):
                j += 1
                while j < len(toks) and toks[j].norm in (
                    "the",
                    "my",
                    "your",
                    "his",
                    "her",
                    "left",
                    "right",
                    "both",
                    "lower",
                    "upper",
                ):
                    j += 1
                if j < len(toks) and f"{toks[j].stem} pain" in names:
                    part = toks[j].stem
                    end = j + 1
            # (my) PART (really)? hurts
            if part is None:
                k = m.start - 1
                while k >= 0 and toks[k].norm in (
                    "really",
                    "still",
                    "kind",
                    "of",
                    "just",
                    "is",
                    "was",
                    "sometimes",
                    "that",
                    "it",
                    "'s",
                    "the",
                    "my",
                ):
                    k -= 1
                if k >= 0 and f"{toks[k].stem} pain" in names and k >= m.start - 4:
                    part = toks[k].stem
                    start = k
                    out.append(type(m)(f"{part} pain", start, m.end, toks[start].start, m.char_end))
                    continue
            if part is not None:
                out.append(type(m)(f"{part} pain", m.start, end, m.char_start, toks[end - 1].end))
                continue
        out.append(m)
    return out


# ------------------------------------------------------------ questions & answers

_QUESTION_STARTS: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "do you", "did you", "does it", "does that", "does this", "does your", "did it",
        "did that", "have you", "has it", "has that", "has there", "had you", "are you",
        "is it", "is that", "is there", "is your", "are there", "was it", "was there",
        "were you", "were there", "any", "how about", "what about", "and any", "how",
        "what", "when", "where", "which", "why", "can you", "could you", "would you",
        "will you", "ever",
    )
]  # fmt: skip
_LEADERS = (
    frozenset("okay ok alright all right so and now well um uh also then like just great good sure".split())
    | FILLERS
)


def _strip_leaders(tokens: list[Token]) -> int:
    i = 0
    while i < len(tokens) and (tokens[i].norm in _LEADERS or tokens[i].kind == "sym"):
        i += 1
    return i


_TAG_RE = re.compile(
    r"(?:^|[,\s])(?:okay|ok|alright|all right|right|yeah|correct|huh|you know|sound good|"
    r"does that sound good|does that sound okay|does that sound like a plan|is that okay|"
    r"is that alright|is that all right|any questions|do you have any questions|"
    r"any other questions|do you have any other questions|make sense|does that make sense|"
    r"how does that sound|that sound good)\s*[?.!]*\s*$",
    re.IGNORECASE,
)


def _opens_like_a_question(text: str) -> bool:
    """Whether ``text`` opens like a question ("do you", "any", "is it" …) after its lead-ins."""
    toks = tokenize(text)
    return bool(_phrase_at(toks, _strip_leaders(toks), _QUESTION_STARTS))


def is_question(sentence: str) -> bool:
    """A sentence that asks something ("any fever?"), not a tag ("…, okay?") or a pleasantry
    ("does that sound like a plan?")."""
    s = sentence.strip()
    if not s.endswith("?"):
        return False
    body = _TAG_RE.sub("", s).strip(" ,?.!")
    if not body:
        return False
    if body != s.strip(" ,?.!"):
        # a statement with a tag: a question only if the body itself opens like one
        return _opens_like_a_question(body)
    return True


_TRAILING_OFF = re.compile(r"(?:,\s*or|\.\.\.|…)[\s.…]*$", re.I)


_SUGGESTS = re.compile(
    r"\b(?:why\s+(?:don't|do\s+n't|dont|not)\s+(?:you|we)|how\s+about\s+(?:we|you)|what\s+if\s+we|"
    r"would\s+you\s+like\s+to)\b|"
    r"^(?:\W*(?:so|and|okay|ok|well|then|alright|um|uh)\b)*\W*(?:can|could|will)\s+you\b", re.I)
"""A request or suggestion put as a question ("why don't you call us and come back?")."""


def asks(sentence: str) -> bool:
    """``is_question``, or a question the speaker let trail off ("is it running high, or ..."),
    and not a request or suggestion put as one ("why don't you call us and come back?": said)."""
    if _SUGGESTS.search(sentence):
        return False
    if is_question(sentence):
        return True
    return bool(_TRAILING_OFF.search(sentence)) and _opens_like_a_question(sentence)


def _opens_question(toks: Sequence[Token], i: int) -> bool:
    """A question opener ("do you", "any", "how") at ``toks[i]``, at the start or after a
    lead-in or punctuation (unpunctuated speech: where the asking starts)."""
    return bool(_phrase_at(toks, i, _QUESTION_STARTS)) and (
        i == 0 or toks[i - 1].norm in _LEADERS or toks[i - 1].kind == "sym")


def question_span(text: str) -> Span | None:
    """The part of a turn that asks something: its trailing question sentence(s).

    Punctuated text: the sentences ending in "?" at the end of the turn (the last one or more
    in a row). Unpunctuated text (some ASR output): from the last question opener
    ("do you", "any", "have you" …) to the end, if that tail is short.
    """
    sents = split_sentences(text)
    if not sents:
        return None
    if "?" in text:
        # the trailing run of questions; tags ("okay?") and pleasantries after it are ignored
        asking = [is_question(s.text) for s in sents]
        if not any(asking):
            return None
        last_q = max(i for i, a in enumerate(asking) if a)
        if last_q < len(sents) - 1:
            tail = " ".join(s.text for s in sents[last_q + 1 :])
            if (
                len(
                    [
                        t
                        for t in tokenize(_TAG_RE.sub("", tail))
                        if t.kind == "word" and t.norm not in _LEADERS
                    ]
                )
                > 3
            ):
                return None  # the turn went on after the question: not waiting for an answer
        first_q = last_q
        while first_q > 0 and asking[first_q - 1]:
            first_q -= 1
        return Span(sents[first_q].start, sents[last_q].end, text[sents[first_q].start : sents[last_q].end])
    last = sents[-1]
    if last.text.rstrip().endswith((".", "!")):
        # a punctuated statement; a question only if the last sentence opens like one
        return last if _opens_like_a_question(last.text) else None
    toks = tokenize(last.text)
    # unpunctuated speech: the tail from the last question opener, if it is short
    for i in range(len(toks) - 1, -1, -1):
        if _opens_question(toks, i):
            if len(toks) - i <= 30:
                a = last.start + toks[i].start
                return Span(a, last.end, text[a : last.end])
            return None
    return None


def only_a_question(text: str) -> bool:
    """The utterance asks and says nothing else: at most three words before the question
    besides lead-ins and fillers ("okay, and have you had …?", "okay good but now are you able
    to move your arm" — unpunctuated ASR text, ACI dev D2N079); one that states a plan and then
    asks "does that sound okay?" is not."""
    span = question_span(text)
    if span is None:
        return False
    before = [t for t in tokenize(text[:span.start]) if t.kind == "word" and t.norm not in _LEADERS]
    return len(before) <= 3


_NEG_ANSWERS: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "no", "nope", "nah", "not really", "not that i know", "not that i've noticed",
        "not that i 've noticed", "not that i have noticed", "none", "never", "neither",
        "negative", "i don't", "i do n't", "i haven't", "i have n't", "i didn't", "i did n't",
        "not at all", "nothing", "not anymore", "no more", "i have not", "i do not",
        "i did not", "it doesn't", "it does n't", "it hasn't", "it has n't", "not recently",
    )
]  # fmt: skip
_POS_ANSWERS: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "yes", "yeah", "yep", "yup", "yah", "ya", "sure", "i do", "i have", "i did", "it does",
        "it is", "it has", "mm-hmm", "uh-huh", "mhm", "correct", "definitely", "absolutely",
        "sometimes", "occasionally", "a little", "a bit", "a lot", "slight", "slightly", "some",
        "kind of", "sort of", "mild", "mildly", "once in a while", "every once in a while",
        "every now and then", "now and then", "off and on", "on and off", "all the time",
        "constantly", "i've had", "i 've had", "i've been", "i 've been", "i get", "i've got",
        "i 've got", "i got", "unfortunately", "quite a bit", "a few", "very",
        "that's it", "that 's it", "that's right", "that 's right", "that's the one", "that 's the one",
        "exactly",
    )
]  # fmt: skip


_AFFIRM_SOUND = re.compile(r"^\W*(?:mm-?hmm|uh-?huh|mhm|mm-?hm)\b(?!\s*,?\s*no\b)", re.I)


def answer_polarity(text: str) -> str | None:
    """``"negative"``, ``"positive"`` or None for an answer's opening ("no ." / "slight cramps")."""
    if _AFFIRM_SOUND.match(text):
        return "positive"
    toks = [t for t in tokenize(text) if t.kind != "sym" or t.norm in "?"]
    i = 0
    while i < len(toks) and toks[i].norm in (
        FILLERS | {"well", "oh", "so", "hmm", "honestly", "actually", "um", "uh"}
    ):
        i += 1
    if i >= len(toks):
        return None
    n = _phrase_at(toks, i, _NEG_ANSWERS)
    p = _phrase_at(toks, i, _POS_ANSWERS)
    if p and not n:
        # "yeah, no, I haven't" → negative; "yes, no problems" is rare: call it unclear
        rest = toks[i + p : i + p + 2]
        if any(t.norm in ("no", "nope") for t in rest):
            return None
        if rest and (rest[0].norm in ("never", "not") or _is_neg_word(rest[0])):
            return "negative"  # "i have never had it", "i have n't"
        return "positive"
    if n and n >= p:
        return "negative"
    return None


_PLAIN_YES = re.compile(r"^\W*(?:(?:uh|um|oh|well)\W+)*(?:yes|yeah|yep|yup|correct|i do|i have|i did|that's right)\b",
                        re.I)


def confirms(question: str, answer: str) -> bool:
    """Whether ``answer`` says yes to what ``question`` asks. A soft opening ("sometimes",
    "slight", "a little") is a yes to one thing asked ("any chest pain?" / "slight cramps": the
    answer says what it is like; the ACI reference writes "chest cramps"), but not to a list:
    which of them? "… how about any shortness of breath, cough, muscle aches?" / "sometimes i,
    i regularly go for a run … i might feel a little bit of pounding in my chest" (ACI dev
    D2N071) confirms none of the three; what the answer names it states itself. A plain "yes"
    confirms the list."""
    if answer_polarity(answer) != "positive":
        return False
    return _PLAIN_YES.match(answer) is not None or len({f.canonical for f in findings_in(question)}) < 2


def _speaker_asks(seg: Segment) -> bool:
    return seg.speaker in (Speaker.clinician, Speaker.unknown, Speaker.other)


def _is_answer_pair(question: Segment, answer: Segment) -> bool:
    if not _speaker_asks(question):
        return False
    if question.speaker is Speaker.unknown or answer.speaker is Speaker.unknown:
        return True
    return answer.speaker != question.speaker and answer.speaker is not Speaker.clinician


def _asking_from(question: str) -> int:
    """Where the asking starts in a question: its first question opener after a lead-in ("so",
    a comma). What comes before is given, not asked: "and along with the cough, are you
    experiencing any difficulty breathing?" / "no" denies the difficulty breathing, not the
    cough (OSCE RES0205, a visit about a cough, got "Denies cough")."""
    toks = tokenize(question)
    return next((toks[i].start for i in range(len(toks)) if _opens_question(toks, i)), 0)


_GIVEN = re.compile(r"\b(?:the|your|that|this)\s+(?:(?!(?:any|some|a|an|no|other)\b)[\w-]+\s+){0,2}$", re.I)
"""A finding the question names as known ("does the pain extend anywhere?", "is your cough
productive?") is given, not asked: "no, not really" says the pain goes nowhere, not that there
is none (the guard had refused "The pain does not radiate." and the fact lines could write
"Denies pain."); a "yes" still confirms it. At worst a denial goes unrecorded, never an invented one."""


def qa_findings(question: Segment, answer: Segment) -> list[Fact]:
    """Findings settled by an answer to a question: ("any fever or chills?", "no") → no fever,
    no chills; ("do you have any chest pain?", "slight cramps") → chest pain reported.

    Findings the answer names itself keep the answer's own polarity (and are reported by
    ``segment_facts`` for the answer), so they are left out here.
    """
    if not _is_answer_pair(question, answer):
        return []
    q = question_span(question.text)
    if q is None:
        return []
    polarity = answer_polarity(answer.text)
    if polarity is None:
        return []
    opens = _asking_from(q.text)
    asked = [m for m in findings_in(q.text) if not m.hypothetical and m.start >= opens
             and not (polarity == "negative" and _GIVEN.search(q.text[: m.start]))]
    if not asked:
        return []
    # a negated question ("no fever?", "you don't have chest pain?") answered "yes" is unclear
    if polarity == "positive" and (any(m.negated for m in asked) or not confirms(q.text, answer.text)):
        return []
    said = {m.canonical for m in findings_in(answer.text)}
    quote_a = _first_sentence(answer.text)
    out = []
    seen = set()
    for m in asked:
        if m.canonical in said or m.canonical in seen:
            continue
        seen.add(m.canonical)
        out.append(
            Fact(
                kind=FactKind.finding,
                value=m.canonical,
                text=f"{q.text} — {quote_a}",
                segment_ids=(question.id, answer.id),
                name=m.canonical,
                negated=polarity == "negative",
                via="question-answer",
                speaker=str(answer.speaker),
            )
        )
    return out


def qa_medications(question: Segment, answer: Segment) -> list[Fact]:
    """Medicines the patient confirms taking by answering a question that names them: ("are
    you taking your lisinopril?" / "uh, digoxin?", "yes" / "that's it") → current. A
    question alone says nothing about the medicine (``statement_facts`` gives it ``unknown``),
    and a note that then writes it as a new prescription would go unflagged. Questions that
    propose a change ("should we start metformin?") settle nothing here: only a drug named
    without a status cue, or with a "taking"-like one, becomes current."""
    if not _is_answer_pair(question, answer) or answer_polarity(answer.text) != "positive":
        return []
    q = question_span(question.text)
    if q is None:
        return []
    said = {m.generic for m in medications_in(answer.text)}
    out = []
    for m in medications_in(q.text):
        if m.status not in (MedStatus.unknown, MedStatus.current) or m.generic in said:
            continue  # a proposed change; or the answer names it itself (its own statement)
        out.append(
            Fact(
                kind=FactKind.medication,
                value=m.value,
                text=f"{q.text} — {_first_sentence(answer.text)}",
                segment_ids=(question.id, answer.id),
                name=m.name,
                generic=m.generic,
                quantity=m.dose,
                frequency=m.frequency,
                status=MedStatus.current,
                via="question-answer",
                speaker=str(answer.speaker),
            )
        )
    return out


def _first_sentence(text: str) -> str:
    sents = split_sentences(text)
    return sents[0].text if sents else text.strip()


# ------------------------------------------------------------ medications

_STRONG_CUES: dict[MedStatus, list[tuple[str, ...]]] = {
    MedStatus.new: [
        tuple(p.split())
        for p in (
            "start",
            "starting",
            "begin",
            "initiate",
            "initiating",
            "prescribe",
            "prescribing",
            "put you on",
            "putting you on",
            "add",
            "adding",
            "try you on",
            "trial of",
            "give you",
            "write you",
            "write for",
            "send in",
            "sending in",
            "order",
            "ordering",
            "new",
            "going to have you take",
            "started on",
            "started you on",
        )
    ],
    MedStatus.changed: [
        tuple(p.split())
        for p in (
            "increase",
            "increasing",
            "increased",
            "bump",
            "bumping",
            "raise",
            "raising",
            "up your",
            "up the dose",
            "decrease",
            "decreasing",
            "decreased",
            "reduce",
            "reducing",
            "reduced",
            "lower",
            "lowering",
            "cut back",
            "cut down",
            "change",
            "changing",
            "changed",
            "switch",
            "switching",
            "switched",
            "adjust",
            "adjusting",
            "double",
            "doubling",
            "halve",
            "titrate",
            "titrating",
            "taper",
            "tapering",
            "wean",
            "higher dose",
            "lower dose",
            "extra dose",
        )
    ],
    MedStatus.stopped: [
        tuple(p.split())
        for p in (
            "stop",
            "stopped",
            "stopping",
            "discontinue",
            "discontinued",
            "discontinuing",
            "hold",
            "holding",
            "quit",
            "no longer",
            "come off",
            "take you off",
            "taking you off",
            "not taking",
            "n't taking",
            "not been taking",
            "n't been taking",
            "ran out",
        )
    ],
}
_WEAK_CURRENT: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "continue", "continuing", "continued", "taking", "take", "takes", "took", "on",
        "been on", "using", "use", "uses", "still", "currently", "refill", "remain", "stay on",
        "keep", "keeping", "current", "home",
    )
]  # fmt: skip


def _status_cue(tokens: list[Token], i: int) -> tuple[MedStatus, int] | None:
    for status, phrases in _STRONG_CUES.items():
        L = _phrase_at(tokens, i, phrases)
        if L:
            return status, L
    L = _phrase_at(tokens, i, _WEAK_CURRENT)
    if L:
        return MedStatus.current, -L  # negative length marks a weak cue
    return None


@dataclass(frozen=True, slots=True)
class MedMention:
    name: str
    generic: str
    start: int
    end: int
    dose: Quantity | None
    previous_dose: Quantity | None
    frequency: str | None
    status: MedStatus
    surface: str

    @property
    def value(self) -> str:
        """The normalised medication fact: "lasix 80 mg daily"."""
        return " ".join([self.name, *([self.dose.normalized()] if self.dose else []),
                         *([self.frequency] if self.frequency else [])])


_CLAUSE_BREAK = frozenset(". ? ! ; but".split())


def medications_in(text: str) -> list[MedMention]:
    """Drug names in ``text`` with dose, previous dose ("from 20 to 60 mg"), frequency and status."""
    return list(_medications_cached(text))


@lru_cache(maxsize=4096)
def _medications_cached(text: str) -> tuple[MedMention, ...]:
    return tuple(_medications(text))


def _medications(text: str) -> list[MedMention]:
    toks = tokenize(text)
    lex = drug_lexicon()
    matches = lex.find(toks)
    if not matches:
        return []
    quantities = find_quantities(text, toks)
    doses = [q for q in quantities if q.dimension in DOSE_DIMENSIONS or (q.unit is None and q.value2 is None)]
    out: list[MedMention] = []
    for mi, m in enumerate(matches):
        nxt_drug = matches[mi + 1].char_start if mi + 1 < len(matches) else len(text)
        prev_drug = matches[mi - 1].char_end if mi > 0 else 0
        # clause end after the drug
        clause_end = len(text)
        for t in toks[m.end :]:
            if t.norm in _CLAUSE_BREAK:
                clause_end = t.start
                break
        clause_start = 0
        for t in reversed(toks[: m.start]):
            if t.norm in _CLAUSE_BREAK:
                clause_start = t.end
                break
        window_end = min(nxt_drug, clause_end)
        after = [
            q
            for q in doses
            if m.char_end <= q.start < window_end and _words_between(toks, m.end, q.start) <= 6
        ]
        with_unit = [q for q in after if q.unit]
        dose = prev = None
        if with_unit:
            dose = with_unit[0]
            if (
                len(with_unit) > 1
                and re.search(r"\bfrom\b", text[m.char_end : dose.start] + " from")
                and re.search(r"\bto\b", text[with_unit[0].end : with_unit[1].start])
            ):
                prev, dose = with_unit[0], with_unit[1]
            elif (
                len(with_unit) > 1
                and re.search(r"\bto\b", text[with_unit[0].end : with_unit[1].start])
                and re.search(r"\bfrom\b", text[max(prev_drug, clause_start) : with_unit[0].start])
            ):
                prev, dose = with_unit[0], with_unit[1]
        elif after and after[0].unit is None and _words_between(toks, m.end, after[0].start) <= 1:
            dose = after[0]  # "lisinopril 20" / "lisinopril twenty"
        if dose is None:
            # "20 mg of lisinopril", "eighty milligrams of lasix"
            before = [q for q in doses if max(prev_drug, clause_start) <= q.end <= m.char_start and q.unit]
            if before and _words_between_chars(toks, before[-1].end, m.char_start) <= 2:
                dose = before[-1]
        freq_text = text[m.char_end : window_end]
        freq = find_frequency(freq_text)
        status = _status_for(toks, m.start, m.end, max(prev_drug, clause_start), window_end)
        if prev is not None and status in (MedStatus.unknown, MedStatus.current):
            status = MedStatus.changed
        name = m.canonical
        span_end = max(
            [m.char_end] + [q.end for q in (dose,) if q] + ([m.char_end + freq[2]] if freq else [])
        )
        out.append(
            MedMention(
                name=name,
                generic=lex.generic_of(name),
                start=m.char_start,
                end=span_end,
                dose=dose,
                previous_dose=prev,
                frequency=freq[0] if freq else None,
                status=status,
                surface=text[m.char_start : span_end],
            )
        )
    return out


def _words_between(toks: list[Token], tok_end: int, char_pos: int) -> int:
    return sum(1 for t in toks[tok_end:] if t.start < char_pos and t.kind != "sym")


def _words_between_chars(toks: list[Token], a: int, b: int) -> int:
    return sum(1 for t in toks if a <= t.start < b and t.kind != "sym")


def _status_for(toks: list[Token], start: int, end: int, lo_char: int, hi_char: int) -> MedStatus:
    """Nearest strong cue before the drug in its clause, else a weak "current" cue, else a cue
    shortly after the drug ("lasix was increased")."""
    strong: tuple[int, MedStatus] | None = None
    weak: int | None = None
    i = start - 1
    while i >= 0 and toks[i].start >= lo_char and start - i <= 14:
        c = _status_cue(toks, i)
        if c is not None:
            status, L = c
            if L > 0 and strong is None:
                strong = (i, status)
            elif L < 0 and weak is None:
                weak = i
        i -= 1
    if strong is not None and (weak is None or strong[0] >= weak or start - strong[0] <= 8):
        return strong[1]
    if weak is not None:
        return MedStatus.current
    j = end
    while j < len(toks) and toks[j].start < hi_char and j - end <= 4:
        c = _status_cue(toks, j)
        if c is not None and c[1] > 0:
            return c[0]
        j += 1
    return MedStatus.unknown


# ------------------------------------------------------------ measurements

_MEASURE_CUES: list[tuple[tuple[str, ...], str, FactKind]] = []
for _names, _canon, _kind in [
    ("blood pressure|bp|pressure|blood pressures", "blood pressure", FactKind.vital),
    ("heart rate|pulse|hr|heartrate|heart rate's", "heart rate", FactKind.vital),
    ("temperature|temp|fever of|febrile to", "temperature", FactKind.vital),
    ("oxygen saturation|o2 sat|o2 sats|sat|sats|saturation|saturating|satting|spo2|pulse ox|pulse oximetry|oxygen|o2|oxygenation", "oxygen saturation", FactKind.vital),
    ("respiratory rate|respirations|rr|breathing rate", "respiratory rate", FactKind.vital),
    ("weight|weigh|weighs|weighed|weighing", "weight", FactKind.vital),
    ("height|tall", "height", FactKind.vital),
    ("bmi|body mass index", "BMI", FactKind.vital),
    ("a1c|hemoglobin a1c|hba1c|hemoglobin a 1 c|a 1 c", "hemoglobin A1c", FactKind.lab),
    ("glucose|blood sugar|blood sugars|sugar|sugars|fasting sugar", "glucose", FactKind.lab),
    ("cholesterol|total cholesterol", "cholesterol", FactKind.lab),
    ("ldl", "LDL", FactKind.lab), ("hdl", "HDL", FactKind.lab),
    ("triglycerides|triglyceride", "triglycerides", FactKind.lab),
    ("creatinine", "creatinine", FactKind.lab), ("gfr|egfr", "eGFR", FactKind.lab),
    ("potassium", "potassium", FactKind.lab), ("sodium", "sodium", FactKind.lab),
    ("hemoglobin|hgb", "hemoglobin", FactKind.lab), ("hematocrit", "hematocrit", FactKind.lab),
    ("white count|white blood cell count|white cell count|wbc|white blood cells", "WBC", FactKind.lab),
    ("platelets|platelet count|platelet", "platelets", FactKind.lab),
    ("tsh", "TSH", FactKind.lab), ("psa", "PSA", FactKind.lab), ("inr", "INR", FactKind.lab),
    ("ejection fraction|ef", "ejection fraction", FactKind.lab),
    ("vitamin d|vitamin d level", "vitamin D", FactKind.lab), ("bun", "BUN", FactKind.lab),
    ("troponin", "troponin", FactKind.lab), ("bnp", "BNP", FactKind.lab),
    ("alt", "ALT", FactKind.lab), ("ast", "AST", FactKind.lab), ("lipase", "lipase", FactKind.lab),
    ("ferritin", "ferritin", FactKind.lab), ("b12", "vitamin B12", FactKind.lab),
    ("crp|c reactive protein", "CRP", FactKind.lab), ("sed rate|esr", "ESR", FactKind.lab),
    ("magnesium", "magnesium", FactKind.lab), ("calcium", "calcium", FactKind.lab),
]:  # fmt: skip
    for _n in _names.split("|"):
        _MEASURE_CUES.append((tuple(t.norm for t in tokenize(_n)), _canon, _kind))
_MEASURE_CUES.sort(key=lambda x: -len(x[0]))


def _measure_name(toks: list[Token], q: Quantity, lo_char: int) -> tuple[str, FactKind] | None:
    """A vital/lab name up to 6 words before the number (not crossing a clause break or
    another number)."""
    idx = next((k for k, t in enumerate(toks) if t.start >= q.start), len(toks))
    words = 0
    k = idx - 1
    while k >= 0 and words < 6 and toks[k].start >= lo_char:
        t = toks[k]
        if t.norm in (".", "?", "!", ";") or t.kind == "num":
            break
        for cue, canon, kind in _MEASURE_CUES:
            L = len(cue)
            if k - L + 1 >= 0 and tuple(x.norm for x in toks[k - L + 1 : k + 1]) == cue:
                return canon, kind
        if t.kind == "word":
            words += 1
        k -= 1
    return None


_FEVER_WORDS = re.compile(r"\b(?:fever|febrile|afebrile|temperature|temp)\b", re.IGNORECASE)


def _classify_quantity(
    toks: list[Token], text: str, q: Quantity, lo_char: int
) -> tuple[FactKind, str | None]:
    named = _measure_name(toks, q, lo_char)
    if q.unit in ("year",) and re.match(r"[\s-]*(?:years?[\s-]+)?old\b", text[q.end :]) is not None:
        return FactKind.age, "age"
    if q.unit == "year" and re.match(r"[\s-]*old\b", text[q.end :]):
        return FactKind.age, "age"
    if named is not None:
        canon, kind = named
        return kind, canon
    if q.unit == "mmHg" or (
        q.sep == "/"
        and q.unit is None
        and 70 <= q.value <= 260
        and q.value2 is not None
        and 30 <= q.value2 <= 160
    ):
        return FactKind.vital, "blood pressure"
    if q.unit == "deg" or (
        q.unit is None and q.value2 is None and q.value % 1 and 93 <= q.value <= 108
        and _FEVER_WORDS.search(text, lo_char, q.start) is not None
    ):
        # "you are not running a fever … look at ninety seven . two": a reading with a decimal
        # in the nineties after a word for fever is a temperature in °F, said without its unit
        return FactKind.vital, "temperature"
    if q.unit == "/min":
        return FactKind.vital, "heart rate"
    if q.dimension == "weight":
        return FactKind.vital, "weight"
    if q.dimension == "time":
        return FactKind.duration, None
    return FactKind.quantity, None


# ------------------------------------------------------------ per segment


def _speaker(seg: Segment) -> str:
    return str(seg.speaker)


def _how_often(text: str, q: Quantity) -> str | None:
    """The frequency said right after a count of times ("six or seven times a day" → "daily"):
    without it the fact is "6-7 times", and the note said how many but not per what."""
    if q.unit != "times":
        return None
    found = find_frequency(re.split(r"[.;!?]", text[q.end : q.end + 24], maxsplit=1)[0])
    return found[0] if found is not None and found[1] <= 2 else None


def statement_facts(seg: Segment) -> list[Fact]:
    """Facts stated in one segment (no question–answer resolution)."""
    text = seg.text
    toks = tokenize(text)
    if not toks:
        return []
    facts: list[Fact] = []
    q_span = question_span(text)
    meds = medications_in(text)
    dose_spans = set()
    for m in meds:
        if m.dose is not None:
            dose_spans.add((m.dose.start, m.dose.end))
        if m.previous_dose is not None:
            dose_spans.add((m.previous_dose.start, m.previous_dose.end))
        status = m.status
        if q_span is not None and q_span.start <= m.start < q_span.end and status is MedStatus.current:
            status = MedStatus.unknown  # "are you taking your lisinopril?" says nothing yet
        facts.append(
            Fact(
                kind=FactKind.medication,
                value=m.value,
                text=m.surface,
                segment_ids=(seg.id,),
                name=m.name,
                generic=m.generic,
                quantity=m.dose,
                previous_dose=m.previous_dose,
                frequency=m.frequency,
                status=status,
                speaker=_speaker(seg),
            )
        )
    sentences = split_sentences(text) or [Span(0, len(text), text)]
    for q in find_quantities(text, toks):
        if (q.start, q.end) in dose_spans or q.dimension == "clock" or q.sep == ":":
            continue
        sent_start = max((s.start for s in sentences if s.start <= q.start), default=0)
        kind, name = _classify_quantity(toks, text, q, sent_start)
        value = f"{name} {q.normalized()}" if name and kind is not FactKind.age else q.normalized()
        if kind is FactKind.age:
            value = f"age {q.normalized().replace(' year', '')}"
        facts.append(
            Fact(
                kind=kind,
                value=value,
                text=q.text,
                segment_ids=(seg.id,),
                name=name,
                quantity=q,
                frequency=_how_often(text, q),
                speaker=_speaker(seg),
            )
        )
    for f in findings_in(text):
        if f.hypothetical:
            continue
        if q_span is not None and q_span.start <= f.start < q_span.end:
            continue  # asked, not stated: settled by the answer (qa_findings)
        facts.append(
            Fact(
                kind=FactKind.finding,
                value=f.canonical,
                text=f.surface,
                segment_ids=(seg.id,),
                name=f.canonical,
                negated=f.negated,
                speaker=_speaker(seg),
            )
        )
    return facts


def segment_facts(seg: Segment, previous: Segment | None = None) -> list[Fact]:
    """Facts of ``seg``, including findings settled by ``seg`` answering ``previous``."""
    facts = statement_facts(seg)
    if previous is not None:
        facts = qa_findings(previous, seg) + qa_medications(previous, seg) + facts
    return facts


def extract_facts(segments: Iterable[Segment]) -> list[Fact]:
    """All facts of a transcript, in order. Empty or blank segments give none."""
    out: list[Fact] = []
    prev: Segment | None = None
    for seg in segments:
        if not seg.text.strip():
            continue
        out.extend(segment_facts(seg, prev))
        prev = seg
    return out


def dedupe_facts(facts: Iterable[Fact]) -> list[Fact]:
    """One fact per (kind, value, negated, status), keeping the first and merging segment ids."""
    merged: dict[tuple[FactKind, str, bool, MedStatus | None], Fact] = {}
    order: list[tuple[FactKind, str, bool, MedStatus | None]] = []
    for f in facts:
        key = (f.kind, f.value, f.negated, f.status)
        if key in merged:
            old = merged[key]
            ids = tuple(dict.fromkeys(old.segment_ids + f.segment_ids))
            merged[key] = Fact(**{**old.__dict__, "segment_ids": ids})
        else:
            merged[key] = f
            order.append(key)
    return [merged[k] for k in order]


def reported_and_denied(facts: Iterable[Fact]) -> set[str]:
    """Findings stated both present and absent in one visit (two sites, two times, or a misheard
    answer: PriMock57 dev "any vomiting?" / "uh, no." / "I vomited at the start"): a line stating
    one side is left to the writer and the clinician."""
    said = {(f.name, f.negated) for f in facts if f.kind is FactKind.finding and f.name is not None}
    return {name for name, negated in said if (name, not negated) in said}


__all__ = [
    "asks",
    "Fact",
    "FactKind",
    "FindingMention",
    "MedMention",
    "MedStatus",
    "answer_polarity",
    "dedupe_facts",
    "extract_facts",
    "findings_in",
    "medications_in",
    "qa_findings",
    "reported_and_denied",
    "is_question",
    "question_span",
    "segment_facts",
    "statement_facts",
]
