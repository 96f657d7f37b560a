"""Lines written from the facts a writer left out (scribe.notes.completeness): pure."""

from __future__ import annotations

from scribe.models import Evidence, Section, Sentence
from scribe.notes.completeness import fact_sentences, without_fact_lines
from scribe.notes.dialogue import segments_from_turns
from scribe.notes.extractive import draft
from scribe.notes.facts import extract_facts
from scribe.notes.guard import check_note
from scribe.notes.templates import load_template

TURNS = [
    ("doctor", "Your blood pressure today is 142 over 90 and heart rate 88. Your A1c was 7.2 percent."),
    ("patient", "I take lisinopril 20 mg daily and I have had a cough for two weeks."),
    ("doctor", "Any fever or chills?"),
    ("patient", "No."),
    ("doctor", "On exam, your lungs have some wheezing but no crackles."),
    ("doctor", "I will start metformin 500 mg twice a day."),
]


def visit(turns=TURNS):
    return segments_from_turns([{"speaker": who, "text": text} for who, text in turns])


def lines(template: str, turns=TURNS, kept=None):
    segs = visit(turns)
    tpl = load_template(template)
    facts = extract_facts(segs)
    base = draft(segs, encounter_id="e", template=tpl)
    kept = kept if kept is not None else {s.key: [] for s in tpl.sections}
    out = fact_sentences(kept, base, facts, segs, tpl)
    note = base.model_copy(update={"sections": [Section(key=s.key, title=s.title, sentences=out.get(s.key, []))
                                                for s in tpl.sections]})
    return check_note(note, segs, facts=facts), segs


def test_omitted_facts_become_note_lines_in_their_sections_citing_what_was_said():
    note, segs = lines("hp")
    got = [(sec.key, x.text, [e.segment_id for e in x.evidence]) for sec in note.sections for x in sec.sentences]
    assert got == [
        ("hpi", "Reports cough.", ["seg-00001"]),
        ("medications", "Current medications include lisinopril 20 mg daily.", ["seg-00001"]),
        ("ros", "Denies fever and chills.", ["seg-00002", "seg-00003"]),
        ("exam", "Blood pressure 142/90, heart rate 88.", ["seg-00000"]),
        ("exam", "Examination shows wheezing.", ["seg-00004"]),
        ("exam", "No crackles on examination.", ["seg-00004"]),
        ("results", "Hemoglobin A1c 7.2%.", ["seg-00000"]),
        ("plan", "Start metformin 500 mg twice daily.", ["seg-00005"]),
    ]
    assert all(not x.flags for x in note.sentences())  # the guard finds each supported
    assert all(x.evidence[0].quote == segs[int(x.evidence[0].segment_id[-5:])].text for x in note.sentences())


def test_what_a_kept_sentence_states_is_not_written_again():
    segs = visit()
    kept_line = Sentence(id="subjective.llama0", text="Denies fever or chills; coughing for two weeks.",
                         evidence=[Evidence(segment_id=s.id, start=s.start, end=s.end, quote=s.text) for s in segs[1:4]])
    tpl = load_template("soap")
    kept = {s.key: [] for s in tpl.sections}
    kept["subjective"].append(kept_line)
    note, _ = lines("soap", kept=kept)
    texts = [x.text for x in note.sentences()]
    assert not any("fever" in t or "cough" in t for t in texts), texts
    assert "Current medications include lisinopril 20 mg daily." in texts


def test_what_is_not_written():
    turns = [
        ("doctor", "Are you taking lisinopril?"),  # asked, never answered: no status
        ("doctor", "Okay, let's talk about the knee."),
        ("patient", "I have atrial fibrillation and it hurts a lot."),  # a diagnosis; bare pain, no site
        ("doctor", "Any headache?"),
        ("patient", "No."),
        ("patient", "Well, I had a headache yesterday."),  # reported and denied: the writer's call
        ("doctor", "Your A1c was done about six months ago."),  # a when, not a value
        ("patient", "I get a little anxious."),
    ]
    note, _ = lines("soap", turns)
    assert [x.text for x in note.sentences()] == ["Reports anxiety."]


def test_one_line_per_medicine_and_its_change_rather_than_its_current_use():
    turns = [("patient", "I take lisinopril 10 mg daily and prozac."),
             ("doctor", "Let's increase the lisinopril from 10 mg to 20 mg daily, and start prozac 20 mg daily.")]
    note, _ = lines("soap", turns)
    texts = [x.text for x in note.sentences()]
    assert texts == ["Change lisinopril from 10 mg to 20 mg daily.", "Start prozac 20 mg daily."], texts


def test_without_fact_lines_removes_only_them():
    note, _ = lines("soap")
    keep = Sentence(id="plan.llama0", text="Follow up in two weeks.")
    mixed = note.model_copy(update={"sections": [*note.sections[:-1], note.sections[-1].model_copy(
        update={"sentences": [keep, *note.sections[-1].sentences]})]})
    assert [x.id for x in without_fact_lines(mixed).sentences()] == ["plan.llama0"]


def test_a_medicine_the_clinician_advises_taking_is_not_written_as_a_home_medicine():
    # PriMock57 dev day1_consultation01 (CC BY 4.0): advice, said by the clinician
    turns = [("doctor", "If you are feeling feverish and weak, taking some paracetamol, two tablets up to four "
                        "times a day for the first few days can also help."),
             ("patient", "Okay. I also take omeprazole 20 mg every morning.")]
    note, _ = lines("soap", turns)
    texts = [x.text for x in note.sentences()]
    assert texts == ["Current medications include omeprazole 20 mg daily."], texts
    assert all(not x.flags for x in note.sentences())
