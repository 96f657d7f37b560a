"""Register: a note sentence is written in the third person, as a statement, without fillers,
and means something on its own. The examples are the extractive writer's output the issue
quotes (scribe issue 14) and what a clinician charts instead."""

from __future__ import annotations

import pytest

from scribe.models import Evidence, Note, Section, Sentence
from scribe.notes.evaluation import note_checks
from scribe.notes.register import register_clean_share, register_issues


@pytest.mark.parametrize(
    "text, reason",
    [
        ("Have you taken anything for the insomnia.", "question"),
        ("How long has that been going on?", "question"),
        ("Your lungs are nice and clear.", "second_person"),
        ("You mentioned you've had some pain in your tummy as well.", "second_person"),
        ("I feel a bit weak and shake it.", "first_person"),
        ("We will see you in two weeks.", "first_person"),
        ("About six months ago.", "fragment"),
        ("Like a cramp.", "fragment"),
        ("Pretty strong, nothing out of the ordinary.", "fragment"),
        ("Okay.", "filler"),
        ("Um, the pain started yesterday.", "filler"),
        ("Finalize the note.", "command"),
        ("Dax, order a chest x-ray.", "command"),
        # ACI dev D2N071/D2N072 drafts (session 8)
        ("The patient has been taking the norvasc at home, is it running high, or anything else.", "question"),
        ("That hurts.", "fragment"),
        ("Miralax.", "fragment"),
        # a question moving on to the next, inside a statement (ACI dev D2N071, session 14)
        ("Has had nasal congestion from the pollen, but how about any shortness of breath, cough, or muscle aches.",
         "question"),
        # the facts under a transcript line copied as a sentence (ACI dev D2N069, D2N077, session 10)
        ("Motrin 800 mg, new; 6 hours; 2 weeks.", "notation"),
        ("Pain present; edema present; numbness present.", "notation"),
        ("Lisinopril 20 mg daily, current.", "notation"),
    ],
)
def test_transcript_speech_is_not_note_language(text, reason):
    assert reason in register_issues(text)


@pytest.mark.parametrize(
    "text",
    [
        "Denies fever.",
        "Hypertension.",
        "Lungs clear.",
        "No known drug allergies.",
        "The patient reports a 3-day history of cough.",
        "Continue lisinopril 20 mg daily.",
        "Return to clinic as needed.",
        "Follow up in 2 weeks.",
        "Type 2 diabetes, well controlled.",
        'States "I cannot sleep at night."',
        "Start lisinopril 10 mg daily.",
        "Will order an MRI of the right knee.",
        "Miralax 17 g daily.",
        "It is unclear whether the rash is related to the new medication.",
        "Pain is worse at night, and it is relieved by rest.",
        "Edema present; no cyanosis.",
        "Lungs clear; heart regular.",
        "Start a new medication; follow up in 2 weeks.",
        "Discussed what about the diet helps him most.",
    ],
)
def test_chart_sentences_are_note_language(text):
    assert register_issues(text) == []


def test_share_and_note_checks_count_clean_sentences():
    assert register_clean_share(["Denies fever.", "Okay.", "Your lungs are clear."]) == (1, 3)
    ev = [Evidence(segment_id="seg-00000", start=0, end=1, quote="x")]
    note = Note(encounter_id="e", sections=[Section(key="subjective", title="Subjective", sentences=[
        Sentence(id="a", text="Denies fever.", evidence=ev),
        Sentence(id="b", text="Have you had a fever?", evidence=ev),
    ])])
    checks = note_checks(note)
    assert (checks.sentences, checks.register_clean) == (2, 1)
