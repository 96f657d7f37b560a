"""The evidence guard: nothing reaches the chart unsupported without a flag.

``check_note(note, segments)`` returns the note with ``Flag``s on sentences whose claims the
transcript does not back, and ``Note.omissions`` listing transcript facts no sentence covers:

* ``no_evidence`` — no evidence, a cited segment that does not exist, or a quote that is not in
  the segment's text;
* ``unsupported_number`` — a number (with its unit), ratio, range or dosing frequency that the
  cited evidence does not state ("BP 130/80" when nothing was measured aloud; "follow up in
  2 weeks" when no interval was said), or states only as another drug's dose or frequency
  ("brace for 6 hours a day" citing "ultram every six hours"). Spoken and written forms compare
  equal ("twenty milligrams" = "20 mg", "one twenty over eighty" = "120/80");
* ``unsupported_drug`` — a drug name (brand or generic) the evidence does not name;
* ``dose_status`` — a medication written as current that the transcript starts or changes
  ("increase your lasix to 80 mg" → "Current medications: Lasix 80 mg"), or the reverse;
* ``negation_mismatch`` — "denies chest pain" when the patient reported it (question–answer
  pairs resolved: "do you have any chest pain?" / "slight cramps"), "reports fever" when the
  patient said no, or a "denies X" for something never discussed;
* ``section_placement`` — a medication being started or changed written outside the plan;
* ``low_confidence_word`` — a drug name or number supported only by a word the recogniser was
  unsure of (hotword biasing can put a drug name where none was said);
* ``unsupported_relative`` — a family member the cited lines never name ("Father has been
  diagnosed with depression." citing the patient's own depression); one who reports for the
  patient ("Mother reports …") needs naming somewhere in the visit (``relatives.py``);
* ``degenerate_output`` — repetition/looping, a duplicated sentence, prompt echo, URLs.

``link_evidence(text, segments)`` aligns a sentence to transcript spans lexically (content
words, with numbers and drug names as anchors) and returns ``Evidence`` whose quotes are exact
substrings of the segment text. All functions are pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from ..models import LOW_CONFIDENCE_WORD, Evidence, Flag, FlagKind, Note, Section, Segment, Sentence, Word
from .facts import (
    Fact,
    FactKind,
    FindingMention,
    MedMention,
    MedStatus,
    dedupe_facts,
    extract_facts,
    findings_in,
    medications_in,
    question_span,
)
from .numbers import Quantity, find_frequency, find_quantities, supports
from .relatives import kin_in, unnamed_kin
from .resources import drug_lexicon
from .text import clean_utterance, content_stems, tokenize, utterances

CITATION_RE = re.compile(r"\s*\[(?:seg-\d+(?:\s*[,;]\s*)?)+\]|\bseg-\d{3,}\b")
URL_RE = re.compile(r"https?://|\bwww\.|\b[\w-]+\.(?:com|org|net|io|gov|edu|ai)\b", re.I)
ECHO_MARKERS = (
    "as an ai", "language model", "here is the note", "here's the note", "here is the soap",
    "here is a soap", "here's a soap", "transcript facts", "cite the segment", "segment ids",
    "<|", "|>", "```", "###", "<think", "assistant:", "user:", "system:", "instructions:",
)  # fmt: skip
_ECHO_RE = re.compile(
    "|".join(
        (r"(?<!\w)" if m[0].isalnum() else "") + re.escape(m) + (r"(?!\w)" if m[-1].isalnum() else "")
        for m in ECHO_MARKERS
    ),
    re.I,
)
GUARD_KINDS = frozenset(
    {
        FlagKind.no_evidence,
        FlagKind.unsupported_number,
        FlagKind.unsupported_drug,
        FlagKind.dose_status,
        FlagKind.negation_mismatch,
        FlagKind.section_placement,
        FlagKind.low_confidence_word,
        FlagKind.degenerate_output,
        FlagKind.unsupported_relative,
    }
)
LOW_CONFIDENCE = LOW_CONFIDENCE_WORD
"""Recogniser word probability below which a supporting drug name or number is flagged (the
measured default, shared with the review app's word marks)."""

_CURRENT_SECTIONS = ("medication", "subjective", "interval", "background", "history", "hpi", "pmh")
_PLAN_SECTIONS = ("plan", "recommend")


def strip_citations(text: str) -> str:
    """Sentence text without inline ``[seg-00012]`` citations (so ids are not read as numbers)."""
    return CITATION_RE.sub("", text).strip()


# ------------------------------------------------------------------ evidence linking


@dataclass(frozen=True)
class _Unit:
    seg: Segment
    start: int
    end: int
    text: str
    stems: frozenset[str]
    values: tuple[Quantity, ...]
    drugs: frozenset[str]


def _drug_generics(text: str) -> set[str]:
    lex = drug_lexicon()
    return {lex.generic_of(m.canonical) for m in lex.find(tokenize(text))}


def _units(segments: Sequence[Segment]) -> list[_Unit]:
    out = []
    for seg in segments:
        for sp in utterances(seg.text):
            out.append(
                _Unit(
                    seg,
                    sp.start,
                    sp.end,
                    sp.text,
                    frozenset(content_stems(sp.text)),
                    tuple(spoken_values(sp.text)),
                    frozenset(
                        _drug_generics(sp.text) | {"finding:" + f.canonical for f in findings_in(sp.text)}
                    ),
                )
            )
    return out


def _times(seg: Segment, start: int, end: int) -> tuple[float, float]:
    """Encounter times of seg.text[start:end]: from word timings when they align, else by
    proportion of characters."""
    if seg.words:
        pos = 0
        spans: list[tuple[int, int, Word]] = []
        low = seg.text.lower()
        for w in seg.words:
            token = w.text.strip().lower()
            if not token:
                continue
            k = low.find(token, pos)
            if k < 0:
                spans = []
                break
            spans.append((k, k + len(token), w))
            pos = k + len(token)
        inside = [w for a, b, w in spans if b > start and a < end]
        if inside:
            return inside[0].start, inside[-1].end
    n = max(1, len(seg.text))
    dur = seg.end - seg.start
    return seg.start + dur * start / n, seg.start + dur * end / n


def evidence_for(seg: Segment, start: int | None = None, end: int | None = None) -> Evidence:
    """Evidence quoting ``seg.text[start:end]`` (the whole segment by default)."""
    a = 0 if start is None else start
    b = len(seg.text) if end is None else end
    t0, t1 = _times(seg, a, b)
    return Evidence(segment_id=seg.id, start=t0, end=t1, quote=seg.text[a:b])


def link_evidence(
    sentence_text: str,
    segments: Sequence[Segment],
    *,
    max_spans: int = 3,
    min_score: float = 0.34,
) -> list[Evidence]:
    """Transcript spans that support ``sentence_text``, in transcript order.

    A greedy cover: the sentence's content words weigh 1 each, its numbers and drug names 3
    each (a number is covered by a span that states the same value, "twenty" = "20"). Spans
    (utterances of segments) are added while each adds at least a sixth of the sentence's
    weight (and at least 2), up to ``max_spans``; if the spans then cover less than ``min_score`` of the weight,
    nothing is returned. Quotes are exact substrings of the segment text.
    """
    text = strip_citations(sentence_text)
    s_stems = set(content_stems(text))
    s_vals = find_quantities(text)
    # drugs (by generic) and findings (by canonical name) are anchors: "Lasix" = "furosemide",
    # "lightheadedness" = "lightheaded"
    s_drugs = _drug_generics(text) | {"finding:" + f.canonical for f in findings_in(text)}
    num_stems = {t.stem for q in s_vals for t in tokenize(q.text)}
    s_stems -= num_stems  # numbers count through their anchors, not their spelling
    total = len(s_stems) + 3 * (len(s_vals) + len(s_drugs))
    if total == 0 or not segments:
        return []
    units = _units(segments)

    def covered(u: _Unit) -> tuple[frozenset[str], frozenset[int], frozenset[str]]:
        vals = frozenset(i for i, q in enumerate(s_vals) if any(supports(e, q) for e in u.values))
        return frozenset(s_stems & u.stems), vals, frozenset(s_drugs & u.drugs)

    cover = {id(u): covered(u) for u in units}
    have_stems: set[str] = set()
    have_vals: set[int] = set()
    have_drugs: set[str] = set()
    chosen: list[_Unit] = []
    for _ in range(max_spans):
        best = None
        for u in units:
            if u in chosen:
                continue
            st, va, dr = cover[id(u)]
            gain = len(st - have_stems) + 3 * len(va - have_vals) + 3 * len(dr - have_drugs)
            if gain and (best is None or gain > best[0]):
                best = (gain, u)
        if best is None or (chosen and best[0] < max(2.0, total / 6)):
            break
        chosen.append(best[1])
        st, va, dr = cover[id(best[1])]
        have_stems |= st
        have_vals |= va
        have_drugs |= dr
    score = (len(have_stems) + 3 * (len(have_vals) + len(have_drugs))) / total
    if not chosen or score < min_score:
        return []
    chosen.sort(key=lambda u: (u.seg.index, u.start))
    return [evidence_for(u.seg, u.start, u.end) for u in chosen]


# ------------------------------------------------------------------ context


@dataclass
class GuardContext:
    """What the guard needs from the transcript: built once per note and, while a visit is
    drafted segment by segment, grown in place (``add_segment``/``add_facts``), so checking a
    sentence costs the same in minute 30 as in minute 1. Facts are indexed by kind and name and
    segments by position for the same reason."""

    segments: dict[str, Segment] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    instructions: str = ""
    _position: dict[str, int] = field(default_factory=dict, repr=False)
    _medications: list[Fact] = field(default_factory=list, repr=False)
    _findings: dict[str | None, list[Fact]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.segments, self.order, facts = dict(self.segments), list(self.order), list(self.facts)
        self._position = {sid: i for i, sid in enumerate(self.order)}
        self.facts = []
        self.add_facts(facts)

    @staticmethod
    def build(
        segments: Sequence[Segment], facts: Sequence[Fact] | None = None, instructions: str = ""
    ) -> "GuardContext":
        segs = list(segments)
        return GuardContext(
            segments={s.id: s for s in segs},
            order=[s.id for s in segs],
            facts=list(facts if facts is not None else extract_facts(segs)),
            instructions=instructions,
        )

    def add_segment(self, segment: Segment) -> None:
        if segment.id not in self._position:
            self._position[segment.id] = len(self.order)
            self.order.append(segment.id)
        self.segments[segment.id] = segment

    def add_facts(self, facts: Iterable[Fact]) -> None:
        for f in facts:
            self.facts.append(f)
            if f.kind is FactKind.medication:
                self._medications.append(f)
            elif f.kind is FactKind.finding:
                self._findings.setdefault(f.name, []).append(f)

    def position(self, segment_id: str) -> int:
        """Where a segment is in the transcript (0 for one the context does not hold)."""
        return self._position.get(segment_id, 0)

    def medications(self) -> list[Fact]:
        return self._medications

    def findings(self, name: str) -> list[Fact]:
        return self._findings.get(name, [])

    def where(self, pred: Callable[[str], object]) -> list[str]:
        return [sid for sid in self.order if pred(self.segments[sid].text)]


def _fmt_ids(ids: Iterable[str]) -> str:
    ids = list(ids)
    return ", ".join(ids[:3]) + (" …" if len(ids) > 3 else "")


# ------------------------------------------------------------------ sentence checks


def _flag(kind: FlagKind, message: str, span: str | None = None) -> Flag:
    return Flag(kind=kind, message=message, span=span)


def _check_evidence(sentence: Sentence, ctx: GuardContext) -> tuple[list[Flag], list[Segment]]:
    flags: list[Flag] = []
    cited: list[Segment] = []
    if not sentence.evidence:
        return [_flag(FlagKind.no_evidence, "This sentence has no transcript evidence.")], []
    for ev in sentence.evidence:
        seg = ctx.segments.get(ev.segment_id)
        if seg is None:
            flags.append(
                _flag(
                    FlagKind.no_evidence,
                    f"Cites {ev.segment_id}, which is not in the transcript.",
                    ev.segment_id,
                )
            )
            continue
        if ev.quote and ev.quote not in seg.text:
            flags.append(_flag(FlagKind.no_evidence, f"The quoted words are not in {seg.id}.", ev.quote[:80]))
        if seg not in cited:
            cited.append(seg)
    return flags, cited


def spoken_values(text: str) -> list[Quantity]:
    """Numbers in transcript text, read both as said and with stutters/fillers removed
    ("a hundred and forty over over seventy" also gives 140/70)."""
    raw = find_quantities(text)
    cleaned = find_quantities(clean_utterance(text))
    return raw + [q for q in cleaned if not any(supports(r, q) and supports(q, r) for r in raw)]


_A_DRUG = re.compile(r"\b(?:medications?|medicines?|meds|pills?|tablets?|capsules?|drugs?|doses?|prescriptions?)\b", re.I)
"""A sentence's words for a drug it does not name."""


def _said_of(text: str) -> list[tuple[Quantity, MedMention | None]]:
    """Each number in transcript text (as said and with stutters removed, like
    ``spoken_values``) with the drug it is said of: the generic whose dose or dosing frequency
    it is ("fifty milligrams of ultram every six hours": both numbers are Ultram's), else None."""
    out: list[tuple[Quantity, MedMention | None]] = []
    for version in dict.fromkeys((text, clean_utterance(text))):
        meds = medications_in(version)
        for q in find_quantities(version):
            drug = next((m for m in meds
                         if q in (m.dose, m.previous_dose) or (m.start <= q.start and q.end <= m.end)), None)
            out.append((q, drug))
    return out


def _said_of_another_drug(stating: list[tuple[Segment, MedMention | None]], text: str) -> tuple[Segment, MedMention] | None:
    """Where a number of ``text`` is stated in the cited segments (``stating``: each segment and
    drug it is said there of, from ``_said_of``) only as another drug's dose or frequency than
    any the sentence names: (a segment saying it, that drug). ACI dev D2N077's "Wear the brace
    for 6 hours a day." cites "fifty milligrams of ultram every six hours" (the brace was for six
    weeks): the number is in the evidence, said of something else. A sentence naming no drug is
    excused only when it speaks of one ("Take the pain medication every 6 hours."); "Take it
    every 6 hours." needs the drug's name to be a plan."""
    named = _drug_generics(text)
    if not named and _A_DRUG.search(text):
        return None
    bound: tuple[Segment, MedMention] | None = None
    for seg, drug in stating:
        if drug is None or drug.generic in named:
            return None
        bound = bound or (seg, drug)
    return bound


def _check_numbers(text: str, cited: list[Segment], ctx: GuardContext) -> list[Flag]:
    flags = []
    ev_vals = [q for s in cited for q in spoken_values(s.text)]
    quantities = find_quantities(text)
    # the cited segments' numbers with the drug each is said of, once for all of the sentence's
    said = [(seg, e, drug) for seg in cited for e, drug in _said_of(seg.text)] if quantities else []
    for q in quantities:
        if any(supports(e, q) for e in ev_vals):
            other = _said_of_another_drug([(seg, drug) for seg, e, drug in said if supports(e, q)], text)
            if other is not None:
                seg, drug = other
                flags.append(_flag(FlagKind.unsupported_number,
                                   f"“{q.text}” is said of {drug.name} in {seg.id}, not of what this sentence says it of.",
                                   q.text))
            continue
        elsewhere = ctx.where(lambda t: any(supports(e, q) for e in spoken_values(t)))
        where = (
            f" It is said in {_fmt_ids(elsewhere)}, which the sentence does not cite."
            if elsewhere
            else " Nothing in the transcript states it."
        )
        flags.append(
            _flag(FlagKind.unsupported_number, f"“{q.text}” is not in the cited evidence.{where}", q.text)
        )
    return flags


def _check_drugs(text: str, cited: list[Segment], ctx: GuardContext) -> list[Flag]:
    flags = []
    lex = drug_lexicon()
    ev_drugs = {d for s in cited for d in _drug_generics(s.text)}
    ev_names = {m.canonical for s in cited for m in lex.find(tokenize(s.text))}
    for m in lex.find(tokenize(text)):
        g = lex.generic_of(m.canonical)
        if g in ev_drugs or m.canonical in ev_names:
            continue
        surface = text[m.char_start : m.char_end]
        elsewhere = ctx.where(lambda t: g in _drug_generics(t))
        where = (
            f" It is named in {_fmt_ids(elsewhere)}, which the sentence does not cite."
            if elsewhere
            else " The transcript never names it."
        )
        flags.append(
            _flag(
                FlagKind.unsupported_drug, f"“{surface}” is not named in the cited evidence.{where}", surface
            )
        )
    return flags


def _check_frequency(text: str, cited: list[Segment]) -> list[Flag]:
    flags = []
    for med in medications_in(text):
        if not med.frequency:
            continue
        ev_freqs = set()
        for s in cited:
            for m in medications_in(s.text):
                if m.generic == med.generic and m.frequency:
                    ev_freqs.add(m.frequency)
            f = find_frequency(s.text)
            if f and not ev_freqs:
                ev_freqs.add(f[0])
        if med.frequency not in ev_freqs:
            said = f" (the evidence says {', '.join(sorted(ev_freqs))})" if ev_freqs else ""
            flags.append(
                _flag(
                    FlagKind.unsupported_number,
                    f"The frequency “{med.frequency}” for {text[med.start : med.start + len(med.name)]} is not in the cited evidence{said}.",
                    med.frequency,
                )
            )
    return flags


def _sentence_status(text: str, med_status: MedStatus, section: Section | None) -> MedStatus:
    if med_status is not MedStatus.unknown:
        return med_status
    if re.match(r"\s*(?:current |home )?(?:medications?|meds)\s*[:\-]", text, re.I):
        return MedStatus.current
    if section is not None:
        where = f"{section.key} {section.title}".lower()
        if any(k in where for k in _PLAN_SECTIONS):
            return MedStatus.unknown
        if any(k in where for k in _CURRENT_SECTIONS):
            return MedStatus.current
    return MedStatus.unknown


def _check_dose_status(
    text: str, cited: list[Segment], section: Section | None, ctx: GuardContext
) -> list[Flag]:
    flags = []
    cited_ids = {s.id for s in cited}
    meds_facts = ctx.medications()
    for med in medications_in(text):
        status = _sentence_status(text, med.status, section)
        if status is MedStatus.unknown:
            continue

        def same(f: Fact) -> bool:
            if f.generic != med.generic:
                return False
            if med.dose is not None and f.quantity is not None:
                return supports(f.quantity, med.dose)
            return True

        pool = [f for f in meds_facts if same(f) and cited_ids & set(f.segment_ids)]
        if not pool:
            pool = [f for f in meds_facts if same(f)]
        said = {f.status for f in pool if f.status not in (None, MedStatus.unknown)}
        if not said or status in said:
            continue
        dose = f" {med.dose.text}" if med.dose else ""
        name = text[med.start : med.start + len(med.name)]
        ids = _fmt_ids(sorted({i for f in pool for i in f.segment_ids}))
        transcript_status = "/".join(sorted(str(s) for s in said))
        if status is MedStatus.current and said & {MedStatus.new, MedStatus.changed}:
            msg = f"{name}{dose} is written as a current medication, but the transcript gives it as {transcript_status} ({ids})."
        else:
            msg = f"{name}{dose} is written as {status}, but the transcript gives it as {transcript_status} ({ids})."
        flags.append(_flag(FlagKind.dose_status, msg, text[med.start : med.end]))
    return flags


def _asserted_findings(text: str) -> Iterator[FindingMention]:
    q = question_span(text) if "?" in text else None
    for f in findings_in(text):
        if f.hypothetical:
            continue
        if q is not None and q.start <= f.start < q.end:
            continue
        yield f


def _check_negation(text: str, cited: list[Segment], ctx: GuardContext) -> list[Flag]:
    flags = []
    cited_ids = {s.id for s in cited}
    seen = set()
    for f in _asserted_findings(text):
        if (f.canonical, f.negated) in seen:
            continue
        seen.add((f.canonical, f.negated))
        facts = ctx.findings(f.canonical)
        local = [x for x in facts if cited_ids & set(x.segment_ids)]
        pool = local or facts
        pols = {x.negated for x in pool}
        ids = _fmt_ids(
            sorted(
                {i for x in pool for i in x.segment_ids},
                key=ctx.position,
            )
        )
        if not pols:
            if f.negated:
                flags.append(
                    _flag(
                        FlagKind.negation_mismatch,
                        f"The note says “{f.surface}” is absent, but the transcript never asks about or mentions it.",
                        f.surface,
                    )
                )
            continue
        if f.negated in pols:
            continue
        if f.negated:
            msg = f"The note says “{f.surface}” is absent, but the patient reported it ({ids})."
        else:
            msg = f"The note says “{f.surface}” is present, but the transcript gives it as absent ({ids})."
        flags.append(_flag(FlagKind.negation_mismatch, msg, f.surface))
    return flags


def _asked(cited: list[Segment], ctx: GuardContext) -> list[Segment]:
    """The questions the cited lines answer: the line before each, when another speaker asked
    there ("anyone in your family have any history of diseases?" / "i was adopted so i really
    have no idea")."""
    out = []
    for s in cited:
        k = ctx.position(s.id)
        prev = ctx.segments.get(ctx.order[k - 1]) if 0 < k <= len(ctx.order) else None
        if prev is not None and prev.speaker is not s.speaker and prev not in cited and question_span(prev.text):
            out.append(prev)
    return out


def _check_relatives(text: str, cited: list[Segment], ctx: GuardContext) -> list[Flag]:
    if not cited or not kin_in(text):
        return []  # no evidence is its own flag; a sentence naming no relative (most) costs one scan
    said = [s.text for s in cited + _asked(cited, ctx)]
    kin = unnamed_kin(text, said, (s.text for s in ctx.segments.values()))
    if kin is None:
        return []
    return [_flag(FlagKind.unsupported_relative,
                  f"The note says “{kin.surface}”, but the cited lines never mention one ({_fmt_ids(s.id for s in cited)}).",
                  kin.surface)]


def _check_placement(text: str, section: Section | None) -> list[Flag]:
    if section is None:
        return []
    where = f"{section.key} {section.title}".lower()
    if any(k in where for k in _PLAN_SECTIONS):
        return []
    flags = []
    for med in medications_in(text):
        if med.status in (MedStatus.new, MedStatus.changed):
            flags.append(
                _flag(
                    FlagKind.section_placement,
                    f"{text[med.start : med.start + len(med.name)]} is being {'started' if med.status is MedStatus.new else 'changed'}; that belongs in the plan, not in {section.title}.",
                    text[med.start : med.end],
                )
            )
    return flags


def _word_spans(seg: Segment) -> list[tuple[Word, int, int]]:
    """Each of ``seg.words`` with its character span in ``seg.text`` (found in order; a word the
    text no longer holds is left out)."""
    out, pos, low = [], 0, seg.text.lower()
    for w in seg.words:
        t = w.text.strip().lower()
        i = low.find(t, pos) if t else -1
        if i >= 0:
            out.append((w, i, i + len(t)))
            pos = i + len(t)
    return out


def _check_low_confidence(text: str, sentence: Sentence, cited: list[Segment], threshold: float) -> list[Flag]:
    """A drug name, dose or number in the sentence that the cited evidence spoke only with words
    the recogniser gave a probability below ``threshold``: within the quoted span, the words of a
    drug-lexicon match with the sentence's generic, of a quantity that supports one of the
    sentence's, or equal to one of its number or drug tokens."""
    if threshold <= 0:
        return []
    toks = tokenize(text)
    lex = drug_lexicon()
    generics = {lex.generic_of(m.canonical) for m in lex.find(toks)}
    claims = find_quantities(text, toks)
    wanted = {t.norm for m in lex.find(toks) for t in toks[m.start : m.end]}
    wanted |= {t.norm for t in toks if t.kind == "num"}
    for q in claims:
        wanted |= {t.norm for t in tokenize(q.text) if t.kind == "num"}
    if not generics and not claims and not wanted:
        return []
    flags = []
    for seg in cited:
        if not seg.words:
            continue
        quoted = [
            (i, i + len(ev.quote))
            for ev in sentence.evidence
            if ev.segment_id == seg.id and ev.quote and (i := seg.text.find(ev.quote)) >= 0
        ] or [(0, len(seg.text))]
        stoks = tokenize(seg.text)
        spoken = [(m.char_start, m.char_end) for m in lex.find(stoks) if lex.generic_of(m.canonical) in generics]
        spoken += [(q.start, q.end) for q in find_quantities(seg.text, stoks) if any(supports(q, c) for c in claims)]
        for w, a, b in _word_spans(seg):
            if w.probability >= threshold or not any(a < e and s < b for s, e in quoted):
                continue
            norm = re.sub(r"[^\w'/.+-]", "", w.text.lower()).strip(".")
            if any(a < e and s < b for s, e in spoken) or (norm and norm in wanted):
                flags.append(
                    _flag(
                        FlagKind.low_confidence_word,
                        f"“{w.text.strip()}” in {seg.id} at {_clock(w.start)} was heard with low confidence "
                        f"(p={w.probability:.2f}); listen to the recording before signing.",
                        w.text.strip(),
                    )
                )
    return flags


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m)}:{s:04.1f}"


