"""The extractive writer: evidence on every sentence, no guard flags on what it copies,
incremental = one-shot, and clear results for bad input.

Real encounters come from ``$SCRIBE_EVAL_DIR`` or ``../shared/eval`` (ACI-Bench dev, CC BY 4.0:
Yim et al., Sci Data 2023); those tests are skipped where the data is absent. The short visit
(``tests/notes_support.py``) is written for these tests.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scribe.models import Note, Segment, Speaker
from scribe.notes.dialogue import segments_from_turns
from scribe.notes.extractive import IncrementalDrafter, UnsupportedLanguage, draft
from scribe.notes.guard import check_note
from scribe.notes.templates import load_template

from notes_support import SHORT, short_segments

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
EVAL = Path(os.environ.get("SCRIBE_EVAL_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "eval"))


def aci_record(rid: str) -> dict:
    path = EVAL / "aci_bench_dev.jsonl"
    if not path.is_file():
        pytest.skip(f"evaluation data not found at {path}")
    with path.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["id"] == rid:
                return rec
    pytest.skip(f"{rid} not in {path}")


def assert_well_formed(note: Note, segs: list[Segment]) -> None:
    by_id = {s.id: s for s in segs}
    ids = [s.id for s in note.sentences()]
    assert len(ids) == len(set(ids))
    for s in note.sentences():
        assert s.evidence, s.text
        for e in s.evidence:
            seg = by_id[e.segment_id]
            assert e.quote and e.quote in seg.text
            assert seg.start <= e.start <= e.end <= seg.end


# ------------------------------------------------------------------ short visit


def test_short_visit_structure_and_content():
    segs = short_segments()
    note = draft(segs, encounter_id="enc-1", created_at=T0)
    assert note.template == "soap" and note.loinc == "11506-3" and note.writer == "extractive"
    assert [s.key for s in note.sections] == ["subjective", "objective", "assessment", "plan"]
    assert_well_formed(note, segs)
    assert note.open_flags == []
    text = {s.key: " ".join(x.text for x in s.sentences) for s in note.sections}
    assert "Denies fever and chills." in text["subjective"]
    assert "cough" in text["subjective"]
    assert "98.6" in text["objective"]
    assert "benzonatate 100 mg" in text["plan"]
    # the small talk and the bare "Okay, thank you." are not in the note
    assert "thank you" not in " ".join(text.values()).lower()
    assert check_note(note, segs).open_flags == []


@pytest.mark.parametrize("name", ["hp", "progress", "consult"])
def test_sections_follow_the_template(name):
    segs = short_segments()
    note = draft(segs, template=name, created_at=T0)
    t = load_template(name)
    assert [s.key for s in note.sections] == t.keys
    assert [s.title for s in note.sections] == [s.title for s in t.sections]
    assert note.loinc == t.loinc and note.title == t.title
    assert_well_formed(note, segs)
    assert sum(len(s.sentences) for s in note.sections) >= 8


def test_greetings_and_pleasantries_are_not_note_content():
    turns = [("doctor", "Good morning sir."), ("patient", "Hello, good morning."),
             ("patient", "Good morning, I've had chest pain since yesterday."),
             ("doctor", "Thank you, take care."), ("patient", "Thanks, bye.")]
    note = draft(segments_from_turns([{"speaker": s, "text": t} for s, t in turns]), created_at=T0)
    texts = [s.text for s in note.sentences()]
    assert not any("morning sir" in t or "bye" in t.lower() or "take care" in t for t in texts), texts
    assert any("chest pain since yesterday" in t for t in texts), texts


def test_a_companions_statements_are_marked_as_theirs():
    """A third voice (labelled ``other``) gives collateral history: its sentences say so in the
    note text itself, not only in the evidence pane; the patient's stay as they were."""
    turns = SHORT[:2] + [("guest_family", "He has also been wheezing at night and his brother has asthma.")] + SHORT[2:]
    segs = segments_from_turns([{"speaker": s, "text": t} for s, t in turns])
    assert segs[2].speaker is Speaker.other
    note = draft(segs, encounter_id="enc-1", created_at=T0)
    assert_well_formed(note, segs)
    by_seg = {s.evidence[0].segment_id: s for s in note.sentences()}
    companion = by_seg[segs[2].id]
    assert companion.text.startswith("Per companion: ") and "wheezing at night" in companion.text
    assert not companion.flags
    assert not by_seg[segs[1].id].text.startswith("Per companion")


def test_without_diarization_questions_still_pair_with_answers():
    segs = short_segments(keep_speakers=False)
    note = draft(segs, created_at=T0)
    assert_well_formed(note, segs)
    assert any(s.text == "Denies fever and chills." for s in note.sentences())
    assert note.open_flags == []


