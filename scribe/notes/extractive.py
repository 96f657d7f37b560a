"""The extractive writer: a note made of what was said, no language model.

Each committed segment is split into utterances; each utterance is classified (section
classifier, see ``classifier.py``) and either dropped (small talk, back-channels, questions,
dictation-device commands) or cleaned up (fillers, stutters, tokenised contractions) and placed
in the template section its kind maps to, with the exact span of the segment as evidence.
Questions answered yes/no become one sentence with both turns as evidence ("Denies fever and
chills." for "any fever or chills?" / "no"). Medication changes go to the plan.

A dictation (one voice speaking the note's structure: "assessment and plan, number one, …") is
not reclassified: the drafter feeds every segment to a ``DictationDrafter`` as well, and while
its evidence says "dictation" the note is the dictated one, headings, numbered items and
wording kept (``dictation.py``). The classifier path keeps running, so the note is the
conversation's again the moment the evidence turns (a second voice, questions).

It runs incrementally: ``IncrementalDrafter.add(segment)`` does all the work for that segment
and returns the partial note, so ``finish()`` only assembles it and lists omissions; the note is
the same however the segments were batched (``draft(segments)`` is the one-shot form). Every
decision depends only on the segment, the one before it, and a running state (the classifier's
belief, sentences already written), which is what makes that hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping, Sequence

from ..models import Evidence, Note, Section, Segment, Sentence, Speaker, utcnow
from .classifier import DIVISIONS, SectionClassifier, features, load_classifier
from .dictation import DictationDrafter, FlagCache
from .facts import (
    Fact,
    MedStatus,
    answer_polarity,
    findings_in,
    is_question,
    medications_in,
    qa_findings,
    question_span,
    segment_facts,
)
from .guard import GuardContext, check_sentence, evidence_for, merge_flags, omissions
from .numbers import find_quantities
from .templates import Template, load_template
from .text import STOPWORDS, Span, clean_utterance, tokenize, utterances

WRITER_NAME = "extractive"
_WAKE = re.compile(r"^\W*(?:(?:hey|ok|okay|um|uh)\W+)*(?:dragon|dax)\b\W*", re.I)
# what a dictation device is asked to do; "order …" is kept (it is the plan)
_DEVICE_COMMAND = re.compile(r"^\W*(?:show me|pull up|open|finalize|go to|bring up|display|next)\b", re.I)
_MIN_CONTENT_WORDS = 3
_NOTE_DIVISIONS = tuple(d for d in DIVISIONS if d != "none")
_DIVISION_DEFAULT_TOPIC = {
    "subjective": "hpi",
    "objective_exam": "exam",
    "objective_results": "results",
    "assessment_and_plan": "plan",
}


COLLATERAL_PREFIX = "Per companion: "
"""Starts a sentence taken from a third voice (a relative, a carer, an interpreter)."""


def _content_topic(text: str, speaker: Speaker, division: str, topic: str) -> str:
    """What an utterance states can settle where it goes, whatever the classifier thought:
    medication changes are plan; a patient's own medicines are medication history; vital signs
    read out by the clinician are examination."""
    meds = medications_in(text)
    patient = speaker in (Speaker.patient, Speaker.other)
    if any(m.status in (MedStatus.new, MedStatus.changed, MedStatus.stopped) for m in meds) and not patient:
        return "plan"
    if meds and patient:
        return "medications"
    if meds and division == "assessment_and_plan" and any(m.status is not MedStatus.unknown for m in meds):
        return "plan"
    if not patient and _states_vitals(text):
        return "exam"
    return topic


def _states_vitals(text: str) -> bool:
    from .facts import FactKind, statement_facts  # local: only needed here

    probe = Segment(id="seg-00000", index=0, start=0.0, end=0.0, text=text)
    return any(f.kind is FactKind.vital for f in statement_facts(probe))


class UnsupportedLanguage(ValueError):
    """The extractive writer's lexicons and classifier are English only."""


