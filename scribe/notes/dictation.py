"""Dictation: a clinician speaking the note, kept as dictated.

When one voice speaks a note's structure ("history of present illness …", "assessment and plan,
number one, tick bite …"), the clinician has already decided what goes where, and in what
words. Reclassifying that sentence by sentence (what the extractive writer does with a
conversation) scatters a dictated problem list over the SOAP sections. This module instead:

* **detects** a dictation on evidence (``DictationEvidence``): one voice, spoken section
  headings (with numbered items or spoken commands beside them), and none of what makes a
  conversation (questions, "you/your", greetings, yes/no answers). No fitted score: each rule
  says what it means, and a conversation where the doctor summarises at the end ("so,
  assessment and plan …") fails on its other voice, or, unlabelled, on its questions;
* **parses** the words left to right (``DictationDrafter``): a spoken heading switches to the
  template section it names (unknown headings keep their words in the text), "number one" /
  "problem two" / "1." start numbered items, spoken punctuation ("period", "comma", "colon",
  "open/close parenthesis", "question mark") becomes punctuation, "new paragraph"/"new line"
  end the sentence and any open item, "scratch that"/"delete that"/"strike that" removes the
  sentence being dictated or, if none, the last sentence, heading or item marker;
* **writes** the note with the dictated wording: only spacing and capitalisation are fixed
  (and "uh"/"um" dropped). A numbered item is one note sentence ("1. Tick bite. Prescription
  for …"), so a problem and its plan stay together; outside items each dictated sentence is one
  note sentence. Every one carries evidence: the exact span of each segment it came from.

Pure: segments in, a ``Note`` out, no I/O. The guard (``guard.check_sentence``) runs on every
sentence as it does for every writer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..models import Evidence, Flag, Note, Section, Segment, Sentence, Speaker, utcnow
from .guard import GuardContext, check_note, check_sentence, evidence_for, merge_flags
from .templates import Template, load_template
from .text import utterances

WRITER_NAME = "dictation"

# ------------------------------------------------------------------ spoken headings

COMBINED = "assessment_plan"
"""The heading category for a dictated "assessment and plan" (one section, not two)."""

_HEADINGS: dict[str, tuple[str, ...]] = {
    "chief_complaint": (
        "chief complaint", "reason for visit", "reason for the visit", "reason for consultation",
        "reason for consult", "reason for referral", "presenting complaint",
    ),
    "hpi": (
        "history of present illness", "history of the present illness", "history of presenting complaint",
        "history of presenting illness", "present illness", "hpi", "h p i", "interval history", "history",
        "subjective",
    ),
    "ros": ("review of systems", "review of system", "systems review", "ros", "r o s"),
    "pmh": ("past medical history", "medical history", "past history", "pmh", "past medical and surgical history"),
    "psh": ("past surgical history", "surgical history"),
    "medications": ("current medications", "home medications", "medication list", "medications", "medication", "meds"),
    "allergies": ("drug allergies", "allergies", "allergy"),
    "social_family": (
        "social and family history", "family and social history", "social history", "family history",
    ),
    "exam": (
        "physical examination", "physical exam", "examination", "exam", "on examination", "on exam",
        "vital signs", "vitals", "objective",
    ),
    "results": (
        "laboratory results", "laboratory data", "lab results", "laboratory", "labs", "results",
        "diagnostic studies", "diagnostics", "imaging", "studies", "data",
    ),
    "assessment": (
        "clinical impression", "differential diagnosis", "assessment", "impression", "diagnoses", "diagnosis",
    ),
    "plan": ("treatment plan", "recommendations", "recommendation", "plan", "disposition"),
    COMBINED: (
        "assessment and plan", "assessment & plan", "assessment plan", "impression and plan", "a and p", "a & p",
        "a/p", "a&p",
    ),
}
_FUNCTION_WORDS = frozenset({"of", "on", "in", "and", "an", "&"})
"""Inside a heading of three words or more, a recogniser swaps these ("history on present
illness", "assessment in plan"); the heading is still that heading."""


def _heading_key(words: Sequence[str]) -> tuple[str, ...]:
    if len(words) < 3:
        return tuple(words)
    return tuple("·" if 0 < i < len(words) - 1 and w in _FUNCTION_WORDS else w for i, w in enumerate(words))


_MANGLED_HEADINGS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("history", "*", "illness"), "hpi"),
    (("history", "*", "*", "illness"), "hpi"),
)
"""Headings whose middle the recogniser garbles ("*": any one word): tiny.en has written
"history on present illness" and "history unprecedented illness"; no other heading is "history
… illness"."""

