"""The committed section classifier: loads, was fitted on train only, and makes the obvious
calls. (Regenerate with ``python scripts/train_section_classifier.py --eval``.)"""

from __future__ import annotations

import json

import pytest

from scribe.notes.classifier import DATA_PATH, DIVISIONS, load_classifier


@pytest.fixture(scope="module")
def clf():
    return load_classifier()


def test_parameters_come_from_train_splits_only():
    data = json.loads(DATA_PATH.read_text(encoding="utf-8"))
    assert data["format"] == "scribe-section-classifier/1"
    assert all(p.startswith("train/") for p in data["meta"]["trained_on"])
    assert DATA_PATH.stat().st_size < 1_000_000


@pytest.mark.parametrize(
    "text, speaker, division",
    [
        (
            "on your heart exam i do appreciate a three out of six systolic ejection murmur",
            "clinician",
            "objective_exam",
        ),
        (
            "looking at the results of your chest x-ray it shows some fluid in your lungs",
            "clinician",
            "objective_results",
        ),
        (
            "for your congestive heart failure i want to increase your lasix to 80 mg once a day",
            "clinician",
            "assessment_and_plan",
        ),
        ("i've had this cough for about three days and it gets worse at night", "patient", "subjective"),
        ("hi , good to see you .", "clinician", "none"),
        ("the weather has been great", "clinician", "none"),
    ],
)
def test_obvious_utterances(clf, text, speaker, division):
    uniform = {d: 0.25 for d in DIVISIONS[:-1]}
    d, topic, belief = clf.step(uniform, text, speaker)
    assert d == division
    assert set(belief) == set(DIVISIONS[:-1]) and abs(sum(belief.values()) - 1) < 1e-9
    assert (topic == "none") == (division == "none")


def test_visit_start_prior_favours_the_history(clf):
    assert clf.step(None, "so tell me what has been going on", "clinician")[0] == "subjective"


def test_topics_within_subjective(clf):
    from scribe.notes.classifier import features

    assert (
        clf.topic_of("subjective", features("i'm allergic to penicillin, it gives me hives", "patient"))
        == "allergies"
    )
    assert (
        clf.topic_of(
            "subjective", features("my mother had breast cancer and my father has diabetes", "patient")
        )
        == "social_family"
    )


def test_classification_is_causal_and_deterministic(clf):
    visit = [
        ("hi how are you", "clinician"),
        ("my knee hurts when i walk", "patient"),
        ("on exam there is swelling of the right knee", "clinician"),
        ("i want you to start ibuprofen", "clinician"),
    ]
    full = clf.classify(visit)
    assert full == clf.classify(visit)
    # the label of an utterance never depends on what comes after it
    for k in range(1, len(visit) + 1):
        assert clf.classify(visit[:k]) == full[:k]
