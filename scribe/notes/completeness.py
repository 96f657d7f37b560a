"""What the writer left out, written back as short note sentences built from the facts.

A small model summarises by leaving things out: the llama writer's notes stated ~60 % of the
reference notes' facts where the extractive draft states ~80 % (docs/benchmarks.md). The
extractive draft's own statement of an omitted fact is usually not note language ("Have you
had any fever?" / "No."), so it cannot simply be put back. The fact itself can: it was
extracted from what was said, with its segments, its negation resolved across the question and
its answer, a medicine's status read from cue words. This module writes the omitted facts as
the lines a clinician writes for them ("Denies fever and chills.", "Current medications include
lisinopril 20 mg daily.", "Blood pressure 142/90."), each citing the segments of its facts, in
the section the template gives that kind of fact. The guard then checks them like any sentence.

What is *not* written: a medicine only asked about (status unknown: "are you taking
lisinopril?" with no answer), or given as current only in the clinician's words ("taking some
paracetamol … can also help" is advice, not a home medicine); a symptom the clinician named outside the examination and outside
a question the patient answered (it may be a question without its "?", or a hypothesis); a
problem or diagnosis (the findings lexicon's "problems and diagnoses": "atrial fibrillation" is
history or assessment, and "Reports atrial fibrillation" or "Examination shows sprain" would be
wrong lines); bare "pain" (without its site it says nothing, and "Reports pain" beside "Denies
pain" reads as a contradiction when they were two sites); and a fact some kept sentence already
states. Pure: facts, segments and sentences in, sentences out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..models import Evidence, Note, Segment, Sentence, Speaker
from .facts import Fact, FactKind, MedStatus, dedupe_facts, reported_and_denied
from .guard import OMISSION_KINDS, covers
from .resources import finding_groups
from .templates import Template

MAX_ITEMS = 6
ID_MARK = "fact"
"""A line written here has the id ``<section>.fact<n>`` (``is_fact_sentence``)."""
"""Facts per sentence: a longer list is split (a reader scans six, not fifteen)."""
OBSERVED = ("exam", "results")
NOT_WRITTEN_GROUPS = frozenset({"problems and diagnoses", "generic pain (matched only when no more specific finding fits)"})
"""Findings-lexicon groups never written as a completeness line (see the module docstring)."""
SYMPTOMS_ONLY = frozenset({"psychiatric and sleep"})
"""Groups reported by the patient, never written as an examination finding."""
STATUS_ORDER = (MedStatus.changed, MedStatus.stopped, MedStatus.new, MedStatus.current)
"""One line per medicine: a change of it is what the note must say; "current" only otherwise."""


@dataclass(frozen=True)
class _Line:
    """One kind of line in one section: ("subjective", "denies") → "Denies a, b and c."."""

    section: str
    kind: str


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _changed(f: Fact) -> str:
    """ "lasix to 80 mg daily" (the new dose; the previous one when it was said: "from 40 mg")."""
    name = f.name or f.value
    if f.quantity is None:
        return name
    dose = " ".join(x for x in (f.quantity.normalized(), f.frequency) if x)
    was = f" from {f.previous_dose.normalized()}" if f.previous_dose is not None else ""
    return f"{name}{was} to {dose}"


def _line_of(f: Fact, observed: bool, template: Template) -> _Line | None:
    """Which section and which kind of line a fact goes to, or None when it is not written.
    ``observed``: the extractive draft placed the fact's segment under examination or results."""
    if f.kind is FactKind.medication:
        if f.status in (None, MedStatus.unknown):
            return None  # asked about, or mentioned without saying whether it is taken
        if f.status is MedStatus.current:
            if f.speaker != str(Speaker.patient) and f.via != "question-answer":
                return None  # the clinician saying "taking paracetamol … can help" is advice, not a home medicine
            return _Line(template.section_for("medications").key, "current")
        return _Line(template.section_for("plan").key, str(f.status))
    if f.kind in (FactKind.vital, FactKind.lab) and f.quantity is not None and f.quantity.dimension == "time":
        return None  # "A1c about six months" is when, not a value
    if f.kind is FactKind.vital:
        return _Line(template.section_for("exam").key, "vital")
    if f.kind is FactKind.lab:
        return _Line(template.section_for("results").key, "lab")
    if f.kind is FactKind.finding:
        group = finding_groups().get(f.name or f.value, "")
        if group in NOT_WRITTEN_GROUPS:
            return None
        if f.via == "question-answer" or f.speaker == str(Speaker.patient):
            where = template.section_for("ros" if f.negated else "hpi").key
            return _Line(where, "denies" if f.negated else "reports")
        if f.speaker == str(Speaker.clinician) and observed and group not in SYMPTOMS_ONLY:
            return _Line(template.section_for("exam").key, "exam-absent" if f.negated else "exam-present")
    return None