# ------------------------------------------------------------------ incremental = one-shot


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SHORT)), max_size=6))
def test_incremental_equals_one_shot(cuts):
    segs = short_segments()
    one_shot = draft(segs, encounter_id="e", created_at=T0)
    d = IncrementalDrafter("e", created_at=T0)
    bounds = sorted(set([0, len(segs)] + cuts))
    previous: list[str] = []
    for a, b in zip(bounds, bounds[1:]):
        partial = d.extend(segs[a:b])
        ids = [s.id for s in partial.sentences()]
        # the draft only grows: sentences already shown never change or disappear
        assert set(previous) <= set(ids)
        previous = ids
    assert d.finish() == one_shot


def test_incremental_equals_one_shot_on_a_real_visit():
    rec = aci_record("aci-bench/D2N068")
    segs = segments_from_turns(rec["dialogue"])
    one_shot = draft(segs, encounter_id=rec["id"], created_at=T0)
    d = IncrementalDrafter(rec["id"], created_at=T0)
    for s in segs:
        d.add(s)
    t = time.perf_counter()
    final = d.finish()
    stop_to_draft = time.perf_counter() - t
    assert final == one_shot
    assert stop_to_draft < 2.0  # only assembly and omissions remain after stop


def test_add_rejects_out_of_order_and_ignores_repeats():
    segs = short_segments()
    d = IncrementalDrafter()
    d.add(segs[0])
    d.add(segs[1])
    before = d.partial()
    d.add(segs[1])  # a resend after a reconnect
    assert d.partial().sections == before.sections
    with pytest.raises(ValueError, match="must come in order"):
        d.add(segs[0])
    d.finish()
    with pytest.raises(ValueError, match="finished"):
        d.add(segs[2])


# ------------------------------------------------------------------ a real encounter


def test_real_aci_bench_encounter():
    rec = aci_record("aci-bench/D2N068")
    segs = segments_from_turns(rec["dialogue"])
    note = draft(segs, encounter_id=rec["id"], created_at=T0)
    assert_well_formed(note, segs)
    assert len(note.sentences()) >= 15
    assert note.open_flags == []  # sentences copied from the transcript raise no guard flag
    assert check_note(note, segs).open_flags == []
    plan = " ".join(s.text for s in note.sections[-1].sentences).lower()
    assert "lasix to 80 mg" in plan and "lisinopril 20 mg" in plan
    subj = [s.text for s in note.sections[0].sentences]
    assert "Denies fever and chills." in subj and "Reports chest pain." in subj
    objective = " ".join(s.text for s in note.sections[1].sentences).lower()
    assert "systolic ejection murmur" in objective and "chest x-ray" in objective
    assert "weigh yourself every day" in plan
    assert not any("weigh yourself" in s.text.lower() for sec in note.sections[:3] for s in sec.sentences)
    # the dictation device's commands are not note content
    assert not any(
        "dragon" in s.text.lower() or s.text.lower().startswith("show me") for s in note.sentences()
    )


@pytest.mark.parametrize("rid", ["aci-bench/D2N077", "aci-bench/D2N081"])
def test_unpunctuated_asr_encounters(rid):
    rec = aci_record(rid)
    segs = segments_from_turns(rec["dialogue"])
    note = draft(segs, created_at=T0)
    assert_well_formed(note, segs)
    assert note.open_flags == []
    assert len(note.sentences()) >= 10


# ------------------------------------------------------------------ bad input


def test_empty_transcript_gives_an_empty_note():
    note = draft([], encounter_id="e", created_at=T0)
    assert [s.key for s in note.sections] == ["subjective", "objective", "assessment", "plan"]
    assert note.sentences() == [] and note.omissions == [] and note.open_flags == []


def test_one_word_and_blank_visits():
    segs = [
        Segment(id="seg-00000", index=0, start=0, end=1, text="Hello.", speaker=Speaker.clinician),
        Segment(id="seg-00001", index=1, start=1, end=2, text="   ", speaker=Speaker.patient),
    ]
    note = draft(segs, created_at=T0)
    assert note.sentences() == [] and note.omissions == []


def test_non_english_text_invents_nothing():
    segs = segments_from_turns(
        [
            {"speaker": "doctor", "text": "¿Qué le trae por aquí hoy? ¿Tiene fiebre o dolor de pecho?"},
            {"speaker": "patient", "text": "No, pero tengo tos desde hace tres días y me duele la garganta."},
            {"speaker": "doctor", "text": "Le voy a recetar un jarabe para la tos, dos veces al día."},
        ]
    )
    note = draft(segs, created_at=T0)
    assert_well_formed(note, segs)
    assert note.open_flags == []
    assert not any(s.text.startswith(("Denies", "Reports")) for s in note.sentences())
    with pytest.raises(UnsupportedLanguage, match="English only"):
        draft(segs, language="es")