def _check_degenerate(text: str, earlier: set[str], instructions: str) -> list[Flag]:
    flags = []
    m_url = URL_RE.search(text)
    if m_url:
        flags.append(
            _flag(
                FlagKind.degenerate_output,
                "Contains a web address; a note drafted from a visit should not.",
                m_url.group(0),
            )
        )
    m_echo = _ECHO_RE.search(text)
    marker = m_echo.group(0) if m_echo else None
    if marker:
        flags.append(
            _flag(
                FlagKind.degenerate_output,
                "Looks like the writer's instructions or chat text, not note content.",
                marker,
            )
        )
    elif instructions:
        words = [t.norm for t in tokenize(text) if t.kind == "word"]
        inst = " " + " ".join(t.norm for t in tokenize(instructions) if t.kind == "word") + " "
        # ten words in a row: eight caught a true sentence written in the shape of the prompt's
        # example ("The patient presents with a 4-day history of right finger pain")
        for i in range(0, max(0, len(words) - 9)):
            if " " + " ".join(words[i : i + 10]) + " " in inst:
                flags.append(
                    _flag(
                        FlagKind.degenerate_output,
                        "Repeats the template's instructions.",
                        " ".join(words[i : i + 10]),
                    )
                )
                break
    words = [t.norm for t in tokenize(text) if t.kind != "sym"]
    rep = _repetition(words)
    if rep:
        flags.append(
            _flag(FlagKind.degenerate_output, f"Repeats “{rep}” over and over (a looping writer).", rep)
        )
    key = " ".join(words)
    if key and key in earlier and len(words) >= 3:
        flags.append(
            _flag(
                FlagKind.degenerate_output,
                "Repeats an earlier sentence of the note word for word.",
                text[:80],
            )
        )
    if len(text) > 1200:
        flags.append(
            _flag(
                FlagKind.degenerate_output, "Unusually long sentence; the writer may have run on.", text[:80]
            )
        )
    return flags