_LINES: dict[str, tuple[str, Callable[[Fact], str]]] = {
    "reports": ("Reports {}.", lambda f: f.value),
    "denies": ("Denies {}.", lambda f: f.value),
    "exam-present": ("Examination shows {}.", lambda f: f.value),
    "exam-absent": ("No {} on examination.", lambda f: f.value),
    "current": ("Current medications include {}.", lambda f: f.value),
    "new": ("Start {}.", lambda f: f.value),
    "stopped": ("Stop {}.", lambda f: f.name or f.value),
    "changed": ("Change {}.", _changed),
}
"""Each kind of line: its sentence, and how one fact is said in its list."""


def _render(kind: str, facts: Sequence[Fact]) -> str:
    if kind in _LINES:
        sentence, item = _LINES[kind]
        return sentence.format(_join([item(f) for f in facts]))
    # vitals and labs: "Blood pressure 142/90, heart rate 88."
    return _capital(", ".join(f.value for f in facts)) + "."


def _evidence(facts: Sequence[Fact], by_id: dict[str, Segment]) -> list[Evidence]:
    out, seen = [], set()
    for f in facts:
        for sid in f.segment_ids:
            seg = by_id.get(sid)
            if seg is not None and sid not in seen:
                seen.add(sid)
                out.append(Evidence(segment_id=sid, start=seg.start, end=seg.end, quote=seg.text))
    return out


def _one_per_medicine(facts: Sequence[Fact]) -> list[Fact]:
    """Facts with each medicine once: its most telling status (``STATUS_ORDER``), with a dose
    where one was said; other facts as they are."""
    best: dict[str, Fact] = {}

    def rank(f: Fact) -> tuple[int, int]:
        status = STATUS_ORDER.index(f.status) if f.status in STATUS_ORDER else len(STATUS_ORDER)
        return status, 0 if f.quantity is not None else 1

    for f in facts:
        if f.kind is FactKind.medication and f.status in STATUS_ORDER:
            key = f.generic or f.value
            if key not in best or rank(f) < rank(best[key]):
                best[key] = f
    return [f for f in facts if f.kind is not FactKind.medication or best.get(f.generic or f.value) is f]


def fact_sentences(kept: dict[str, list[Sentence]], drafted: Note, facts: Sequence[Fact],
                   segments: Sequence[Segment], template: Template) -> dict[str, list[Sentence]]:
    """Sentences for the facts no kept sentence states, by section key (only sections in
    ``kept``). ``drafted``: the extractive draft, whose classifier says where a segment's
    content was placed (an examination finding is written only where it placed it under the
    examination or results)."""
    have = [x for v in kept.values() for x in v]
    by_id = {s.id: s for s in segments}
    observed_keys = {template.section_for(c).key for c in OBSERVED}
    section_of: dict[str, str] = {}
    for sec in drafted.sections:
        for x in sec.sentences:
            for e in x.evidence:
                section_of.setdefault(e.segment_id, sec.key)
    groups: dict[_Line, list[Fact]] = {}
    candidates = [x for x in dedupe_facts(x for x in facts if x.kind in OMISSION_KINDS) if not covers(x, have)]
    both = reported_and_denied(facts)
    for f in _one_per_medicine(candidates):
        if f.kind is FactKind.finding and f.name in both:
            continue  # reported and denied (two sites, two times, or a misheard answer): the writer's call
        line = _line_of(f, any(section_of.get(i) in observed_keys for i in f.segment_ids), template)
        if line is None or line.section not in kept:
            continue
        same = groups.setdefault(line, [])
        if all(g.value != f.value for g in same):
            same.append(f)
    out: dict[str, list[Sentence]] = {}
    for line, items in groups.items():
        for k in range(0, len(items), MAX_ITEMS):
            chunk = items[k:k + MAX_ITEMS]
            n = len(kept[line.section]) + len(out.get(line.section, []))
            out.setdefault(line.section, []).append(Sentence(
                id=f"{line.section}.{ID_MARK}{n}", text=_render(line.kind, chunk), evidence=_evidence(chunk, by_id)))
    return out


def is_fact_sentence(sentence: Sentence) -> bool:
    """Written here (not by a writer)."""
    return sentence.id.rpartition(".")[2].startswith(ID_MARK)


def without_fact_lines(note: Note) -> Note:
    """``note`` without the lines written here: ``scribe eval notes`` scores both, so what the
    lines add is measured on the same model output in the same run."""
    sections = [sec.model_copy(update={"sentences": [x for x in sec.sentences if not is_fact_sentence(x)]})
                for sec in note.sections]
    return note.model_copy(update={"sections": sections})


__all__ = ["fact_sentences", "is_fact_sentence", "without_fact_lines"]
