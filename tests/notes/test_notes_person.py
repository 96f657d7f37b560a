"""A plan line in the voice it was said to the patient, written in the note's voice (``notes.person``)."""

from __future__ import annotations

import pytest

from scribe.notes.person import third_person
from scribe.notes.register import register_issues


@pytest.mark.parametrize(
    "said, male, unknown",
    [
        # ACI dev D2N068: the plan the model wrote, refused for "you"/"me" (4 of its 5 lines)
        ("Weigh yourself every day.", "Instructed to weigh himself every day.",
         "Instructed to weigh themselves every day."),
        ("Call me if you're gaining more weight.", "Instructed to call the clinic if he is gaining more weight.",
         "Instructed to call the clinic if they're gaining more weight."),
        ("Call the doctor if you gain more weight.", "Instructed to call the doctor if he gains more weight.",
         "Instructed to call the doctor if they gain more weight."),
        ("Order a refill of prozac, 20 milligrams daily from a pharmacy of your choice.",
         "Order a refill of prozac, 20 milligrams daily from a pharmacy of his choice.",
         "Order a refill of prozac, 20 milligrams daily from a pharmacy of their choice."),
        # the clinician's own voice
        ("I'll order an echocardiogram.", "Will order an echocardiogram.", "Will order an echocardiogram."),
        ("I want you to take ibuprofen 600 mg as needed.", "Instructed to take ibuprofen 600 mg as needed.",
         "Instructed to take ibuprofen 600 mg as needed."),
        ("You can continue the lisinopril 20 mg daily.", "May continue the lisinopril 20 mg daily.",
         "May continue the lisinopril 20 mg daily."),
        ("We will see you back in 2 weeks.", "Will see him back in 2 weeks.", "Will see them back in 2 weeks."),
        ("Let me know if you notice any swelling.", "Instructed to let the clinic know if he notices any swelling.",
         "Instructed to let the clinic know if they notice any swelling."),
        ("If you don't feel better, come back.", "If he doesn't feel better, come back.",
         "If they don't feel better, come back."),
    ],
)
def test_the_plan_in_the_notes_voice(said, male, unknown):
    assert third_person(said, "male") == male
    assert third_person(said, None) == unknown
    assert register_issues(male) == [] and register_issues(unknown) == []


def test_you_before_a_modal_is_the_subject():
    # ACI train: "… depending upon the results you may need an ultrasound of your liver"
    assert third_person("Will get those drawn today and then depending upon the results you may need an "
                        "ultrasound of your liver.", "male") == (
        "Will get those drawn today and then depending upon the results he may need an ultrasound of his liver.")
    assert third_person("I'll send a referral and they will call you within two days.", "male") == (
        "Will send a referral and they will call him within two days.")


def test_her_pronouns():
    assert third_person("Call me if your pain gets worse.", "female") == "Instructed to call the clinic if her pain gets worse."
    assert third_person("Keep your leg elevated.", "female") == "Instructed to keep her leg elevated."


@pytest.mark.parametrize(
    "said",
    [
        "I think you have a sprain.",  # an opinion in the first person: not a plan line to voice
        "My plan is to order an MRI.",
        "If you 123 then call.",  # "you" before something that is not a verb: not guessed at
        "",
    ],
)
def test_what_it_cannot_put_right_is_left_refused(said):
    assert third_person(said, "male") is None
