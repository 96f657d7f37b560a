"""Who a sentence is about, when it is not the patient: the family members a note names. Pure.

Why: a small model asked for a "family and social history" fills it. On ACI-Bench dev
D2N071 (a visit where no parent was ever mentioned) the H&P template's section came back as
"Ralph's father has been diagnosed with depression and has had a prior lobectomy." and
"Ralph's mother has been diagnosed with hypertension.": the patient's own history given to
relatives, every word but the relative in the cited lines, so no other check saw it. The guard
asks that a relative a sentence names is named in what it cites (``guard._check_relatives``).

Kinship words are grouped by what may stand for what: "mom" is the mother, "parents" covers
either parent, "kids" a son or a daughter, "siblings" a brother or a sister, a "partner" or
"spouse" a wife or a husband. Family words that name a practice, not a person ("family doctor",
"family medicine") are not kin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_WORDS: dict[str, tuple[str, ...]] = {
    "mother": ("mother", "mothers", "mom", "moms", "mum", "mums", "mommy", "mama"),
    "father": ("father", "fathers", "dad", "dads", "daddy", "papa"),
    "parent": ("parent", "parents"),
    "brother": ("brother", "brothers"),
    "sister": ("sister", "sisters"),
    "sibling": ("sibling", "siblings"),
    "son": ("son", "sons"),
    "daughter": ("daughter", "daughters"),
    "child": ("child", "children", "kid", "kids"),
    "grandmother": ("grandmother", "grandmothers", "grandma", "granny", "nana"),
    "grandfather": ("grandfather", "grandfathers", "grandpa", "granddad", "grandad"),
    "grandparent": ("grandparent", "grandparents"),
    "aunt": ("aunt", "aunts", "auntie"),
    "uncle": ("uncle", "uncles"),
    "cousin": ("cousin", "cousins"),
    "niece": ("niece", "nieces"),
    "nephew": ("nephew", "nephews"),
    "wife": ("wife",),
    "husband": ("husband",),
    "spouse": ("spouse", "partner"),
    "family": ("family", "families", "relative", "relatives"),
}
_KIN_OF = {w: kin for kin, words in _WORDS.items() for w in words}

_STANDS_FOR: dict[str, frozenset[str]] = {
    "mother": frozenset({"mother", "parent"}),
    "father": frozenset({"father", "parent"}),
    "parent": frozenset({"mother", "father", "parent"}),
    "brother": frozenset({"brother", "sibling"}),
    "sister": frozenset({"sister", "sibling"}),
    "sibling": frozenset({"brother", "sister", "sibling"}),
    "son": frozenset({"son", "child"}),
    "daughter": frozenset({"daughter", "child"}),
    "child": frozenset({"son", "daughter", "child"}),
    "grandmother": frozenset({"grandmother", "grandparent"}),
    "grandfather": frozenset({"grandfather", "grandparent"}),
    "grandparent": frozenset({"grandmother", "grandfather", "grandparent"}),
    "wife": frozenset({"wife", "spouse"}),
    "husband": frozenset({"husband", "spouse"}),
    "spouse": frozenset({"wife", "husband", "spouse"}),
}
"""For each kin word in a sentence, the kin words of the cited lines that support it; "family"
(and any kin not listed: aunt, cousin …) is supported by itself, and "family" by any kin word."""

_WORD_RE = re.compile(r"\b(" + "|".join(sorted(_KIN_OF, key=len, reverse=True)) + r")\b", re.I)
_PRACTICE = re.compile(
    r"\s+(?:doctor|doctors|physician|physicians|practitioner|practice|medicine|clinic|planning|"
    r"nurse|provider|np|gp)\b", re.I)
"""After "family": a kind of care, not a person ("family doctor", "family medicine")."""
_THE_PATIENT_AS = re.compile(r"\s+of\s+(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|a|an)\b", re.I)
"""After "mother"/"father": the patient described ("a mother of two", "father of three")."""


@dataclass(frozen=True)
class KinMention:
    kin: str
    """The group ("mother" for "mom")."""
    surface: str
    start: int
    end: int


def kin_in(text: str) -> list[KinMention]:
    """The family members ``text`` names, in order (not "family doctor", not "a mother of two")."""
    out = []
    for m in _WORD_RE.finditer(text):
        kin = _KIN_OF[m.group(1).lower()]
        rest = text[m.end():]
        if kin == "family" and _PRACTICE.match(rest):
            continue
        if kin in ("mother", "father", "parent") and _THE_PATIENT_AS.match(rest):
            continue
        out.append(KinMention(kin, m.group(1), m.start(), m.end()))
    return out


_REPORTS = re.compile(
    r"^\s*(?:reports?|reported|states?|stated|says|said|notes?|noted|denies|denied|describes?|"
    r"brings?|brought|is\s+concerned|was\s+concerned|adds?|confirms?|explains?)\b", re.I)
_PER = re.compile(r"\b(?:per|according\s+to)\s+(?:the\s+)?(?:patient's\s+)?$", re.I)


def reports(mention: KinMention, text: str) -> bool:
    """Whether the family member is who tells the story, not whom it is about ("Mother reports
    a fever for 3 days.", "Per mom, …"): a relative who came with the patient and spoke."""
    return bool(_REPORTS.match(text[mention.end:]) or _PER.search(text[:mention.start]))


def supported_by(kin: str, named: set[str]) -> bool:
    """Whether a sentence's ``kin`` is supported by the kin groups ``named`` in its cited lines."""
    if kin == "family":
        return bool(named)
    return bool(_STANDS_FOR.get(kin, frozenset({kin})) & named)


def unnamed_kin(text: str, cited: Iterable[str], visit: Iterable[str] | None = None) -> KinMention | None:
    """The first family member ``text`` names that none of the ``cited`` texts names (None: every
    one is named, or it names none). One who reports for the patient ("Mother reports …") needs
    naming somewhere in the ``visit`` only: who was in the room is said once, not in every line
    they speak (read only for such a one)."""
    mentions = kin_in(text)
    if not mentions:
        return None
    named = {k.kin for t in cited for k in kin_in(t)}
    in_visit: set[str] | None = None
    for k in mentions:
        if supported_by(k.kin, named):
            continue
        if visit is not None and reports(k, text):
            if in_visit is None:
                in_visit = {x.kin for t in visit for x in kin_in(t)}
            if supported_by(k.kin, in_visit):
                continue
        return k
    return None


__all__ = ["KinMention", "kin_in", "reports", "supported_by", "unnamed_kin"]
