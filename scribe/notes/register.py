"""Is a sentence note language? A pure check of register, for every writer's output.

A chart note is written in the third person, in statements, by someone who was not talking:
"Reports 3 days of cough. Denies fever." A transcript is not: it asks ("Have you taken anything
for the insomnia?"), says "I" and "you" ("Your lungs are nice and clear."), hesitates ("Um,
okay.") and answers in fragments that mean nothing without the question ("About six months
ago.", "Like a cramp."). ROUGE does not see the difference (it rewards verbatim overlap), so
``scribe eval notes`` reports the share of sentences that pass this check, and the ``llama``
writer drops a sentence of its own that fails it.

``register_issues(text)`` returns the reasons a sentence is not note language (empty when it
is):

* ``question`` — ends with "?", opens like one ("Have you…", "Do you…", "How long…"), or holds
  one after a comma ("Takes Norvasc at home, is it running high, or anything else.") or a
  "how about any …" ("… from the pollen, but how about any shortness of breath …");
* ``first_person`` / ``second_person`` — I, me, my, we, our… / you, your… outside quotation
  marks (a note may quote the patient: 'States "I can't sleep."');
* ``filler`` — a hesitation (um, uh, mm-hmm) anywhere, or a sentence made only of discourse
  markers ("Okay.", "Alright, so.", "Yeah, sure.");
* ``command`` — words for the recording device ("Finalize the note.", "Dax, …");
* ``notation`` — the facts list a model is shown, copied instead of a sentence ("Motrin 800 mg,
  new; 6 hours; 2 weeks.", "Pain present; edema present; numbness present.");
* ``fragment`` — a short sentence (≤ 7 words) opening like an answer that needs the previous
  turn ("Like a cramp.", "About six months ago.", "Pretty strong, nothing out of the
  ordinary."), or one with no clinical content (no drug, number with a unit, or
  symptom/finding) and fewer than two content words ("Okay then.", "That one."), or a drug
  name alone ("Miralax."), or a short sentence whose subject is a word pointing at the
  conversation ("That hurts.", "It is better now.").

Heuristic and deliberately conservative: short clinical sentences ("Denies fever.",
"Hypertension.", "Lungs clear.") pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .facts import findings_in, medications_in
from .numbers import find_quantities
from .text import FILLERS, STOPWORDS, tokenize

QUESTION = "question"
FIRST_PERSON = "first_person"
SECOND_PERSON = "second_person"
FILLER = "filler"
FRAGMENT = "fragment"
COMMAND = "command"
NOTATION = "notation"
REASONS = (QUESTION, FIRST_PERSON, SECOND_PERSON, FILLER, FRAGMENT, COMMAND, NOTATION)

_QUOTED = re.compile(r"[\"“][^\"”]*[\"”]")
_FIRST = frozenset({"i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves",
                    "i'm", "i've", "i'd", "i'll", "we're", "we've", "we'll", "we'd", "im", "ive"})
_SECOND = frozenset({"you", "your", "yours", "yourself", "yourselves", "you're", "you've", "you'll",
                     "you'd", "ya", "y'all"})
_QUESTION_OPEN = re.compile(
    r"^\W*(?:(?:do|does|did|have|has|had|are|is|was|were|can|could|would|will|should|shall|may)\s+"
    r"(?:you|i|we|they|he|she|it|there|your|anyone|anything)\b|"
    r"(?:how|what|when|where|why|which|who)\s+(?:long|much|many|often|about|is|are|was|were|do|does|did|"
    r"have|has|can|would|kind|type|brings)\b|any\s+\w+\s*$)",
    re.I,
)
_DISCOURSE = frozenset({"okay", "ok", "alright", "all", "right", "so", "well", "yeah", "yes", "yep", "no",
                        "nope", "sure", "great", "good", "fine", "thanks", "thank", "oh", "and", "but",
                        "then", "now", "let's", "see", "perfect", "cool", "got", "it", "wow", "mm", "hmm"})
_FRAGMENT_OPEN = re.compile(
    r"^\W*(?:like|about|around|maybe|probably|just|pretty|kind of|sort of|and|but|or|because|cause|so|"
    r"yeah|yes|not really|something|somewhere)\b",
    re.I,
)
"""Openings that continue someone else's sentence: an answer, not a statement."""
_COMMAND = re.compile(
    r"\b(?:finali[sz]e|sign|close|end|save|submit|start|stop)(?:s|d)?\s+(?:the\s+|this\s+)?(?:note|recording|dictation)\b|"
    r"^\W*(?:(?:hey|ok|okay)\W+)?(?:dragon|dax)\b",
    re.I,
)
"""Words addressed to the recording device ("Dax, finalize the note"), not about the patient."""
_INNER_QUESTION = re.compile(
    r",\s*(?:is|are|was|were|do|does|did|have|has|can|could|would|will)\s+(?:it|you|he|she|they|there|we)\b"
    r"|\b(?:how|what)\s+about\s+(?:any|your|other)\b", re.I)
