"""Plan lines from the clinician's stated decisions (``scribe/notes/plan_lines.py``): the lead-in
comes off, "you" becomes "the patient", and anything that is not plainly a decision — a
negation, a condition, a hedge, a question, a self-correction — is left alone. The sentences
are ACI-Bench train clinician turns (the rules were written on train) and their like."""

from __future__ import annotations

import pytest

from scribe.notes.plan_lines import plan_lines


@pytest.mark.parametrize(
    "said, lines",
    [
        ("I also wanna go ahead and just order an autoimmune panel.", ["Order an autoimmune panel."]),
        ("Let's continue you on the allopurinol, 100 milligrams, once a day.",
         ["Continue the patient on the allopurinol, 100 milligrams, once a day."]),
        ("I wanna go ahead and order a ct scan without contrast of your abdomen and pelvis.",
         ["Order a ct scan without contrast of abdomen and pelvis."]),
        ("I wanna go ahead and prescribe meloxicam 15 milligrams once a day, and I'd like to refer you to physical "
         "therapy.", ["Prescribe meloxicam 15 milligrams once a day.", "Refer the patient to physical therapy."]),
        ("We will get a repeat hemoglobin a1c in three months, and I want you to continue to monitor your blood "
         "sugars at home.", ["Get a repeat hemoglobin a1c in three months.", "Continue to monitor blood sugars at home."]),
        ("Hey, dragon, order a refill of protonix 40 milligrams daily.", ["Order a refill of protonix 40 milligrams daily."]),
        ("I'm also gonna order you some ultram 50 milligrams as needed every six hours for pain.",
         ["Order the patient some ultram 50 milligrams as needed every six hours for pain."]),
        ("I don't think that anything else is going on, but I wanna go ahead and order an mri.", ["Order an mri."]),
        ("I'm going to recommend we give you some motrin, 800 milligrams.", ["Give the patient some motrin, 800 milligrams."]),
        ("We'll go ahead and order your routine blood work, and I'll be in touch with you through the patient portal, "
         "okay?", ["Order routine blood work."]),
    ],
)
def test_a_stated_decision_becomes_a_plan_line(said, lines):
    assert plan_lines(said) == lines


@pytest.mark.parametrize(
    "said",
    [
        "I don't feel the need to start you on any medications this year, unless you feel differently.",
        "If you're still having symptoms, I wanna go ahead and, order an mri.",  # a condition before the decision
        "I wanna go ahead and order another hemoglobin a1c in a couple weeks, or, I'm sorry, a couple months.",
        "Maybe we could start you on some gabapentin.",
        "Do you want me to order a refill?",
        "Let's start with your diabetes.",  # a topic, not an order
        "So let's start by listening to your heart and lungs.",  # the examination
        "We get a lot of patients with this.",  # a statement, not an intention
        "I need to just put this dax back to work.",
        "Let's go ahead and get you signed out.",
        "We'll put you on, um…",
    ],
)
def test_what_is_not_plainly_a_decision_is_left_alone(said):
    assert plan_lines(said) == []