_PLEASANTRY = re.compile(
    r"^(?:(?:good (?:morning|afternoon|evening|day)|hello|hi|hey|how are you(?: doing)?(?: today)?|"
    r"(?:it's )?nice to (?:meet|see) you|thank you(?: (?:so|very) much)?|thanks(?: a lot)?|bye|goodbye|"
    r"see you(?: soon| later)?|take care|have a (?:good|nice|great|lovely) (?:day|one|weekend)|welcome)"
    r"(?: (?:sir|madam|ma'am|doctor|doc|there|again|too|everyone|all))*[ ,.!?]*)+$"
)


def _small_talk(text: str) -> bool:
    """Only greetings and pleasantries ("Good morning sir.", "Thank you, bye."): nothing for a note."""
    return bool(_PLEASANTRY.match(" ".join(text.lower().replace("’", "'").split())))


def _content_words(text: str) -> int:
    return sum(1 for t in tokenize(text) if t.kind == "word" and t.norm not in STOPWORDS and len(t.norm) > 1)


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _clinical(text: str) -> bool:
    """Does the utterance state a drug, a number with a unit, or a (non-hypothetical) finding?"""
    if medications_in(text):
        return True
    if any(q.unit and q.dimension != "clock" for q in find_quantities(text)):
        return True
    return any(not f.hypothetical for f in findings_in(text))


@dataclass
class _Pending:
    segment: Segment
    span: Span
    division: str
    topic: str


def relabel(segments: Iterable[Segment], revisions: Mapping[str, Speaker]) -> list[Segment]:
    """``segments`` with the speakers ``revisions`` give (by segment id)."""
    return [s.model_copy(update={"speaker": revisions[s.id]}) if s.id in revisions else s for s in segments]


@dataclass
class DraftState:
    """What the drafter has written so far (the partial note is built from it)."""

    sentences: dict[str, list[Sentence]] = field(default_factory=dict)
    facts: list[Fact] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


