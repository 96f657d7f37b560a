"""Instructions a note gives must have been given; commands to a dictation assistant are not
the visit (``scribe/notes/instructions.py``). The examples are written for these tests; the
failures they stand for were seen on ACI-Bench dev notes written by the packaged model."""

from __future__ import annotations

import pytest

from scribe.notes.instructions import instruction_family, meta_commands, unsupported_instruction, without_meta_commands

FINALIZE = ("all right . hey , dragon , order the medications and procedures discussed , and finalize the "
            "report . okay , come with me and we'll get you checked out .")


@pytest.mark.parametrize(
    "said, left",
    [
        (FINALIZE, "all right . okay , come with me and we'll get you checked out ."),
        ("hey dragon, finalize the note.", ""),
        ("Hey, Dragon, show me the chest x-ray. It shows mild fluid in both bases.", "It shows mild fluid in both bases."),
        ("hey , dragon ? okay , your labs look good .", "okay , your labs look good ."),
        ("hey dragon ? show me the diabetes labs . so your a1c is 8 .", "so your a1c is 8 ."),
        ("okay dragon, please sign the note", ""),
        ("all right . finalize report , dragon .", "all right ."),  # ACI dev D2N072
    ],
)
def test_navigation_and_closing_commands_are_not_the_visit(said, left):
    assert meta_commands(said)
    assert without_meta_commands(said) == left


@pytest.mark.parametrize(
    "said",
    [
        "hey dragon , order amoxicillin , 500 milligrams , three times a day for 10 days .",  # the plan itself
        "hey dragon , order an echocardiogram .",
        "we'll show you the exercises in physical therapy .",  # no wake word: the visit
        "the dragon fruit gave me a rash .",
        "i was bitten while watching the komodo , dragon .",  # not a command
    ],
)
def test_commands_that_carry_content_and_ordinary_speech_stay(said):
    assert meta_commands(said) == []
    assert without_meta_commands(said) == said


@pytest.mark.parametrize(
    "sentence, family",
    [
        ("Return if chest pain or shortness of breath occurs.", "return_precautions"),
        ("Seek medical attention if symptoms worsen.", "return_precautions"),
        ("Follow up in 2 weeks.", "follow_up"),
        ("Patient education on the use of crutches.", "education"),
        ("Counseled on smoking cessation.", "education"),
        ("Refer to orthopedics.", "referral"),
        ("Monitor chest x-ray and echocardiogram regularly.", "monitoring"),
        ("Record blood pressure readings at home.", "monitoring"),
        ("Order an MRI of the right knee.", "order"),
        ("Return to work in 2 weeks.", None),  # not a return precaution
        ("Increase Lasix to 80 mg daily.", None),  # a medication change: the guard's checks
        ("Knee brace and crutches for the next few days.", None),
    ],
)
def test_instruction_families(sentence, family):
    fam = instruction_family(sentence)
    assert (fam.name if fam else None) == family


def test_an_instruction_needs_the_clinicians_words_for_it():
    asked = ["okay , and any problems breathing ? do you feel short of breath ?"]
    assert unsupported_instruction("Return if chest pain or shortness of breath occurs.", asked) == "return_precautions"
    told = ["if the pain gets worse or you feel short of breath , call us or go to the emergency room ."]
    assert unsupported_instruction("Return if chest pain or shortness of breath occurs.", told) is None
    assert unsupported_instruction("Follow up in 2 weeks.", ["i'll see you back in two weeks ."]) is None
    assert unsupported_instruction("Follow up in 2 weeks.", ["your knee looks swollen ."]) == "follow_up"
    assert unsupported_instruction("Follow up as needed.", ["let's see how it is in a couple of weeks ."]) is None
    history = ["he presented complaining of worsening headaches over the past few months ."]  # ACI dev D2N074
    assert unsupported_instruction("Scheduled for a follow-up appointment.", history) == "follow_up"
    assert unsupported_instruction("Refer to physical therapy.", ["i want you to see a physical therapist ."]) is None
    assert unsupported_instruction("Refer to cardiology.", ["your heart sounds fine ."]) == "referral"
    # ACI dev D2N068: "Monitor chest x-ray and echocardiogram regularly." citing the doctor reading them out
    shown = ["so , looking here at the results of your chest x-ray , it does look like you have a little bit of fluid"]
    assert unsupported_instruction("Monitor chest x-ray and echocardiogram regularly.", shown) == "monitoring"
    # ACI dev D2N068: "advised to monitor their heart function and leaky valve" citing the echo read out
    echo = ["this shows that the pumping function of your heart is a little bit reduced at 45 % , and it also "
            "shows that leaky valve . we should talk about that ."]
    assert unsupported_instruction("Advised to monitor heart function and the leaky valve.", echo) == "monitoring"
    # ACI dev D2N070: "logan" is not "log"
    intro = ["so logan is a 58 year old male , with a past medical history significant for diabetes type 2 , "
             "hypertension , osteoarthritis , who presents today with some back pain ."]
    assert unsupported_instruction("Encourage the patient to monitor their symptoms.", intro) == "monitoring"
    assert unsupported_instruction("Monitor blood pressure at home.",
                                   ["i want you to continue to record your blood pressures at home"]) is None
    # a navigation command is not an order
    assert unsupported_instruction("Order the medications and procedures discussed.",
                                   ["hey , dragon , order the medications and procedures discussed ."]) == "order"
    assert unsupported_instruction("A sentence giving no instruction.", []) is None


def test_a_follow_up_interval_is_the_one_said_with_the_follow_up():
    """ACI dev D2N069: "come back in about a week" and, in the next line, "a two week supply"
    of motrin; the model wrote "Follow-up in 2 weeks"."""
    said = ["we'll have you come back in about a week and see how you're doing , and if it's not better , "
            "we'll get an mri at that time .",
            "i'm going to recommend we give you some motrin , 800 milligrams . uh , and we'll give you about a two "
            "week supply ."]
    assert unsupported_instruction("Follow-up in 2 weeks to assess the sprain.", said) == "follow_up_interval"
    assert unsupported_instruction("Follow up to see how the knee is doing.", said) is None
    assert unsupported_instruction("Follow up in 2 weeks.", ["come back in two weeks and we'll recheck it ."]) is None
    assert unsupported_instruction("Return in 3 months.", ["i'll see you back in three months ."]) is None
    assert unsupported_instruction("Return in 6 months.", ["i'll see you back in three months ."]) == \
        "return_precautions_interval"


def test_todays_visit_named_a_follow_up_sets_no_visit_to_come():
    """ACI dev D2N068 (sessions 10 and 13): "Follow-up scheduled." cited only "… who presents
    today for follow-up of his chronic problems"."""
    opening = ["so , brian is a 58 year old male with a past medical history significant for congestive heart "
               "failure and hypertension , who presents today for follow-up of his chronic problems ."]
    assert unsupported_instruction("Follow-up scheduled.", opening) == "follow_up"
    assert unsupported_instruction("Follow-up scheduled.", ["he is here for his follow-up visit ."]) == "follow_up"
    # a follow-up set for later, also in a line that names today's
    assert unsupported_instruction("Follow up in 3 months.",
                                   ["she is here for a three-month follow-up . i will see you back in three months ."]) is None
    assert unsupported_instruction("Follow-up in 2 weeks.", ["we will follow up in two weeks ."]) is None