"""A question after a comma, mid-sentence: "…, is it running high, or anything else"; one that
moves on to the next ("… from the pollen, but how about any shortness of breath, cough …":
ACI dev D2N071, session 14)."""
_POINTING = re.compile(r"^\W*(?:that|this|it|these|those)\s+(?:is|was|are|were|hurts?|feels?|does|did|'s|seems?)\b",
                       re.I)
"""A subject that points at the conversation ("That hurts."): it means nothing in a note."""
_STATUS_ITEM = re.compile(r",\s*(?:new|current|changed|stopped|unknown)\s*(?:;|\.?\s*$)", re.I)
_FINDING_ITEM = re.compile(r"\b(?:present|absent)\s*;", re.I)
"""The items of the facts under a transcript line ("lisinopril 20 mg daily, current; fever
absent"): a medicine with its status, findings "present"/"absent" one after another."""


def _clinical(text: str) -> bool:
    if medications_in(text):
        return True
    if any(q.unit and q.dimension != "clock" for q in find_quantities(text)):
        return True
    return any(not f.hypothetical for f in findings_in(text))


def register_issues(text: str) -> list[str]:
    """Why ``text`` is not note language (empty list: it is). Pure; see the module docstring."""
    text = text.strip()
    if not text:
        return [FRAGMENT]
    issues: list[str] = []
    unquoted = _QUOTED.sub(" ", text)
    words = [t.norm for t in tokenize(unquoted) if t.kind == "word"]
    if unquoted.rstrip().endswith("?") or _QUESTION_OPEN.match(unquoted) or _INNER_QUESTION.search(unquoted):
        issues.append(QUESTION)
    if _COMMAND.search(unquoted):
        issues.append(COMMAND)
    if any(w in _FIRST for w in words):
        issues.append(FIRST_PERSON)
    if any(w in _SECOND for w in words):
        issues.append(SECOND_PERSON)
    if any(w in FILLERS for w in words) or (words and all(w in _DISCOURSE or w in FILLERS for w in words)):
        issues.append(FILLER)
    if _STATUS_ITEM.search(unquoted) or len(_FINDING_ITEM.findall(unquoted)) >= 2:
        issues.append(NOTATION)
    all_words = [t.norm for t in tokenize(text) if t.kind == "word"]
    content = [w for w in all_words if w not in STOPWORDS and w not in _DISCOURSE and len(w) > 1]
    if FILLER not in issues and (
        (_FRAGMENT_OPEN.match(unquoted) and len(words) <= 7)
        or (len(content) < 2 and not _clinical(text))
        or (_POINTING.match(unquoted) and len(words) <= 5)
        or (len(content) == 1 and medications_in(text) and not find_quantities(text))
    ):
        issues.append(FRAGMENT)
    return issues


def is_note_language(text: str) -> bool:
    return not register_issues(text)


def register_clean_share(sentences: Iterable[str]) -> tuple[int, int]:
    """(clean, total) over the sentences."""
    clean = total = 0
    for s in sentences:
        total += 1
        clean += is_note_language(s)
    return clean, total


__all__ = ["REASONS", "is_note_language", "register_clean_share", "register_issues"]