class IncrementalDrafter:
    """Consumes segments as they are committed; ``finish()`` returns the note.

    ``add`` accepts segments in transcript order; a repeat of the last segment (same id and
    text, e.g. after a reconnect) is ignored; anything else out of order raises ``ValueError``.
    """

    def __init__(
        self,
        encounter_id: str = "",
        template: Template | str | None = None,
        *,
        classifier: SectionClassifier | None = None,
        language: str = "en",
        guard: bool = True,
        created_at: datetime | None = None,
        dictation: bool = True,
    ):
        if language and not language.lower().startswith("en"):
            raise UnsupportedLanguage(
                f"the extractive writer reads English only (transcript language {language!r}); "
                "every writer builds on it (the LM writers only rephrase its statements), so drafting "
                "needs an English transcript for now"
            )
        self.encounter_id = encounter_id
        self.template = load_template(template or "soap") if not isinstance(template, Template) else template
        self.classifier = classifier or load_classifier()
        self.guard = guard
        self.created_at = created_at
        self.state = DraftState(sentences={s.key: [] for s in self.template.sections})
        self._ctx = GuardContext()
        """The guard's view of the transcript, grown with each segment (never rebuilt)."""
        self._belief: dict[str, float] | None = None
        self._prev: Segment | None = None
        self._pending: _Pending | None = None
        self._counts: dict[str, int] = {}
        self._finished = False
        self.dictation: DictationDrafter | None = (
            DictationDrafter(encounter_id, self.template, created_at=created_at) if dictation else None
        )
        """The same segments parsed as a dictation; its note replaces the classified one while
        ``is_dictation`` (``dictation=False`` turns the route off)."""
        self._dictation_flags: FlagCache = {}
        self._language = language
        self._dictation_on = dictation

    # ------------------------------------------------------------------ public

    def fresh(self) -> IncrementalDrafter:
        """A new drafter with this one's template, classifier and options, and nothing read."""
        return IncrementalDrafter(self.encounter_id, self.template, classifier=self.classifier,
                                  language=self._language, guard=self.guard, created_at=self.created_at,
                                  dictation=self._dictation_on)

    def relabelled(self, revisions: Mapping[str, Speaker]) -> IncrementalDrafter:
        """This drafter as if every segment read so far had come with the speaker
        ``revisions`` give it (labels re-decided with hindsight after the drafter read them:
        whose medicine, question or answer, are decided from labels). Re-reads the segments:
        no model, a fraction of a second for a long visit."""
        out = self.fresh()
        out.extend(relabel(self.state.segments, revisions))
        return out

    def add(self, segment: Segment) -> Note:
        """Process one committed segment; returns the partial note."""
        self._accept(segment)
        return self.partial()

    def extend(self, segments: Iterable[Segment]) -> Note:
        for s in segments:
            self._accept(s)
        return self.partial()

    def partial(self) -> Note:
        if self.is_dictation:
            return self._dictated()
        return self._note(omitted=[])

    def finish(self) -> Note:
        """The note: sections in template order, every sentence with evidence, omissions listed."""
        self._finished = True
        self._pending = None
        note = self._dictated(final=True) if self.is_dictation else self._note(omitted=[])
        return note.model_copy(update={"omissions": omissions(note, self.state.facts)})

    @property
    def is_dictation(self) -> bool:
        """Is what has been heard so far a dictation (``dictation.DictationEvidence.verdict``)?"""
        return self.dictation is not None and self.dictation.is_dictation

    def _dictated(self, *, final: bool = False) -> Note:
        """The dictated note, guard-checked against the transcript so far: a partial re-checks
        only sentences that changed; the final one checks every sentence against all of it."""
        assert self.dictation is not None
        return self.dictation.note(self._ctx if self.guard else None, cache=None if final else self._dictation_flags)

    @property
    def facts(self) -> list[Fact]:
        return list(self.state.facts)

    # ------------------------------------------------------------------ internals

    def _note(self, omitted: list[str]) -> Note:
        sections = [
            Section(key=s.key, title=s.title, sentences=list(self.state.sentences[s.key]))
            for s in self.template.sections
        ]
        return Note(
            encounter_id=self.encounter_id,
            template=self.template.name,
            title=self.template.title,
            loinc=self.template.loinc,
            sections=sections,
            writer=WRITER_NAME,
            created_at=self.created_at or utcnow(),
            omissions=omitted,
        )

    def _accept(self, seg: Segment) -> None:
        if self._finished:
            raise ValueError("drafter already finished; start a new one")
        last = self.state.segments[-1] if self.state.segments else None
        if last is not None:
            if seg.id == last.id and seg.text == last.text:
                return
            if seg.index <= last.index:
                raise ValueError(f"segment {seg.id} arrived after {last.id}; segments must come in order")
        self.state.segments.append(seg)
        self._ctx.add_segment(seg)
        if self.dictation is not None:
            self.dictation.add(seg)
        if not seg.text.strip():
            return
        prev = self._prev
        found = segment_facts(seg, prev)
        self.state.facts.extend(found)
        self._ctx.add_facts(found)
        self._process(seg)
        self._prev = seg

    def _classify(self, text: str, speaker: str) -> tuple[str, str]:
        division, topic, self._belief = self.classifier.step(self._belief, text, speaker)
        return division, topic

    def _best_note_division(self, text: str, speaker: str) -> tuple[str, str]:
        """For an utterance the classifier called small talk but that states clinical facts."""
        belief = self._belief or {}
        division = max(_NOTE_DIVISIONS, key=lambda d: (belief.get(d, 0.0), -_NOTE_DIVISIONS.index(d)))
        return division, self.classifier.topic_of(division, features(text, speaker))

    def _process(self, seg: Segment) -> None:
        speaker = str(seg.speaker)
        units = utterances(seg.text)
        pending, self._pending = self._pending, None
        consumed_first = False
        if pending is not None and units:
            consumed_first = self._answer(pending, seg, units[0])
        q = (
            question_span(seg.text)
            if seg.speaker in (Speaker.clinician, Speaker.unknown, Speaker.other)
            else None
        )
        after_wake = False
        for k, u in enumerate(units):
            division, topic = self._classify(u.text, speaker)
            wake, after_wake = after_wake, False
            if k == 0 and consumed_first:
                continue
            if _WAKE.search(u.text):
                rest = _WAKE.sub("", u.text)
                if not rest.strip(" ,.?!"):
                    after_wake = True
                    continue
                if _DEVICE_COMMAND.search(rest):
                    continue
            elif wake and _DEVICE_COMMAND.search(u.text):
                continue
            if q is not None and u.end > q.start:
                # the trailing question waits for its answer (in the next segment)
                if self._pending is None:
                    self._pending = _Pending(seg, q, division, topic)
                continue
            self._statement(seg, u, division, topic)

    def _answer(self, pending: _Pending, seg: Segment, first: Span) -> bool:
        """Emit a sentence for a question and its answer; True if the answer's first utterance
        was used up by it."""
        qseg = pending.segment
        findings = qa_findings(qseg, seg)
        polarity = answer_polarity(first.text)
        if polarity is None:
            return False
        evidence = [
            evidence_for(qseg, pending.span.start, pending.span.end),
            evidence_for(seg, first.start, first.end),
        ]
        short_answer = _content_words(first.text) < 2 and not _clinical(first.text)
        if findings:
            names = [f.value for f in findings]
            text = ("Denies " if findings[0].negated else "Reports ") + _join(names) + "."
            category = "exam" if pending.division == "objective_exam" else "ros"
            self._emit(seg, text, evidence, category)
            if not short_answer:
                # the answer's detail ("a little when I climb stairs") goes right after it
                cleaned = clean_utterance(first.text)
                if _content_words(cleaned) >= 1 and not is_question(first.text):
                    self._emit(seg, cleaned, [evidence_for(seg, first.start, first.end)], category)
            return True
        if pending.division == "none" or _content_words(pending.span.text) < _MIN_CONTENT_WORDS:
            return short_answer
        if not short_answer:
            return False  # a real answer: it stands on its own as a statement
        text = clean_utterance(pending.span.text) + " " + clean_utterance(first.text)
        self._emit(seg, text, evidence, pending.topic)
        return True

    def _statement(self, seg: Segment, u: Span, division: str, topic: str) -> None:
        text = u.text
        if _WAKE.search(text):
            text = _WAKE.sub("", text)
            u = Span(u.end - len(text), u.end, text)
        if is_question(text) or not text.strip() or _small_talk(text):
            return
        clinical = _clinical(text)
        if _content_words(text) < _MIN_CONTENT_WORDS and not clinical:
            return
        if division == "none":
            if not clinical:
                return
            division, topic = self._best_note_division(text, str(seg.speaker))
        topic = _content_topic(text, seg.speaker, division, topic)
        cleaned = clean_utterance(text)
        if _content_words(cleaned) < 1 and not clinical:
            return
        self._emit(
            seg,
            cleaned,
            [evidence_for(seg, u.start, u.end)],
            topic or _DIVISION_DEFAULT_TOPIC.get(division, "hpi"),
        )

    def _emit(self, seg: Segment, text: str, evidence: list[Evidence], category: str) -> None:
        if seg.speaker is Speaker.other:
            # Collateral history: a reader of the note (not only of the evidence pane) must
            # see that someone other than the patient said it.
            text = COLLATERAL_PREFIX + text
        key = " ".join(t.norm for t in tokenize(text) if t.kind != "sym")
        if not key or key in self.state.seen:
            return
        self.state.seen.add(key)
        k = self._counts.get(seg.id, 0)
        self._counts[seg.id] = k + 1
        section = self.template.section_for(category)
        sentence = Sentence(id=f"{seg.id}.{k}", text=text, evidence=evidence)
        if self.guard:
            sec_model = Section(key=section.key, title=section.title)
            flags = check_sentence(sentence, self._ctx, sec_model)
            sentence = sentence.model_copy(update={"flags": merge_flags([], flags)})
        self.state.sentences[section.key].append(sentence)


def draft(
    segments: Sequence[Segment],
    *,
    encounter_id: str = "",
    template: Template | str | None = None,
    classifier: SectionClassifier | None = None,
    language: str = "en",
    guard: bool = True,
    created_at: datetime | None = None,
    dictation: bool = True,
) -> Note:
    """One-shot extractive note (the same note ``IncrementalDrafter`` gives segment by segment).

    An empty transcript gives a note with the template's sections and no sentences.
    """
    d = IncrementalDrafter(
        encounter_id,
        template,
        classifier=classifier,
        language=language,
        guard=guard,
        created_at=created_at,
        dictation=dictation,
    )
    d.extend(segments)
    return d.finish()


__all__ = ["DraftState", "IncrementalDrafter", "UnsupportedLanguage", "WRITER_NAME", "draft"]
