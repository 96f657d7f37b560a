"""Text primitives shared by fact extraction, the guard and the extractive writer.

Transcripts arrive in two shapes: recogniser output ("I don't have any chest pain.") and
benchmark text that is lowercased and pre-tokenised ("i do n't have any chest pain .") or has
no punctuation at all. Everything here works on both: tokens keep their character offsets in
the original string so that evidence quotes can always be cut from the segment text exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# A token is a number (1,000 / 2.5 / 120/80 / 1+), a word (don't, n't, x-ray is two words),
# or one symbol we care about.
_TOKEN_RE = re.compile(
    r"""
    (?P<num>\d{1,2}:\d{2}|\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+(?:\.\d+)?)?\+?)
  | (?P<word>[^\W\d_]+(?:\d+[^\W\d_]*)*(?:['’][^\W\d_]+)*|['’][^\W\d_]+)
  | (?P<sym>[%<>≤≥?!.,;:/°+])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    """Surface form, as in the source string."""
    norm: str
    """Lowercased, curly apostrophes straightened."""
    start: int
    end: int
    kind: str
    """``num``, ``word`` or ``sym``."""

    @property
    def stem(self) -> str:
        return stem(self.norm)


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup or "sym"
        surface = m.group(0)
        norm = surface.lower().replace("’", "'")
        if kind == "word" and norm.startswith("'") and norm != "'s" and not norm.startswith("'t"):
            # a stray leading quote mark: keep the word
            norm = norm.lstrip("'")
        out.append(Token(surface, norm, m.start(), m.end(), kind))
    return out


_IRREGULAR = {
    "feet": "foot",
    "teeth": "tooth",
    "children": "child",
    "women": "woman",
    "men": "man",
    "lice": "louse",
    "mice": "mouse",
}
_NO_STRIP = ("ss", "us", "is", "ys", "as", "os")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A deliberately light plural stripper (fevers → fever, ribs → rib, diabetes stays).

    Only used for matching lexicon entries and overlap scoring; never shown to a user.
    """
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "xes", "sses")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(_NO_STRIP):
        return w[:-1]
    return w


STOPWORDS = frozenset(
    """
    a an the and or but if so of to in on at for from by with about as into than then there here
    this that these those it its it's is are was were be been being am do does did done doing
    have has had having i i'm i've i'd i'll me my mine myself you you're you've your yours
    yourself he him his she her hers we us our they them their what which who whom whose when
    where why how all any some each every both few more most other such no nor not only own same
    too very can will just should would could might must shall may also well okay ok alright
    right yeah yes yep uh um uhm hmm mm mhm oh ah like know just really kind sort gonna gon na
    wan wanna let's let go going get got say said tell told think thing things stuff lot bit
    little much many one ones now then today still again back up down out over n't 's 're 've 'll
    'd 'm don't didn't doesn't can't won't isn't aren't wasn't haven't hasn't
    """.split()
)

FILLERS = frozenset(
    {"uh", "um", "uhm", "umm", "erm", "er", "ah", "hmm", "mm", "mhm", "mm-hmm", "uh-huh", "huh"}
)


def content_stems(text: str) -> list[str]:
    """Stems of the content words and numbers of ``text`` (stopwords and symbols dropped)."""
    return [
        t.stem
        for t in tokenize(text)
        if t.kind == "num" or (t.kind == "word" and t.norm not in STOPWORDS and len(t.norm) > 1)
    ]


# ------------------------------------------------------------------ sentences


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of a source string: ``text == source[start:end]``."""

    start: int
    end: int
    text: str

    @property
    def is_question(self) -> bool:
        return self.text.rstrip().endswith("?")


_SENT_END = re.compile(r"[.?!]+(?=\s|$)")


def split_sentences(text: str) -> list[Span]:
    """Split on ``. ? !`` followed by whitespace or the end; keeps offsets into ``text``.

    Decimal points (``98.6``) and abbreviations without a following space are not split.
    A string without terminal punctuation is one sentence.
    """
    spans: list[Span] = []
    pos = 0
    for m in _SENT_END.finditer(text):
        end = m.end()
        chunk = text[pos:end]
        if chunk.strip(" \t\n.?!"):
            lead = len(chunk) - len(chunk.lstrip())
            spans.append(Span(pos + lead, end, text[pos + lead : end]))
        elif spans and chunk.strip():
            # lone punctuation (" ?" in tokenised text) belongs to the previous sentence
            prev = spans.pop()
            spans.append(Span(prev.start, end, text[prev.start : end]))
        pos = end
    rest = text[pos:]
    if rest.strip(" \t\n.?!,;:"):
        lead = len(rest) - len(rest.lstrip())
        stripped = rest.rstrip()
        spans.append(Span(pos + lead, pos + len(stripped), text[pos + lead : pos + len(stripped)]))
    return spans


# --------------------------------------------------------------- readable text

_SPACE_BEFORE = re.compile(r"\s+([,.;:?!%)])")
_SPACE_AFTER = re.compile(r"([(])\s+")
_CONTRACTION = re.compile(r"\b(\w+)\s+(n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE)
_GONNA = re.compile(r"\b(gon|wan)\s+na\b", re.IGNORECASE)
_STUTTER = re.compile(r"\b(\w+(?:'\w+)?)(?:\s*,?\s+\1\b)+", re.IGNORECASE)
_PARTIAL = re.compile(r"\b\w+-\s*(?=[,.]|\s)")  # "ex- exerting", "mon- ,"
_FILLER_RE = re.compile(
    r"(?<![\w'-])(?:uh-huh|mm-hmm|uh|um+|uhm|erm|hmm+|mhm)(?![\w'-])\s*,?\s*", re.IGNORECASE
)
_YOU_KNOW = re.compile(r",?\s*\byou know\b\s*,?", re.IGNORECASE)
_MULTI_COMMA = re.compile(r"(?:\s*,\s*){2,}")
_SPACES = re.compile(r"\s{2,}")


AGREEMENT_TAG = re.compile(r"\s*,?\s*\b(?:okay|ok|all\s+right|alright|right)\s*[.!]?\s*$", re.I)
"""A tag asking for agreement at the end of what a clinician says ("…, okay?"): not part of the
problem or the decision it follows (``problems``, ``plan_lines``)."""
YOUR = re.compile(r"\byour\s+", re.I)
"""The clinician's "your" before what a problem or decision names ("your hypertension")."""


def clean_utterance(text: str) -> str:
    """Make a spoken sentence readable without changing what it says.

    Re-attaches tokenised contractions and punctuation, drops fillers (uh, um, mm-hmm),
    "you know", stutters ("i , i , i've" → "I've") and cut-off words, and capitalises.
    Numbers, drug names and negations are never touched.
    """
    s = text.strip()
    s = _CONTRACTION.sub(lambda m: m.group(1) + m.group(2), s)
    s = _GONNA.sub(lambda m: m.group(1) + "na", s)
    s = _FILLER_RE.sub(" ", s)
    s = _YOU_KNOW.sub(",", s)
    s = _PARTIAL.sub(" ", s)
    s = _SPACE_BEFORE.sub(r"\1", s)
    s = _SPACE_AFTER.sub(r"\1", s)
    # stutters: "i, i, i've" → "i've" ; "the, the, the last" → "the last"
    s = re.sub(r"\b((?:\w+\s+){0,2}\w+)(?:\s*,\s*\1\b)+", r"\1", s, flags=re.IGNORECASE)
    s = re.sub(r"\b(\w+)\s*,\s*(\1'\w+)", r"\2", s, flags=re.IGNORECASE)
    s = _STUTTER.sub(r"\1", s)
    s = _MULTI_COMMA.sub(", ", s)
    s = _SPACES.sub(" ", s).strip(" ,;:-")
    # a trailing tag ("…, okay?") is conversation, not content
    s = re.sub(r",\s*(?:okay|ok|alright|all right|right)\s*\?$", ".", s, flags=re.I)
    s = re.sub(r"^(?:(?:and|so|okay|ok|all right|alright|well|now|yeah)\s*,?\s+)+", "", s, flags=re.I)
    s = re.sub(r"\bi\b", "I", s)
    s = re.sub(r"\bi'(m|ve|d|ll)\b", lambda m: "I'" + m.group(1), s)
    if s and s[0].isalpha():
        s = s[0].upper() + s[1:]
    if s and s[-1] not in ".?!":
        s += "."
    return s


# ------------------------------------------------------------ utterances

_MAX_WORDS = 40
_BREAKERS = (
    "okay so",
    "ok so",
    "alright so",
    "all right so",
    "okay and",
    "alright and",
    "so i want",
    "so i wan na",
    "so i'm",
    "so for",
    "so on",
    "now let's",
    "now i",
    "okay now",
    "alright now",
    "and then",
    "so your",
    "so it",
    "so we",
    "okay",
    "alright",
    "so",
    "now",
)
_BREAK_KEYS = [tuple(b.split()) for b in _BREAKERS]
_NO_CUT_AFTER = frozenset(
    """no not n't never without denies deny denied any a an the of to and or your my his her
    some very really""".split()
)


def utterances(text: str) -> list[Span]:
    """Sentences of ``text``; an unpunctuated run longer than 40 words is cut at discourse
    markers ("okay so", "alright", "and then" …) into pieces of 8–40 words, so recogniser output
    without punctuation still yields sentence-sized units. Offsets index ``text``."""
    out: list[Span] = []
    for s in split_sentences(text):
        toks = [t for t in tokenize(s.text) if t.kind != "sym"]
        if len(toks) <= _MAX_WORDS:
            out.append(s)
            continue
        cuts: list[int] = []  # token indices where a new piece starts
        last = 0
        for i in range(1, len(toks)):
            if i - last < 8 or len(toks) - i < 6:
                continue
            if toks[i - 1].norm in _NO_CUT_AFTER:
                continue  # never separate "no" / "not" / "denies" from what they negate
            key_hit = any(tuple(t.norm for t in toks[i : i + len(k)]) == k for k in _BREAK_KEYS)
            if key_hit or i - last >= _MAX_WORDS:
                cuts.append(i)
                last = i
        bounds = [0] + cuts + [len(toks)]
        for a, b in zip(bounds, bounds[1:]):
            cs = s.start + toks[a].start
            ce = s.start + toks[b - 1].end
            if b == len(toks):
                ce = s.end
            out.append(Span(cs, ce, text[cs:ce]))
    return out