def _repetition(words: list[str]) -> str | None:
    """An n-gram (n = 1..6) repeated back to back at least 3 times (4 for single words)."""
    for n in range(1, 7):
        need = 4 if n == 1 else 3
        for i in range(0, len(words) - n * need + 1):
            gram = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == gram for k in range(1, need)):
                return " ".join(gram)
    return None


def check_sentence(
    sentence: Sentence,
    ctx: GuardContext,
    section: Section | None = None,
    *,
    earlier: set[str] | None = None,
    low_confidence: float = LOW_CONFIDENCE,
) -> list[Flag]:
    """Every guard rule for one sentence; returns new flags (does not merge)."""
    if sentence.clinician_authored:
        return []
    text = strip_citations(sentence.text)
    flags, cited = _check_evidence(sentence, ctx)
    flags += _check_numbers(text, cited, ctx)
    flags += _check_frequency(text, cited)
    flags += _check_drugs(text, cited, ctx)
    flags += _check_dose_status(text, cited, section, ctx)
    flags += _check_negation(text, cited, ctx)
    flags += _check_relatives(text, cited, ctx)
    flags += _check_placement(text, section)
    flags += _check_low_confidence(text, sentence, cited, low_confidence)
    flags += _check_degenerate(text, earlier or set(), ctx.instructions)
    return _unique(flags)


