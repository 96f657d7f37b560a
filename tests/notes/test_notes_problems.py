"""Problems named as such by the clinician (``scribe/notes/problems.py``): "for your second
problem, your hypothyroidism" and "the diagnosis would be …" are the assessment's headings said
aloud; a hedge, a differential or anything else is left alone. Sentences like ACI-Bench train's."""

from __future__ import annotations

import pytest

from scribe.notes.problems import problem_lines


@pytest.mark.parametrize(
    "said, lines",
    [
        ("For your second problem, your hypothyroidism, I wanna go ahead and continue you on this.", ["Hypothyroidism."]),
        ("Then for your last problem your hypertension, again I think it's out of control.", ["Hypertension."]),
        ("For your next problem, your type 2 diabetes, I would like to increase your metformin.", ["Type 2 diabetes."]),
        ("So, the diagnosis would be a right hand, index finger contusion on the tip of your finger, okay?",
         ["Right hand, index finger contusion on the tip of finger."]),
        ("For your second problem, your gout, everything seems controlled right now.", ["Gout."]),
    ],
)
def test_a_problem_named_as_such_is_an_assessment_line(said, lines):
    assert problem_lines(said) == lines


@pytest.mark.parametrize(
    "said",
    [
        "Your diagnosis is distal phalanx fracture of the middle finger or the third finger.",  # a differential
        "I think it's fine.",
        "For your first problem, I think you have an acute lumbar, strain.",  # "I": not a heading
        "Now I wanna move on to the next problem, this.",
        "How has your blood pressure been?",
    ],
)
def test_what_is_not_named_as_a_problem_is_left_alone(said):
    assert problem_lines(said) == []