def test_repeated_statements_are_written_once():
    segs = segments_from_turns(
        [
            {"speaker": "doctor", "text": "I want you to continue the lisinopril 10 mg daily."},
            {"speaker": "patient", "text": "Okay."},
            {"speaker": "doctor", "text": "So, I want you to continue the lisinopril 10 mg daily."},
        ]
    )
    note = draft(segs, created_at=T0)
    texts = [s.text for s in note.sentences()]
    assert texts == ["I want you to continue the lisinopril 10 mg daily."]
    assert note.sentences()[0].evidence[0].segment_id == "seg-00000"



def _long_visit(minutes: float):
    """A synthetic visit whose every exchange is new (symptom × drug × numbers), so the drafter
    writes sentences all the way through instead of dropping repeats."""
    import itertools

    from scribe.models import Segment, Speaker

    symptoms = ["headache", "cough", "nausea", "back pain", "dizziness", "fatigue", "chest pain",
                "sore throat", "rash", "fever", "diarrhea", "insomnia"]
    drugs = ["ibuprofen", "amoxicillin", "metformin", "lisinopril", "omeprazole", "sertraline",
             "atorvastatin", "amlodipine"]
    out: list[Segment] = []
    t = 0.0
    for k, (sym, drug) in enumerate(itertools.cycle(itertools.product(symptoms, drugs))):
        for speaker, text in ((Speaker.clinician, f"How long have you had the {sym}?"),
                              (Speaker.patient, f"The {sym} started {k % 27 + 2} days ago and it is worse at night."),
                              (Speaker.clinician, f"I will start {drug} {(k % 9 + 1) * 50} mg twice a day.")):
            i = len(out)
            out.append(Segment(id=Segment.make_id(i), index=i, start=t, end=t + 4.0, text=text, speaker=speaker))
            t += 4.5
        if t > minutes * 60:
            return out


def test_the_guard_context_is_built_once_per_note_and_grown(monkeypatch):
    """The guard's view of the transcript is made once per drafter and grown with each segment;
    it used to be rebuilt (every segment, every fact) for every sentence written."""
    from scribe.notes import IncrementalDrafter, guard

    built = []
    original = guard.GuardContext.__post_init__

    def counting(self):
        built.append(1)
        original(self)

    monkeypatch.setattr(guard.GuardContext, "__post_init__", counting)
    drafter = IncrementalDrafter("enc-once", "soap")
    for seg in _long_visit(3):
        drafter.add(seg)
    note = drafter.finish()
    assert len(note.sentences()) > 20
    assert len(built) == 1


def test_drafting_cost_per_segment_stays_flat_with_visit_length():
    """A bound, not a benchmark: the CPU time of the last 40 segments of a 30-minute visit is
    within 3x of a 1.5-minute one (measured here: 0.9 vs 1.2 ms per segment)."""
    import time

    from scribe.notes import IncrementalDrafter

    def cost_of_last(segments, n: int = 40) -> float:
        best = float("inf")
        for _ in range(2):
            drafter = IncrementalDrafter("enc-flat", "soap")
            for s in segments[:-n]:
                drafter.add(s)
            t0 = time.process_time()
            for s in segments[-n:]:
                drafter.add(s)
            best = min(best, time.process_time() - t0)
        return best / n

    short, long = _long_visit(1.5), _long_visit(30)
    assert len(long) > 10 * len(short)
    ratio = cost_of_last(long) / cost_of_last(short)
    assert ratio < 3.0, f"drafting a segment in minute 30 costs {ratio:.1f}x minute 1"


def test_a_drafter_relabelled_with_hindsight_reads_as_if_labelled_so_from_the_start():
    """The record pass re-decides labels with the whole visit, after the drafter read some
    segments: "yes, sometimes" first heard as the clinician's is no answer to the
    question; relabelled as the patient's it is a symptom reported."""
    from scribe.notes.extractive import IncrementalDrafter

    from notes_support import qa_visit

    wrong, right = qa_visit(Speaker.clinician), qa_visit(Speaker.patient)

    def facts(d):
        return sorted((f.kind.value, f.value, f.negated, str(f.speaker)) for f in d.facts)

    first = IncrementalDrafter("e-relabel", "soap", created_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    first.extend(wrong)
    truth = first.fresh()
    truth.extend(right)
    assert facts(first) != facts(truth)  # the label matters here
    relabelled = first.relabelled({right[1].id: Speaker.patient})
    assert facts(relabelled) == facts(truth)
    assert relabelled.finish() == truth.finish()
    assert [s.speaker for s in relabelled.state.segments] == [s.speaker for s in right]