def _unique(flags: list[Flag]) -> list[Flag]:
    seen = set()
    out = []
    for f in flags:
        k = (f.kind, f.span, f.message)
        if k not in seen:
            seen.add(k)
            out.append(f)
    return out


def merge_flags(old: list[Flag], new: list[Flag]) -> list[Flag]:
    """Keep resolved flags (a clinician's decision survives a re-check), drop unresolved guard
    flags that no longer apply, add new ones not already resolved, keep foreign flags."""
    resolved = [f for f in old if f.resolved]
    resolved_keys = {(f.kind, f.span) for f in resolved}
    foreign = [f for f in old if not f.resolved and f.kind not in GUARD_KINDS]
    fresh = [f for f in new if (f.kind, f.span) not in resolved_keys]
    return resolved + foreign + fresh


# ------------------------------------------------------------------ omissions


def covers(fact: Fact, sentences: list[Sentence]) -> bool:
    """Whether one of ``sentences`` states ``fact`` (the drug, with its dose if it has one; the
    finding, either way; the number): what the omission list and the completeness lines test."""
    for s in sentences:
        text = strip_citations(s.text)
        if fact.kind is FactKind.medication:
            if fact.generic in _drug_generics(text):
                if fact.quantity is None or any(
                    supports(fact.quantity, q) or supports(q, fact.quantity) for q in find_quantities(text)
                ):
                    return True
        elif fact.kind is FactKind.finding:
            if any(f.canonical == fact.name for f in findings_in(text)):
                return True
        elif fact.quantity is not None:
            if any(supports(q, fact.quantity) or supports(fact.quantity, q) for q in find_quantities(text)):
                return True
    return False