_HEADING_WORDS: list[tuple[tuple[str, ...], str]] = sorted(
    [*((_heading_key(p.split()), cat) for cat, phrases in _HEADINGS.items() for p in phrases), *_MANGLED_HEADINGS],
    key=lambda x: -len(x[0]),
)

# ------------------------------------------------------------------ spoken numbers and commands

_NUMBER_WORDS = {
    w: i + 1
    for i, w in enumerate(
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS.update({"won": 1, "to": 2, "too": 2, "for": 4})  # what a recogniser writes for "one/two/four"
_ITEM_WORDS = ("number", "problem", "item", "diagnosis")
_FILLERS = frozenset({"uh", "um", "umm", "uhm", "erm", "er", "hmm", "mm"})
_LEAD_INS = frozenset({"so", "okay", "ok", "alright", "and", "now", "then", "right", "for", "under", "the", "in"})
"""Words a clinician may put before a heading ("all right, assessment and plan", "for
assessment and plan", "under the plan"); dropped only when a heading or item marker follows."""

_PUNCT_COMMANDS: list[tuple[tuple[str, ...], str]] = [
    (("question", "mark"), "?"),
    (("full", "stop"), "."),
    (("full-stop",), "."),
    (("period",), "."),
    (("comma",), ","),
    (("semicolon",), ";"),
    (("semi", "colon"), ";"),
    (("colon",), ":"),
    (("open", "parenthesis"), "("),
    (("open", "parentheses"), "("),
    (("open", "paren"), "("),
    (("open", "bracket"), "("),
    (("close", "parenthesis"), ")"),
    (("close", "parentheses"), ")"),
    (("close", "paren"), ")"),
    (("close", "bracket"), ")"),
]
_BREAK_COMMANDS = [("new", "paragraph"), ("next", "paragraph"), ("new", "line")]
_SCRATCH_COMMANDS = [("scratch", "that"), ("delete", "that"), ("strike", "that"), ("undo", "that")]
_SCRATCH_HEARD = [(a, b) for a in ("scratch", "scratched", "cratch") for b in ("that", "mat", "matt", "at", "dat")]
"""How a recogniser writes "scratch that" (measured: "Scratch Matt", "Cratch mat"); these count
only where the command can stand: followed by punctuation or the end of the utterance."""
_COLON_HEARD = frozenset({"colon", "colin", "colen", "cologne"})
"""A spoken "colon" right after a heading, as a recogniser writes it ("Chief complaint, Colin …")."""

# "period" and "colon" are also nouns ("last menstrual period", "the sigmoid colon")
_NOUN_BEFORE = frozenset(
    """a an the this that her his their its last menstrual each every per same one two three four
    waiting grace trial time refractory incubation observation postoperative post-operative washout
    sigmoid ascending descending transverse distal proximal entire whole redundant spastic irritable
    right left of any no short long week month year""".split()
)
_NOUN_AFTER = frozenset(
    """of was is has had lasted lasting started began in when where which that and or cancer cancers
    polyp polyps mass masses resection wall biopsy biopsies lesion lesions screening surgery with""".split()
)

_SECOND_PERSON = re.compile(r"\b(?:you|your|you're|you've|you'll|you'd|yours|yourself|ya)\b", re.I)
_GREETING = re.compile(
    r"^\W*(?:hi|hello|hey|good (?:morning|afternoon|evening)|nice to (?:meet|see) you|how are you|bye|goodbye)\b", re.I
)
_ANSWER = re.compile(r"^\W*(?:yes|yeah|yep|no|nope|uh-huh|mm-hmm|mhm|sure)\W*$", re.I)
_QUESTION_OPENER = re.compile(
    r"^\W*(?:(?:and|so|okay|ok|alright|um|uh)\W+)*(?:do|does|did|have|has|are|is|was|were|can|could|would|will|"
    r"any|how|what|when|where|which|who|why|tell me)\b.*\w.*$",
    re.I,
)

# a number spoken "1 ,000" / "1,000" / "98.6" is one token; "-byed" (a recogniser's fragment) is a word
_TOKEN = re.compile(
    r"(?i:\b(?:mr|mrs|ms|dr|prof|st|jr|sr|vs|approx|e\.g|i\.e)\.(?=\s|$))"
    r"|\d{1,3}(?:\s?,\d{3})+(?:\.\d+)?"
    r"|#\d+"
    r"|\d+(?:[.:/-]\d+)*(?:[a-zA-Z%][\w%/-]*)?"
    r"|[A-Za-z][\w'’&/.-]*[\w'’-]|[A-Za-z]"
    r"|-[\w'’]+"
    r"|[.,:;?!()]"
    r"|\S"
)
_END_PUNCT = frozenset(".?!")


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    norm: str
    start: int
    end: int

    @property
    def is_word(self) -> bool:
        return self.text[0].isalnum() or self.text[0] in "#-"

    @property
    def is_punct(self) -> bool:
        return self.text in ".,:;?!()"


def _tokens(text: str) -> list[_Token]:
    out = []
    for m in _TOKEN.finditer(text):
        t = m.group(0)
        if re.fullmatch(r"\d{1,3}(?:\s?,\d{3})+(?:\.\d+)?", t):
            t = t.replace(" ", "")  # "1 ,000" (the recogniser's spacing) is 1,000
        out.append(_Token(t, t.lower().replace("’", "'"), m.start(), m.end()))
    return out


# ------------------------------------------------------------------ what the parser builds


@dataclass(frozen=True, slots=True)
class Piece:
    """One output token and where it was said: ``segment_id`` and its character span."""

    text: str
    segment_id: str
    start: int
    end: int

    @property
    def is_word(self) -> bool:
        return bool(self.text) and (self.text[0].isalnum() or self.text[0] in "#-")


@dataclass
class _Entry:
    """A closed piece of the dictation, in order: a sentence, a heading, an item marker or a
    paragraph break. ``scratch that`` pops the last one that is not a break."""

    kind: str  # "sentence" | "heading" | "item" | "break"
    pieces: list[Piece] = field(default_factory=list)
    category: str = ""
    """For a heading: the category it names (``_HEADINGS`` key)."""
    number: int = 0
    """For an item: its number as spoken."""


@dataclass
class DictationEvidence:
    """What was heard for and against "this is a dictation" (numbers, no text: safe to log)."""

    voices: int = 0
    """Distinct speaker labels on non-empty segments (``unknown`` not counted)."""
    headings: int = 0
    items: int = 0
    commands: int = 0
    dialogue: int = 0
    """Utterances that belong to a conversation: questions, "you/your", greetings, yes/no answers."""
    segments: int = 0

    @property
    def structure(self) -> int:
        return self.headings + self.items + self.commands

    @property
    def verdict(self) -> bool:
        """A dictation: one voice; a spoken note structure (a heading, or a numbered list of at
        least two items) with at least one more cue beside it; and at most one stray dialogue
        cue (one recogniser-added "?" or a closing "thank you" happens in a dictation, but two
        mean someone is being talked with)."""
        return (
            self.voices <= 1
            and (self.headings >= 1 or self.items >= 2)
            and self.structure >= 2
            and self.dialogue <= 1
        )

    def reasons(self) -> list[str]:
        """Why the verdict is what it is, in words (for logs and the eval)."""
        out = []
        if self.voices > 1:
            out.append(f"{self.voices} voices")
        if self.headings == 0 and self.items < 2:
            out.append("no spoken heading or numbered list")
        elif self.structure < 2:
            out.append("a single structure cue")
        if self.dialogue > 1:
            out.append(f"{self.dialogue} conversational utterances")
        return out or ["one voice dictating a note structure"]


def _dialogue_cues(text: str) -> int:
    n = 0
    for u in utterances(text):
        t = u.text.strip()
        if not t:
            continue
        if (
            t.endswith("?")
            or _QUESTION_OPENER.match(t) and not t.endswith(".")
            or _SECOND_PERSON.search(t)
            or _GREETING.match(t)
            or _ANSWER.match(t)
        ):
            n += 1
    return n


# ------------------------------------------------------------------ the parser

FlagCache = dict[tuple[str, str, tuple[tuple[str, str], ...]], list[Flag]]
"""Guard flags by (section key, text, evidence): what a partial note need not check again."""


class DictationDrafter:
    """Consumes segments in order (as the extractive drafter does) and keeps both the evidence
    for "dictation" and the parsed note; ``note()`` assembles it at any point.

    Work per segment is proportional to its length: the parse is a left-to-right state machine
    whose only look-back is ``scratch that``.
    """

    def __init__(self, encounter_id: str = "", template: Template | str | None = None, *,
                 created_at: datetime | None = None):
        self.encounter_id = encounter_id
        self.template = load_template(template or "soap") if not isinstance(template, Template) else template
        self.created_at = created_at
        self.evidence = DictationEvidence()
        self.segments: dict[str, Segment] = {}
        self._order: list[str] = []
        self._speakers: set[Speaker] = set()
        self._entries: list[_Entry] = []
        self._open: list[Piece] = []

    # -------------------------------------------------------------- input

    def add(self, segment: Segment) -> None:
        if segment.id in self.segments:
            return  # a repeat after a reconnect
        self.segments[segment.id] = segment
        self._order.append(segment.id)
        if not segment.text.strip():
            return
        ev = self.evidence
        ev.segments += 1
        if segment.speaker is not Speaker.unknown:
            self._speakers.add(segment.speaker)
        ev.voices = len(self._speakers)
        ev.dialogue += _dialogue_cues(segment.text)
        self._parse(segment)

    def extend(self, segments: Iterable[Segment]) -> None:
        for s in segments:
            self.add(s)

    @property
    def is_dictation(self) -> bool:
        return self.evidence.verdict

    # -------------------------------------------------------------- parsing

    def _close(self) -> None:
        if any(p.is_word for p in self._open):
            self._entries.append(_Entry("sentence", self._open))
        self._open = []

    def _push(self, entry: _Entry) -> None:
        self._close()
        self._entries.append(entry)

    def _punct(self, mark: str, piece_at: _Token, seg: Segment) -> None:
        """Spoken or written punctuation: replaces a recogniser's mark just before it
        ("clear, period" → "clear.")."""
        while self._open and self._open[-1].text in ",;:." and mark not in "()":
            self._open.pop()
        if not self._open and mark not in "(":
            return  # nothing to punctuate (e.g. "period" right after a heading)
        self._open.append(Piece(mark, seg.id, piece_at.start, piece_at.end))
        if mark in _END_PUNCT:
            self._close()

    def _scratch(self) -> None:
        if any(p.is_word for p in self._open):
            self._open = []
            return
        self._open = []
        for i in range(len(self._entries) - 1, -1, -1):
            if self._entries[i].kind != "break":
                del self._entries[i]
                return

    def _parse(self, seg: Segment) -> None:
        toks = _tokens(seg.text)
        ev = self.evidence
        n = len(toks)
        i = 0
        at_start = True

        def words_at(k: int, length: int) -> tuple[str, ...]:
            out: list[str] = []
            j = k
            while j < n and len(out) < length:
                if toks[j].is_punct:
                    return tuple(out)  # a phrase does not run across punctuation
                out.append(toks[j].norm)
                j += 1
            return tuple(out)

        def skip_punct(k: int, marks: str = ".,:;-") -> int:
            while k < n and toks[k].text in marks:
                k += 1
            return k

        def match(
            k: int, phrases: Sequence[tuple[tuple[str, ...], str]],
            key: Callable[[Sequence[str]], tuple[str, ...]] = tuple,
        ) -> tuple[int, str] | None:
            for phrase, value in phrases:
                got = key(words_at(k, len(phrase)))
                if len(got) == len(phrase) and all(p == "*" or p == g for p, g in zip(phrase, got)):
                    return k + len(phrase), value
            return None

        def item_at(k: int) -> tuple[int, int | None] | None:
            """An item marker at ``k``: (index after it, its number or None for "next")."""
            if k >= n:
                return None
            t = toks[k]
            if t.norm.startswith("#") and t.norm[1:].isdigit():
                return k + 1, int(t.norm[1:])
            if t.norm.isdigit() and k + 1 < n and toks[k + 1].text in ".)" and int(t.norm) <= 30:
                # "1." / "2)" at a sentence start; "1.5" is one token and never gets here
                if k + 2 >= n or toks[k + 2].is_word:
                    return k + 2, int(t.norm)
            w = words_at(k, 3)
            if len(w) >= 2 and w[0] in ("next",) and w[1] in ("problem", "item", "diagnosis"):
                return k + 2, None
            if w and w[0] in _ITEM_WORDS:
                j = 1
                if len(w) >= 3 and w[0] != "number" and w[1] == "number":
                    j = 2  # "problem number two"
                if len(w) > j:
                    num = _NUMBER_WORDS.get(w[j]) or (int(w[j]) if w[j].isdigit() and int(w[j]) <= 30 else None)
                    # "number one"/"problem 2"; a recogniser's "to"/"for" only right after "number"
                    if num and (w[j] not in ("to", "too", "for") or w[0] == "number"):
                        return k + j + 1, num
            return None

        def boundary(k: int) -> bool:
            """Does a heading end at ``k``? Punctuation, the end, a spoken mark or an item."""
            if k >= n or toks[k].text in ".,:;-" or toks[k].norm in _COLON_HEARD:
                return True
            if match(k, [(p, mark) for p, mark in _PUNCT_COMMANDS if mark in ".:,;"]) is not None:
                return True
            if match(k, [(p, "") for p in _BREAK_COMMANDS]) is not None:
                return True
            return item_at(k) is not None

        while i < n:
            t = toks[i]
            if t.norm in _FILLERS:
                i += 1
                continue
            if at_start:
                k = i
                while k < n and (toks[k].norm in _LEAD_INS or toks[k].norm in _FILLERS or toks[k].text == ","):
                    k += 1
                if words_at(k, 2) == ("all", "right"):
                    k = skip_punct(k + 2, ",")
                # a spoken heading
                hit = match(k, _HEADING_WORDS, _heading_key)
                if hit is not None and boundary(hit[0]):
                    end, category = hit
                    self._push(_Entry("heading", [Piece(seg.text[toks[k].start:toks[end - 1].end], seg.id,
                                                        toks[k].start, toks[end - 1].end)], category=category))
                    ev.headings += 1
                    i = self._after_mark(toks, end, skip_punct)
                    continue
                # "paragraph, impression." – a bare "paragraph" opening an utterance
                if words_at(k, 1) == ("paragraph",):
                    self._push(_Entry("break"))
                    ev.commands += 1
                    i = skip_punct(k + 1, ".,:;")
                    continue
                it = item_at(k)
                if it is not None:
                    end, num = it
                    if num is None:
                        num = self._last_number() + 1
                    self._push(_Entry("item", [Piece(seg.text[toks[k].start:toks[end - 1].end], seg.id,
                                                     toks[k].start, toks[end - 1].end)], number=num))
                    ev.items += 1
                    i = skip_punct(end)
                    continue  # still at a start: "number one, number two" or "number one. Plan:"
            # commands anywhere
            hit = match(i, [(p, "") for p in _SCRATCH_COMMANDS])
            if hit is None:
                hit = match(i, [(p, "") for p in _SCRATCH_HEARD])
                if hit is not None and not (hit[0] >= n or toks[hit[0]].text in ".,;!"):
                    hit = None
            if hit is not None:
                self._scratch()
                ev.commands += 1
                i = skip_punct(hit[0], ".,")
                at_start = True
                continue
            hit = match(i, [(p, "") for p in _BREAK_COMMANDS])
            if hit is not None:
                self._push(_Entry("break"))
                ev.commands += 1
                i = skip_punct(hit[0], ".,")
                at_start = True
                continue
            hit = match(i, _PUNCT_COMMANDS)
            if hit is not None and self._is_command(toks, i, hit[0], hit[1]):
                end, mark = hit
                self._punct(mark, toks[i], seg)
                ev.commands += 1
                i = skip_punct(end, ".,") if mark in ".?" else skip_punct(end, "," if mark != "," else ",.")
                if mark in ".?":
                    at_start = True
                continue
            # written punctuation and words
            if t.is_punct:
                if t.text in "()":
                    self._open.append(Piece(t.text, seg.id, t.start, t.end))
                else:
                    self._punct(t.text, t, seg)
                    at_start = t.text in _END_PUNCT
                i += 1
                continue
            self._open.append(Piece(t.text, seg.id, t.start, t.end))
            at_start = False
            i += 1
        # A segment is one stretch of speech, not one sentence: the recogniser ends a finished
        # sentence with a full stop (and then it is closed already); without one the sentence
        # runs on into the next segment ("… tenderness over the" / "distal phalanx.").

    def _after_mark(self, toks: list[_Token], k: int, skip_punct: Callable[[int], int]) -> int:
        """After a heading: skip its punctuation and a spoken "colon"/"period"/"comma"."""
        k = skip_punct(k)
        if k < len(toks) and (toks[k].norm in ("period", "comma") or toks[k].norm in _COLON_HEARD):
            self.evidence.commands += 1
            k = skip_punct(k + 1)
        return k

    @staticmethod
    def _is_command(toks: list[_Token], i: int, end: int, mark: str) -> bool:
        """"period" and "colon" are commands unless used as nouns; the others always are."""
        if mark not in ".:" or end - i > 1 or toks[i].norm not in ("period", "colon"):
            return True
        before = toks[i - 1].norm if i > 0 else ""
        after = toks[end].norm if end < len(toks) else ""
        return before not in _NOUN_BEFORE and after not in _NOUN_AFTER

    def _last_number(self) -> int:
        for e in reversed(self._entries):
            if e.kind == "item":
                return e.number
            if e.kind == "heading":
                return 0
        return 0

    # -------------------------------------------------------------- the note

    def headings(self) -> list[str]:
        """The categories of the spoken headings, in order (what the structure tests read)."""
        return [e.category for e in self._entries if e.kind == "heading"]

    def section_key(self, category: str) -> str:
        """The template section a spoken heading names. "Assessment and plan" goes to the
        section covering both if the template has one, else to the plan's (a dictated problem
        list is kept whole; the guard expects new medicines in a plan section)."""
        if category == COMBINED:
            for s in self.template.sections:
                if "assessment" in s.covers and "plan" in s.covers:
                    return s.key
            return self.template.section_for("plan").key
        return self.template.section_for(category).key

    def units(self) -> list[tuple[str, str, list[Piece]]]:
        """(section key, text, pieces) for every note sentence, in dictated order."""
        entries = list(self._entries)
        if any(p.is_word for p in self._open):
            entries.append(_Entry("sentence", list(self._open)))
        prose_key = self.template.section_for("hpi").key
        section: str | None = None
        out: list[tuple[str, list[list[Piece]], int | None, list[Piece]]] = []
        item: tuple[str, list[list[Piece]], int | None, list[Piece]] | None = None
        for e in entries:
            if e.kind == "heading":
                section, item = self.section_key(e.category), None
            elif e.kind == "break":
                item = None
            elif e.kind == "item":
                # a numbered list before any heading is a problem list
                item = (section or self.section_key(COMBINED), [], e.number, list(e.pieces))
                out.append(item)
            elif item is not None:
                item[1].append(e.pieces)
            else:
                out.append((section or prose_key, [e.pieces], None, []))
        units = []
        for key, sentences, number, marker in out:
            if not sentences:
                continue  # an item marker with nothing after it (yet)
            text = " ".join(_render(s) for s in sentences)
            if number is not None:
                text = f"{number}. {text}"
            units.append((key, text, marker + [p for s in sentences for p in s]))
        return units

    def note(self, ctx: GuardContext | None = None, *, cache: FlagCache | None = None) -> Note:
        """The dictated note; with ``ctx`` every sentence is guard-checked (``cache`` keeps the
        flags of sentences unchanged since the last call, so a partial note costs only what
        changed)."""
        by_key: dict[str, list[Sentence]] = {s.key: [] for s in self.template.sections}
        counts: dict[str, int] = {}
        for key, text, pieces in self.units():
            evidence = self._evidence(pieces)
            first = evidence[0].segment_id if evidence else "seg-00000"
            k = counts.get(first, 0)
            counts[first] = k + 1
            sentence = Sentence(id=f"{first}.d{k}", text=text, evidence=evidence)
            if ctx is not None:
                sec = self.template.section(key)
                ck = (key, text, tuple((e.segment_id, e.quote) for e in evidence))
                flags = cache.get(ck) if cache is not None else None
                if flags is None:
                    flags = merge_flags([], check_sentence(sentence, ctx, Section(key=sec.key, title=sec.title)))
                    if cache is not None:
                        cache[ck] = flags
                sentence = sentence.model_copy(update={"flags": list(flags)})
            by_key[key].append(sentence)
        return Note(
            encounter_id=self.encounter_id,
            template=self.template.name,
            title=self.template.title,
            loinc=self.template.loinc,
            sections=[Section(key=s.key, title=s.title, sentences=by_key[s.key]) for s in self.template.sections],
            writer=WRITER_NAME,
            created_at=self.created_at or utcnow(),
        )

    def _evidence(self, pieces: list[Piece]) -> list[Evidence]:
        """One evidence per segment: the exact span from its first to its last piece used."""
        spans: dict[str, list[int]] = {}
        for p in pieces:
            span = spans.setdefault(p.segment_id, [p.start, p.end])
            span[0], span[1] = min(span[0], p.start), max(span[1], p.end)
        return [evidence_for(self.segments[sid], a, b) for sid, (a, b) in spans.items()]


# ------------------------------------------------------------------ rendering

_NO_SPACE_BEFORE = frozenset(",.:;?!)%")


def _render(pieces: list[Piece]) -> str:
    """The dictated words with spacing and capitals fixed, nothing else."""
    out = ""
    prev: Piece | None = None
    for p in pieces:
        t = p.text
        touching = prev is not None and prev.segment_id == p.segment_id and prev.end == p.start
        if not out:
            out = t
        elif t[0] in _NO_SPACE_BEFORE or out.endswith("(") or touching:
            out += t  # "45-year-old" as the recogniser wrote it; a spoken "comma" hugs its word
        else:
            out += " " + t
        prev = p
    out = re.sub(r"\bi\b", "I", out)
    out = re.sub(r"\bi'(m|ve|d|ll)\b", lambda m: "I'" + m.group(1), out)
    # capitals at the start and after a full stop
    out = re.sub(r"(^|[.?!]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), out)
    out = out.rstrip(" ,;")
    if out and out[-1] not in ".?!:":
        out += "."
    return out


# ------------------------------------------------------------------ one-shot helpers


def dictation_evidence(segments: Sequence[Segment], template: Template | str | None = None) -> DictationEvidence:
    d = DictationDrafter("", template)
    d.extend(segments)
    return d.evidence


def is_dictation(segments: Sequence[Segment]) -> bool:
    """Is this recording a clinician dictating a note (see ``DictationEvidence.verdict``)?"""
    return dictation_evidence(segments).verdict


def draft_dictation(
    encounter_id: str,
    template: Template | str | None,
    segments: Sequence[Segment],
    *,
    guard: bool = True,
    created_at: datetime | None = None,
) -> Note:
    """The dictated note, guard-checked (flags and omissions) like every writer's note.

    Call it only when ``is_dictation(segments)``; on a conversation it still returns what the
    parser made of the words, which is not a note.
    """
    d = DictationDrafter(encounter_id, template, created_at=created_at)
    d.extend(segments)
    note = d.note()
    return check_note(note, list(segments)) if guard else note


__all__ = [
    "COMBINED",
    "DictationDrafter",
    "DictationEvidence",
    "Piece",
    "WRITER_NAME",
    "dictation_evidence",
    "draft_dictation",
    "is_dictation",
]
