"""What a note may instruct, and what the clinician said to a dictation assistant.

Two failures of a small note model, both seen on ACI-Bench dev notes, both invented plans that
the guard's fact checks (numbers, drugs, negations) cannot see because they assert no fact:

* **Instructions nobody gave.** The model writes "Return if chest pain or shortness of breath
  occurs." citing the lines where the doctor *asked* about chest pain, or "Patient education on
  the use of crutches." citing the line where crutches were recommended: the prompt's example
  ends with return precautions, so the model adds them to every plan. An instruction belongs to
  a family (return precautions, follow-up, education, monitoring, referral, ordering a test); a sentence
  giving one is supported only when what the clinician said in its cited lines uses that
  family's words ("come back", "call", "let me know" for return precautions). The word lists
  are deliberately broad (a clinician who said "try to keep it elevated" *has* counselled): they
  catch an instruction with no trace in its evidence, not a paraphrase.

* **Commands to a dictation assistant.** Ambient products are driven by voice ("hey dragon,
  show me the chest x-ray", "hey dragon, finalize the note", "… order the medications and
  procedures discussed"). Those that only navigate or close the record are not part of the
  visit: the model turned them into "Finalize the report." and "Order the medications and
  procedures discussed." ``meta_commands`` finds them, the model's transcript leaves them out,
  and a sentence resting only on one is dropped. A command that carries content ("hey dragon,
  order amoxicillin 500 milligrams three times a day") is kept: it is the plan.

Pure: text in, spans or a family name out.

The follow-up family's "said" words include an interval ahead ("in two weeks"): a clinician
who says "let's see how it is in two weeks" has set a follow-up; "over the past few months"
has not (ACI dev D2N074).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .guard import spoken_values
from .numbers import find_quantities, supports
from .text import split_sentences

# ------------------------------------------------------------------ dictation-assistant commands

WAKE_WORDS = ("dragon", "scribe", "computer", "nuance")
"""Names clinicians address a dictation assistant by ("hey, dragon, …")."""

_WAKE = re.compile(r"\b(?:hey|hi|ok|okay)\s*,?\s*(?:" + "|".join(WAKE_WORDS) + r")\b\s*[,.?!]?", re.I)
_LEAD_IN = r"^\s*(?:(?:uh|um)\s*,?\s*)*(?:please\s+|go ahead and\s+|can you\s+|could you\s+)*"
_RECORD_THINGS = r"(?:medications?|meds|procedures?|orders?|tests?|labs?)"
_META = re.compile(
    _LEAD_IN + r"(?:"
    r"(?:finali[sz]e|sign|close|save|submit|complete|end)\s+(?:(?:the|this|my)\s+)?(?:note|report|record|visit|encounter|dictation|chart)"
    r"|(?:show|pull up|bring up|open|display)\s+(?:me\s+)?(?:the\s+|my\s+)?"
    r"|order\s+(?:the|any|all)\s+(?:of\s+the\s+)?" + _RECORD_THINGS + r"\b"
    r"(?:\s+(?:and|or|,)\s+(?:the\s+)?" + _RECORD_THINGS + r")*"
    r"\s*(?:that\s+)?(?:we\s+)?(?:discussed|mentioned|talked about|we talked about)?"
    r")",
    re.I,
)
"""A command that navigates or closes the record: "finalize the note", "show me the ecg",
"order the medications and procedures discussed" (the rest of the visit says what they are)."""
_CLAUSE_END = re.compile(r"[.?!]")
_ADDRESSED_LAST = re.compile(r"^(?P<cmd>.*?)\s*,?\s*(?:hey\s*,?\s*)?(?:" + "|".join(WAKE_WORDS) + r")\s*[.?!]?\s*$", re.I)
"""A command with the assistant addressed at its end: "finalize report , dragon ."."""


@dataclass(frozen=True, slots=True)
class CommandSpan:
    start: int
    end: int


def meta_commands(text: str) -> list[CommandSpan]:
    """Spans of ``text`` that are navigation/closing commands to a dictation assistant: the
    wake words and the rest of that sentence ("hey , dragon , finalize the note ."), or a
    sentence that names the assistant at its end ("finalize report , dragon ."). A wake word
    alone ("hey , dragon ?") is a span too; a command with content is not."""
    spans: list[CommandSpan] = []
    for m in _WAKE.finditer(text):
        rest = text[m.end():]
        stop = _CLAUSE_END.search(rest)
        clause_end = m.end() + (stop.end() if stop else len(rest))
        clause = text[m.end():clause_end]
        if not clause.strip(" ,.?!") or _META.match(clause):
            spans.append(CommandSpan(m.start(), clause_end))
        elif m.group().rstrip()[-1:] in ".?!":  # "hey , dragon ?" and then the visit goes on
            spans.append(CommandSpan(m.start(), m.end()))
        # a show-me command's own sentence is navigation; what the clinician reads out next
        # ("it shows mild fluid") is the finding, and stays
    for sent in split_sentences(text):
        a = _ADDRESSED_LAST.match(sent.text)
        if a is not None and a.group("cmd").strip(" ,") and _META.match(a.group("cmd")) \
                and not any(sp.start <= sent.start < sp.end for sp in spans):
            spans.append(CommandSpan(sent.start, sent.end))
    spans.sort(key=lambda sp: sp.start)
    return spans


def without_meta_commands(text: str) -> str:
    """``text`` with its navigation/closing commands removed (spacing tidied)."""
    spans = meta_commands(text)
    if not spans:
        return text
    out, pos = [], 0
    for s in spans:
        out.append(text[pos:s.start])
        pos = s.end
    out.append(text[pos:])
    return " ".join("".join(out).split())


# ------------------------------------------------------------------ instructions and their evidence


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    gives: re.Pattern[str]
    """A note sentence giving an instruction of this family."""
    said: re.Pattern[str]
    """What a clinician says when giving one."""


def _words(*alts: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(alts) + r")\b", re.I)


FAMILIES: tuple[Family, ...] = (
    Family(
        "return_precautions",
        re.compile(r"\b(?:return(?!\s+to\s+(?:work|school|sport|sports|play|duty|normal|full|activit\w*|exercis\w*|driving|running|the\s+gym))"
                   r"|come\s+back|seek\s+(?:medical\s+)?(?:care|attention|help|treatment)|go\s+to\s+the\s+(?:emergency|er|ed|hospital)"
                   r"|call\s+(?:the\s+)?(?:clinic|office|911|us|back|if))\b", re.I),
        _words(r"come\s+back", r"come\s+in", r"come\s+see", r"return\w*", r"call\w*", r"let\s+(?:me|us)\s+know",
               r"reach\s+out", r"contact", r"get\s+in\s+touch", r"emergency", r"a&e", "911", r"ring",
               r"phone", r"message", r"portal", r"seek", r"hospital", r"get\s+seen", r"back\s+in", r"follow\s*-?\s*up",
               r"worse\w*", r"urgent\w*"),
    ),
    Family(
        "follow_up",
        _words(r"follow\s*-?\s*up", r"re-?check", r"re-?evaluat\w*", r"re-?assess\w*", r"see\s+(?:the\s+patient|him|her|them)\s+(?:again|back)"),
        _words(r"follow\s*-?\s*up", r"see\s+you", r"see\s+him", r"see\s+her", r"come\s+back", r"back\s+in", r"check\s+in",
               r"check\s+back", r"re-?check\w*", r"appointment", r"next\s+(?:visit|time|week|month)", r"touch\s+base",
               r"re-?assess\w*", r"re-?evaluat\w*",
               r"in\s+(?:about\s+|another\s+)?(?:\d+|a|one|two|three|four|five|six|eight|twelve|(?:a\s+)?couple\s+of|(?:a\s+)?few)"
               r"\s+(?:days?|weeks?|months?)"),
    ),
    Family(
        "education",
        _words(r"educat\w*", r"counsel\w*", r"advised", r"instructed", r"informed", r"reassured"),
        _words(r"explain\w*", r"discuss\w*", r"talk\w*", r"told", r"tell", r"advis\w*", r"counsel\w*", r"educat\w*",
               r"instruct\w*", r"make\s+sure", r"important", r"information", r"leaflet", r"handout", r"warn\w*", r"avoid",
               r"should", r"need\s+to", r"want\s+you", r"like\s+you", r"try", r"recommend\w*", r"suggest\w*", r"reassur\w*",
               r"don't", r"do\s+not", r"keep", r"continue", r"stay", r"take", r"use", r"limit", r"stop", r"start"),
    ),
    Family(
        "monitoring",
        re.compile(r"\bmonitor\w*|\bkeep\s+(?:a\s+)?(?:track|log|diary|record)\b"
                   r"|\b(?:track|record|log)s?\s+(?:his|her|their|the|daily|blood|weight|symptoms?|sugars?|readings?)\b", re.I),
        _words(r"monitor\w*", r"record\w*", r"track\w*", r"logs?", r"logged", r"logging", r"diary", r"check\w*", r"weigh\w*", r"measur\w*",
               r"keep\s+an\s+eye", r"watch\w*", r"write\s+(?:it|them)?\s*down", r"readings?"),
    ),
    Family(
        "referral",
        _words(r"refer\w*"),
        _words(r"refer\w*", r"specialist", r"send\s+you", r"consult\w*", r"physical\s+therapy", r"therap\w*",
               r"surgeon", r"\w+ologist", r"\w+ology", r"clinic", r"see\s+(?:a|an|the)\s+\w+"),
    ),
    Family(
        "order",
        re.compile(r"^(?:order|obtain|schedule|draw|send|arrange)\b", re.I),
        _words(r"order\w*", r"get", r"getting", r"check\w*", r"schedul\w*", r"send", r"draw", r"repeat", r"do", r"run",
               r"test\w*", r"x-?rays?", r"mri", r"ct", r"cat\s+scan", r"scan\w*", r"ultrasound", r"blood", r"labs?",
               r"echo\w*", r"ekg", r"ecg", r"work\s*-?\s*up", r"biopsy", r"cultur\w*", r"swab", r"panel", r"arrange",
               r"prescri\w*", r"medications?", r"referral", r"sample", r"urine"),
    ),
)


def instruction_families(sentence: str) -> list[Family]:
    """The instruction families a note sentence gives ("advised to monitor": education and
    monitoring)."""
    return [f for f in FAMILIES if f.gives.search(sentence)]


def instruction_family(sentence: str) -> Family | None:
    """The first instruction family a note sentence gives, if any."""
    return next(iter(instruction_families(sentence)), None)


TIMED = frozenset({"follow_up", "return_precautions"})
"""Families whose interval ("in 2 weeks") must be the one said with the instruction."""
_TIME_UNITS = frozenset({"day", "week", "month", "year"})
_SETS_A_VISIT = _words(r"follow\s*-?\s*up", r"see\s+(?:you|him|her|them)", r"come\s+(?:back|in)", r"back\s+in",
                       r"check\s+(?:in|back)", r"re-?check\w*", r"appointment", r"next\s+visit", r"return\w*",
                       r"touch\s+base", r"re-?assess\w*", r"re-?evaluat\w*")
"""The words that set a visit (not a bare interval: "a two week supply" sets none)."""


_TODAYS_FOLLOW_UP = re.compile(
    r"\b(?:presents?|presenting|here|came\s+in|comes\s+in|in\s+today|seen\s+today|visit\s+today)"
    r"\s+(?:today\s+)?(?:for\s+)?(?:(?:an?|his|her|their|your)\s+)?(?:\w+\s+)?follow\s*-?\s*up\b", re.I)
"""Today's visit named as a follow-up ("presents today for follow-up of his chronic problems",
"here for a three-month follow-up"): it sets no visit to come (ACI dev D2N068's plan said
"Follow-up scheduled." on those words alone)."""


def unsupported_instruction(sentence: str, clinician_said: Iterable[str]) -> str | None:
    """What is wrong with the instructions ``sentence`` gives, judged on ``clinician_said`` (the
    clinician's words in the lines it cites; navigation commands and today's visit named as a
    follow-up are removed here): the name of
    a family it gives that those words never give ("advised to monitor …" gives education and
    monitoring: both must be there); ``<family>_interval`` when a follow-up's interval is not one
    said in a sentence that sets the visit (ACI dev D2N069: "Follow-up in 2 weeks" where the
    doctor said "come back in about a week" and, two lines on, "a two week supply" — the number
    check alone finds "2 weeks" said); None when it gives no instruction or nothing is wrong."""
    families = instruction_families(sentence)
    if not families:
        return None
    said = [_TODAYS_FOLLOW_UP.sub(" ", without_meta_commands(t)) for t in clinician_said]
    for fam in families:
        if not any(fam.said.search(t) for t in said):
            return fam.name
    for fam in families:
        if fam.name in TIMED:
            wanted = [q for q in find_quantities(sentence) if q.unit in _TIME_UNITS]
            giving = [u.text for t in said for u in split_sentences(t) if _SETS_A_VISIT.search(u.text)]
            heard = [e for u in giving for e in spoken_values(u)]
            if not all(any(supports(e, q) for e in heard) for q in wanted):
                return f"{fam.name}_interval"
            break  # one interval check per sentence
    return None


__all__ = [
    "FAMILIES",
    "WAKE_WORDS",
    "CommandSpan",
    "Family",
    "instruction_families",
    "instruction_family",
    "meta_commands",
    "unsupported_instruction",
    "without_meta_commands",
]