OMISSION_KINDS = (FactKind.medication, FactKind.vital, FactKind.lab, FactKind.finding)


def omissions(note: Note, facts: Sequence[Fact]) -> list[str]:
    """Facts (medications, vitals, labs, findings) that no sentence of the note mentions."""
    sentences = note.sentences()
    out = []
    for f in dedupe_facts(x for x in facts if x.kind in OMISSION_KINDS):
        if not covers(f, sentences):
            out.append(f.describe())
    return out


# ------------------------------------------------------------------ the whole note


def check_note(
    note: Note,
    segments: Sequence[Segment],
    *,
    facts: Sequence[Fact] | None = None,
    instructions: str = "",
    low_confidence: float = LOW_CONFIDENCE,
) -> Note:
    """The note with guard flags merged into every sentence and omissions recomputed.

    ``instructions``: the writer's prompt/template instructions, to catch prompt echo.
    Idempotent: checking a checked note changes nothing; resolved flags are kept.
    """
    ctx = GuardContext.build(segments, facts, instructions)
    earlier: set[str] = set()
    new_sections = []
    for sec in note.sections:
        new_sentences = []
        for s in sec.sentences:
            flags = check_sentence(s, ctx, sec, earlier=earlier, low_confidence=low_confidence)
            earlier.add(" ".join(t.norm for t in tokenize(strip_citations(s.text)) if t.kind != "sym"))
            new_sentences.append(s.model_copy(update={"flags": merge_flags(s.flags, flags)}))
        new_sections.append(sec.model_copy(update={"sentences": new_sentences}))
    checked = note.model_copy(update={"sections": new_sections})
    return checked.model_copy(update={"omissions": omissions(checked, ctx.facts)})


__all__ = [
    "GuardContext",
    "check_note",
    "check_sentence",
    "covers",
    "evidence_for",
    "link_evidence",
    "merge_flags",
    "omissions",
    "strip_citations",
]
