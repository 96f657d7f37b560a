"""How good is a note against a reference note: the metrics of ``scribe eval notes``. Pure.

**Clinical facts** (an explicit, documented extractor; the same code reads the reference and
the candidate, so wording differences that mean the same thing compare equal):

* ``drug:<generic>`` — every drug the drug lexicon (``prompts/lexicon/drugs.txt``) recognises,
  brand names mapped to the generic ("Lasix" = furosemide);
* ``dose:<generic> <amount unit>`` — a drug with its dose ("lisinopril 20 mg");
* ``num:<value unit>`` — every number with a unit (vitals, labs, durations, doses: "120/80 mmHg",
  "3 day"), spoken and written forms normalised alike ("three days" = "3 days"); clock times and
  bare numbers are ignored;
* ``finding:<canonical>`` / ``finding:no <canonical>`` — symptoms, signs and problems from the
  findings lexicon (``prompts/lexicon/findings.txt``), with negation ("denies fever" →
  ``finding:no fever``), hypotheticals ("call if fever") ignored.

Recall = reference facts found in the candidate / reference facts; precision = candidate facts
found in the reference / candidate facts. A record whose reference has no fact is left out of
recall (and one whose candidate has none, out of precision).

**Register** — the share of a note's sentences that are note language (``register.py``: not a
question, no first/second person, no filler, not a fragment), for every writer.

**ROUGE** — ``rouge-score``'s ROUGE-1/2/L F1 with Porter stemming, on the note's plain text
(section headings included, empty sections left out), as ACI-Bench reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models import Note, Segment
from .facts import findings_in, medications_in
from .numbers import find_quantities
from .register import is_note_language


def fact_keys(text: str) -> set[str]:
    """The clinical facts stated in ``text`` (see the module docstring)."""
    keys: set[str] = set()
    for m in medications_in(text):
        keys.add(f"drug:{m.generic}")
        if m.dose is not None:
            keys.add(f"dose:{m.generic} {m.dose.normalized()}")
    for q in find_quantities(text):
        if (q.unit or (q.sep == "/" and q.value2 is not None)) and q.dimension != "clock":
            keys.add(f"num:{q.normalized()}")
    for f in findings_in(text):
        if not f.hypothetical:
            keys.add(f"finding:{'no ' if f.negated else ''}{f.canonical}")
    return keys


def note_text(note: Note) -> str:
    """Plain note text for scoring: headings and sentences, no evidence ids, no empty sections."""
    lines = []
    for sec in note.sections:
        if not sec.sentences:
            continue
        lines.append(sec.title)
        lines += [s.text.strip() for s in sec.sentences]
        lines.append("")
    return "\n".join(lines).strip()


def copy_transcript(segments: list[Segment]) -> str:
    """The copy-transcript baseline: the dialogue itself, one turn per line."""
    return "\n".join(s.text.strip() for s in segments if s.text.strip())


@dataclass
class Scores:
    rouge1: float
    rouge2: float
    rougeL: float
    fact_recall: float | None
    fact_precision: float | None
    ref_facts: int
    cand_facts: int
    matched_facts: int


_SCORER = None


def score(candidate: str, reference: str) -> Scores:
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    r = _SCORER.score(reference, candidate)
    ref, cand = fact_keys(reference), fact_keys(candidate)
    hit = ref & cand
    return Scores(
        rouge1=r["rouge1"].fmeasure,
        rouge2=r["rouge2"].fmeasure,
        rougeL=r["rougeL"].fmeasure,
        fact_recall=len(hit) / len(ref) if ref else None,
        fact_precision=len(hit) / len(cand) if cand else None,
        ref_facts=len(ref),
        cand_facts=len(cand),
        matched_facts=len(hit),
    )


def note_for_reading(record_id: str, system: str, note: Note, reference: str) -> str:
    """One drafted note as Markdown for reading (``--save-notes``): each sentence with its
    evidence ids and flags, the reference after it."""
    lines = [f"# {record_id} — {system}", ""]
    for sec in note.sections:
        lines.append(f"## {sec.title}")
        for s in sec.sentences:
            cites = ", ".join(e.segment_id for e in s.evidence)
            flags = "".join(f" **[{f.kind}: {f.message}]**" for f in s.flags)
            lines.append(f"- {s.text} `[{cites}]` `{s.id}`{flags}")
        lines.append("")
    lines += ["---", "## Reference note", "", reference, ""]
    return "\n".join(lines)


def note_file_name(record_id: str, system: str) -> str:
    return f"{record_id.replace('/', '_')}.{system.replace(' ', '_')}.md"


@dataclass
class NoteChecks:
    sentences: int
    with_evidence: int
    flagged: int
    register_clean: int = 0
    """Sentences that are note language (``register.py``: not a question, no I/you, no filler,
    not a fragment)."""


def note_checks(note: Note) -> NoteChecks:
    ss = note.sentences()
    return NoteChecks(
        sentences=len(ss),
        with_evidence=sum(1 for s in ss if s.evidence),
        flagged=sum(1 for s in ss if any(not f.resolved for f in s.flags)),
        register_clean=sum(1 for s in ss if is_note_language(s.text)),
    )


@dataclass
class SystemTotals:
    """Running sums for one system over a file (means are taken at the end)."""

    name: str
    n: int = 0
    rouge1: float = 0.0
    rouge2: float = 0.0
    rougeL: float = 0.0
    recall_sum: float = 0.0
    recall_n: int = 0
    precision_sum: float = 0.0
    precision_n: int = 0
    sentences: int = 0
    with_evidence: int = 0
    flagged: int = 0
    register_clean: int = 0
    stop_to_draft: list[float] = field(default_factory=list)
    incremental_per_segment: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    generate_seconds: float = 0.0
    lm_sentences: int = 0
    repaired: int = 0
    peak_rss_mb: float = 0.0
    errors: int = 0
    visit_seconds: float = 0.0
    """Length of the visits drafted (segment time), for the share below."""
    visit_lm_seconds: float = 0.0
    """Model time spent while the visits were going on (reading the transcript, writing sections)."""
    sections_after_stop: list[float] = field(default_factory=list)

    def add(self, s: Scores, checks: NoteChecks | None) -> None:
        self.n += 1
        self.rouge1 += s.rouge1
        self.rouge2 += s.rouge2
        self.rougeL += s.rougeL
        if s.fact_recall is not None:
            self.recall_sum += s.fact_recall
            self.recall_n += 1
        if s.fact_precision is not None:
            self.precision_sum += s.fact_precision
            self.precision_n += 1
        if checks is not None:
            self.sentences += checks.sentences
            self.with_evidence += checks.with_evidence
            self.flagged += checks.flagged
            self.register_clean += checks.register_clean

    def summary(self) -> dict[str, float | int | str | None]:
        n = max(1, self.n)
        std = sorted(self.stop_to_draft)
        return {
            "system": self.name,
            "records": self.n,
            "rouge1": 100 * self.rouge1 / n,
            "rouge2": 100 * self.rouge2 / n,
            "rougeL": 100 * self.rougeL / n,
            "fact_recall": 100 * self.recall_sum / self.recall_n if self.recall_n else None,
            "fact_precision": 100 * self.precision_sum / self.precision_n if self.precision_n else None,
            "sentences": self.sentences,
            "evidence_linked_pct": 100 * self.with_evidence / self.sentences if self.sentences else None,
            "flagged_pct": 100 * self.flagged / self.sentences if self.sentences else None,
            "register_clean_pct": 100 * self.register_clean / self.sentences if self.sentences else None,
            "stop_to_draft_s_mean": sum(std) / len(std) if std else None,
            "stop_to_draft_s_p50": std[len(std) // 2] if std else None,
            "stop_to_draft_s_p95": std[min(len(std) - 1, int(0.95 * len(std)))] if std else None,
            "stop_to_draft_s_max": std[-1] if std else None,
            "lm_busy_during_visit_pct": 100 * self.visit_lm_seconds / self.visit_seconds
            if self.visit_lm_seconds and self.visit_seconds else None,
            "sections_after_stop_mean": sum(self.sections_after_stop) / len(self.sections_after_stop)
            if self.sections_after_stop else None,
            "incremental_ms_per_segment": 1000 * sum(self.incremental_per_segment) / len(self.incremental_per_segment)
            if self.incremental_per_segment else None,
            "tokens_per_s": self.completion_tokens / self.generate_seconds
            if self.completion_tokens and self.generate_seconds else None,
            "lm_sentences_kept": self.lm_sentences if self.completion_tokens else None,
            "lm_sentences_repaired": self.repaired if self.completion_tokens else None,
            "peak_rss_mb": self.peak_rss_mb or None,
            "errors": self.errors,
        }


__all__ = ["NoteChecks", "Scores", "SystemTotals", "copy_transcript", "fact_keys", "note_checks", "note_text", "score"]
