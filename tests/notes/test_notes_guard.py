"""The evidence guard, rule by rule: what must be flagged and what must not.

The transcript excerpt is from ACI-Bench encounter D2N068 (dev split), the visit on which a
small packaged LM invented vitals, wrote "denies chest pain" after the patient reported cramps,
listed a changed Lasix dose as current and invented a follow-up interval. ACI-Bench: Yim et al.,
Sci Data 10, 586 (2023), https://github.com/wyim/aci-bench, CC BY 4.0; turns copied verbatim,
renumbered. The "start you on some lasix 40 milligrams" line is from ACI-Bench train.
"""

from __future__ import annotations

import pytest

from scribe.models import (
    Evidence,
    Flag,
    FlagKind,
    Note,
    Section,
    Segment,
    Sentence,
    Speaker,
    Word,
)
from scribe.notes.dialogue import segments_from_turns
from scribe.notes.facts import extract_facts
from scribe.notes.guard import check_note, link_evidence, omissions, strip_citations
from scribe.notes.templates import load_template

TURNS = [
    (
        "doctor",
        "so , brian is a 58 year old male with a past medical history significant for congestive heart failure and hypertension , who presents today for follow-up of his chronic problems . so , brian , it's been a little while i've seen you .",
    ),  # 0
    ("doctor", "okay . all right . um , how long has that been going on for ?"),  # 1
    ("patient", "uh , probably since labor day , so about five weeks or so ."),  # 2
    (
        "doctor",
        "okay . all right . and , how about , you know , other symptoms , like , have you had a fever or chills ?",
    ),  # 3
    ("patient", "no ."),  # 4
    ("doctor", "okay . do you have any chest pain ?"),  # 5
    (
        "patient",
        "slight cramps . that seems to go away after about , maybe about an hour or so after i first feel it .",
    ),  # 6
    (
        "doctor",
        "hey , dragon ? show me the vital signs . so , looking at your vital signs here in the office , everything looks good . you know , your blood pressure and your heart rate and your oxygenation all look really good .",
    ),  # 7
    (
        "doctor",
        "okay ? so , for your first problem , your congestive heart failure , i think you're retaining fluid , and i wan na go ahead and increase your lasix to 80 mg once a day .",
    ),  # 8
    (
        "doctor",
        "so , i wan na go ahead and continue with the lisinopril 20 mg a day . i want you to continue to record your blood pressures at home , and report them to me in the patient portal if you see they're getting elevated , okay ?",
    ),  # 9
    (
        "doctor",
        "okay . um , i'm gon na be in touch with you after we get your test results , and we'll go from there , okay ?",
    ),  # 10
    (
        "doctor",
        "so , i'm gon na go ahead and start you on some lasix 40 milligrams once a day",
    ),  # 11 (ACI-Bench train)
    ("doctor", "your blood pressure today is one twenty over eighty ."),  # 12 (written for this test)
]
SEGS = segments_from_turns([{"speaker": s, "text": t} for s, t in TURNS])


def ev(*idx: int) -> list[Evidence]:
    return [
        Evidence(segment_id=SEGS[i].id, start=SEGS[i].start, end=SEGS[i].end, quote=SEGS[i].text) for i in idx
    ]


def check(text: str, evidence: list[Evidence] | None, section: str = "plan", segs=SEGS, **kw) -> list[Flag]:
    s = Sentence(id="s1", text=text, evidence=link_evidence(text, segs) if evidence is None else evidence)
    note = Note(encounter_id="e", sections=[Section(key=section, title=section.title(), sentences=[s])])
    return check_note(note, segs, **kw).sections[0].sentences[0].flags


def kinds(flags: list[Flag]) -> list[FlagKind]:
    return [f.kind for f in flags]


# ------------------------------------------------------------------ the measured failures


def test_invented_vitals_are_flagged():
    flags = check("BP 130/80, HR 70, SpO2 95%.", ev(7), "objective")
    assert kinds(flags) == [FlagKind.unsupported_number] * 3
    assert [f.span for f in flags] == ["130/80", "70", "95%"]
    assert "Nothing in the transcript states it" in flags[0].message


def test_denies_chest_pain_after_reported_cramps_is_flagged():
    flags = check("Denies chest pain.", ev(5, 6), "subjective")
    assert kinds(flags) == [FlagKind.negation_mismatch]
    assert "seg-00005" in flags[0].message and "reported" in flags[0].message
    # also when the writer cited nothing useful and the guard has to look at the transcript
    flags = check("The patient denies chest pain.", ev(0), "subjective")
    assert FlagKind.negation_mismatch in kinds(flags)


def test_new_lasix_listed_as_current_is_flagged():
    flags = check("Current medications: Lasix 40 mg daily.", ev(11), "subjective")
    assert kinds(flags) == [FlagKind.dose_status]
    assert "Lasix 40 mg" in flags[0].message and "new" in flags[0].message
    # the D2N068 form: an increased dose written as what the patient takes
    flags = check("He takes Lasix 80 mg once a day.", ev(8), "subjective")
    assert kinds(flags) == [FlagKind.dose_status]
    assert "changed" in flags[0].message


def test_invented_follow_up_interval_is_flagged():
    flags = check("Follow up in 2 weeks.", ev(10))
    assert kinds(flags) == [FlagKind.unsupported_number]
    assert flags[0].span == "2 weeks"


# ------------------------------------------------------------------ must not flag


@pytest.mark.parametrize(
    "text, idx, section",
    [
        ("Blood pressure 120/80.", (12,), "objective"),
        ("Denies fever or chills.", (3, 4), "subjective"),
        ("Increase Lasix to 80 mg once daily.", (8,), "plan"),
        ("Increase furosemide to eighty milligrams daily.", (8,), "plan"),
        ("Continue lisinopril 20 mg daily.", (9,), "plan"),
        ("Continue lisinopril twenty milligrams a day.", (9,), "plan"),
        ("Symptoms for about 5 weeks.", (2,), "subjective"),
        ("Reports chest pain on exertion, described as slight cramps.", (5, 6), "subjective"),
        ("58-year-old male with congestive heart failure and hypertension.", (0,), "subjective"),
        ("Start Lasix 40 mg once a day.", (11,), "plan"),
    ],
)
def test_supported_sentences_are_not_flagged(text, idx, section):
    assert check(text, ev(*idx), section) == []


def test_number_words_and_digits_agree_both_ways():
    segs = segments_from_turns([{"speaker": "doctor", "text": "take lisinopril 20 mg once a day"}])
    assert check("Lisinopril twenty milligrams daily.", None, segs=segs) == []
    segs = segments_from_turns(
        [{"speaker": "doctor", "text": "take lisinopril twenty milligrams once a day"}]
    )
    assert check("Lisinopril 20 mg daily.", None, segs=segs) == []


# ------------------------------------------------------------------ each rule


def test_no_evidence_variants():
    assert kinds(check("Patient is well.", [])) == [FlagKind.no_evidence]
    bad_id = [Evidence(segment_id="seg-09999", start=0, end=1, quote="x")]
    assert kinds(check("Patient is well.", bad_id)) == [FlagKind.no_evidence]
    wrong_quote = [Evidence(segment_id=SEGS[2].id, start=0, end=1, quote="since christmas")]
    flags = check("Symptoms for about five weeks.", wrong_quote)
    assert kinds(flags) == [FlagKind.no_evidence] and "not in seg-00002" in flags[0].message


def test_number_said_elsewhere_points_there():
    flags = check("Lisinopril 20 mg daily.", ev(8))
    assert FlagKind.unsupported_number in kinds(flags)
    assert any("seg-00009" in f.message for f in flags)


def test_a_number_said_of_a_drug_is_not_supported_for_something_else():
    """ACI dev D2N077: "Wear the brace for 6 hours a day." cited the doctor's "fifty milligrams
    of ultram every six hours" (the brace was for six weeks). The number is in the evidence,
    said of the Ultram."""
    segs = segments_from_turns([{"speaker": "doctor", "text": (
        "we're gon na brace your arm . we will in the meantime give you pain medication i wan na put you "
        "on fifty milligrams of ultram every six hours and then get you into physical therapy")}])
    cite = [Evidence(segment_id=segs[0].id, start=segs[0].start, end=segs[0].end, quote=segs[0].text)]
    flags = check("Wear the brace for 6 hours a day.", cite, segs=segs)
    assert kinds(flags) == [FlagKind.unsupported_number]
    assert flags[0].span == "6 hours" and "said of ultram in seg-00000" in flags[0].message
    flags = check("Take ibuprofen every 6 hours.", cite, segs=segs)
    assert FlagKind.unsupported_number in kinds(flags)  # (and ibuprofen is not named there)
    # the drug's own dose and frequency, by brand or generic name or as "the pain medication"
    for text in ("Ultram 50 mg every 6 hours.", "Tramadol 50 mg every 6 hours.",
                 "Take the pain medication every 6 hours."):
        assert check(text, cite, segs=segs) == [], text
    # a number also said of no drug in the cited lines stands
    segs = segments_from_turns([{"speaker": "doctor", "text": (
        "ultram fifty milligrams every six hours . keep the brace on for six hours a day")}])
    cite = [Evidence(segment_id=segs[0].id, start=segs[0].start, end=segs[0].end, quote=segs[0].text)]
    assert check("Wear the brace for 6 hours a day.", cite, segs=segs) == []


def test_a_relative_the_cited_lines_never_name_is_flagged():
    """ACI dev D2N071 drafted with the H&P template: "Ralph's father has been diagnosed with
    depression and has had a prior lobectomy." cited the patient's own history; no parent was
    ever mentioned in the visit. Every other word is in the cited line."""
    segs = segments_from_turns([
        {"speaker": "doctor", "text": "ralph is a 62-year-old male with a past medical history significant for "
                                      "depression and prior lobectomy as well as hypertension ."},
        {"speaker": "patient", "text": "my mom had diabetes , and both my parents had high blood pressure ."},
        {"speaker": "doctor", "text": "how has he been eating ?"},
        {"speaker": "patient", "text": "not great , he's been picky all week ."},
    ])

    def cite(*k: int) -> list[Evidence]:
        return [Evidence(segment_id=segs[i].id, start=segs[i].start, end=segs[i].end, quote=segs[i].text) for i in k]

    flags = check("Father has been diagnosed with depression and a prior lobectomy.", cite(0), segs=segs)
    assert kinds(flags) == [FlagKind.unsupported_relative]
    assert flags[0].span == "Father" and "seg-00000" in flags[0].message
    # named in the cited line, also as "mom", "parents", and "family" for any relative
    for text in ("Mother had diabetes.", "Both parents had high blood pressure.",
                 "Father had high blood pressure.", "Family history of diabetes."):
        assert FlagKind.unsupported_relative not in kinds(check(text, cite(1), segs=segs)), text
    assert FlagKind.unsupported_relative in kinds(check("Sister had diabetes.", cite(1), segs=segs))
    # the patient described, a kind of care: not a relative
    assert FlagKind.unsupported_relative not in kinds(check("Follow up with the family doctor for depression.", cite(0), segs=segs))
    # one who reports for the patient needs naming somewhere in the visit, not in every line
    assert FlagKind.unsupported_relative not in kinds(check("Mother reports he has been picky all week.", cite(3), segs=segs))
    alone = segs[2:]
    assert FlagKind.unsupported_relative in kinds(check("Mother reports he has been picky all week.", cite(3), segs=alone))
    # the question a cited answer answers names it (ACI dev D2N074: the model cited the answer)
    asked = segments_from_turns([
        {"speaker": "doctor", "text": "i see . anyone in your family have any history of diseases ?"},
        {"speaker": "patient", "text": "i was adopted so i really have no idea ."},
    ])
    answer = [Evidence(segment_id=asked[1].id, start=asked[1].start, end=asked[1].end, quote=asked[1].text)]
    assert check("The patient was adopted and does not know his family history.", answer, segs=asked) == []


def test_unsupported_drug_and_frequency():
    flags = check("Start metoprolol 25 mg daily.", ev(8))
    assert set(kinds(flags)) == {FlagKind.unsupported_drug, FlagKind.unsupported_number}
    assert any(f.span == "metoprolol" and "never names it" in f.message for f in flags)
    flags = check("Continue lisinopril 20 mg twice daily.", ev(9))
    assert kinds(flags) == [FlagKind.unsupported_number] and flags[0].span == "twice daily"


def test_negation_the_other_way_and_never_asked():
    flags = check("Reports fever.", ev(3, 4), "subjective")
    assert kinds(flags) == [FlagKind.negation_mismatch] and "absent" in flags[0].message
    flags = check("Denies headache.", ev(3, 4), "subjective")
    assert kinds(flags) == [FlagKind.negation_mismatch] and "never asks" in flags[0].message


def test_dose_status_reverse():
    flags = check("Start lisinopril 20 mg daily.", ev(9))
    assert kinds(flags) == [FlagKind.dose_status] and "current" in flags[0].message


def test_section_placement_of_a_medication_change():
    flags = check("Increase Lasix to 80 mg once daily.", ev(8), "subjective")
    assert kinds(flags) == [FlagKind.section_placement]
    assert check("Increase Lasix to 80 mg once daily.", ev(8), "plan") == []


def test_low_confidence_drug_word():
    def segs_with(p: float) -> list[Segment]:
        words = [
            Word(text=w, start=i * 0.3, end=i * 0.3 + 0.3, probability=p if w == "lasix" else 0.95)
            for i, w in enumerate("increase your lasix to 80 mg".split())
        ]
        return [
            Segment(
                id="seg-00000",
                index=0,
                start=0,
                end=2,
                text="increase your lasix to 80 mg",
                words=words,
                speaker=Speaker.clinician,
            )
        ]

    segs = segs_with(0.2)
    flags = check(
        "Increase Lasix to 80 mg.",
        [Evidence(segment_id="seg-00000", start=0, end=2, quote=segs[0].text)],
        segs=segs,
    )
    assert kinds(flags) == [FlagKind.low_confidence_word] and "0.20" in flags[0].message
    segs = segs_with(0.9)
    assert (
        check(
            "Increase Lasix to 80 mg.",
            [Evidence(segment_id="seg-00000", start=0, end=2, quote=segs[0].text)],
            segs=segs,
        )
        == []
    )


def test_degenerate_output():
    assert FlagKind.degenerate_output in kinds(check("See https://example.com for the plan.", ev(8)))
    assert FlagKind.degenerate_output in kinds(check("Lasix Lasix Lasix Lasix increase.", ev(8)))
    assert FlagKind.degenerate_output in kinds(check("to 80 mg to 80 mg to 80 mg daily", ev(8)))
    assert FlagKind.degenerate_output in kinds(check("Here is the SOAP note for the visit.", ev(8)))
    soap = load_template("soap")
    echo = "Use only what was said in the visit. Do not add vitals, doses, test results."
    assert FlagKind.degenerate_output in kinds(check(echo, ev(8), instructions=soap.instructions))
    # a true sentence in the shape of the prompt's example is not an echo of it
    example = "- The patient presents with a 4-day history of sore throat and a new cough. [2]"
    assert FlagKind.degenerate_output in kinds(check("The patient presents with a 4-day history of sore throat.",
                                                     ev(8), instructions=example))
    assert FlagKind.degenerate_output not in kinds(check("The patient presents with a 4-day history of right finger pain.",
                                                         ev(8), instructions=example))
    # ordinary sentences containing "here is a" or "note" are fine
    assert check("There is a little fluid; I think you're retaining fluid.", ev(8)) == []


def test_duplicate_sentence_is_flagged_once():
    a = Sentence(id="a", text="Increase Lasix to 80 mg once daily.", evidence=ev(8))
    b = Sentence(id="b", text="Increase Lasix to 80 mg once daily.", evidence=ev(8))
    note = Note(encounter_id="e", sections=[Section(key="plan", title="Plan", sentences=[a, b])])
    out = check_note(note, SEGS).sections[0].sentences
    assert out[0].flags == [] and kinds(out[1].flags) == [FlagKind.degenerate_output]


def test_clinician_authored_sentences_are_not_checked():
    s = Sentence(id="c", text="BP 200/100 per nurse.", clinician_authored=True)
    note = Note(encounter_id="e", sections=[Section(key="objective", title="Objective", sentences=[s])])
    assert check_note(note, SEGS).sections[0].sentences[0].flags == []


def test_citations_inside_the_text_are_not_numbers():
    assert strip_citations("Increase Lasix to 80 mg daily [seg-00008].") == "Increase Lasix to 80 mg daily."
    assert check("Increase Lasix to 80 mg once daily [seg-00008].", ev(8)) == []


# ------------------------------------------------------------------ idempotence, omissions


def test_idempotent_and_resolutions_survive():
    s = Sentence(id="s", text="Follow up in 2 weeks.", evidence=ev(10))
    note = Note(encounter_id="e", sections=[Section(key="plan", title="Plan", sentences=[s])])
    once = check_note(note, SEGS)
    assert check_note(once, SEGS) == once
    flag = once.sections[0].sentences[0].flags[0]
    resolved = flag.model_copy(
        update={"resolved": True, "resolution": "accepted", "resolution_reason": "said at the door"}
    )
    sent = once.sections[0].sentences[0].model_copy(update={"flags": [resolved]})
    again = check_note(
        once.model_copy(update={"sections": [Section(key="plan", title="Plan", sentences=[sent])]}), SEGS
    )
    assert again.sections[0].sentences[0].flags == [resolved]
    assert again.open_flags == []
    # an edit that removes the problem drops the stale unresolved flag
    edited = (
        once.sections[0]
        .sentences[0]
        .model_copy(update={"text": "We will be in touch after the test results."})
    )
    fixed = check_note(
        once.model_copy(update={"sections": [Section(key="plan", title="Plan", sentences=[edited])]}), SEGS
    )
    assert fixed.open_flags == []


def test_omissions_list_uncovered_facts():
    facts = extract_facts(SEGS)
    empty = Note(encounter_id="e", sections=[Section(key="plan", title="Plan")])
    missing = omissions(empty, facts)
    assert any("lisinopril 20 mg" in m for m in missing)
    assert any("no fever" in m and "seg-00003" in m for m in missing)
    assert any("chest pain" in m for m in missing)
    covered = Note(
        encounter_id="e",
        sections=[
            Section(
                key="plan",
                title="Plan",
                sentences=[Sentence(id="x", text="Continue lisinopril 20 mg daily.", evidence=ev(9))],
            )
        ],
    )
    assert not any("lisinopril" in m for m in omissions(covered, facts))
    assert check_note(empty, SEGS).omissions == missing


# ------------------------------------------------------------------ evidence linking


def test_link_evidence_exact_quotes_and_anchors():
    evs = link_evidence("Continue lisinopril twenty milligrams daily.", SEGS)
    assert [e.segment_id for e in evs] == ["seg-00009"]
    seg = SEGS[9]
    assert evs[0].quote in seg.text and evs[0].quote.startswith(
        "so , i wan na go ahead and continue with the lisinopril"
    )
    assert seg.start <= evs[0].start <= evs[0].end <= seg.end
    both = link_evidence("Increase Lasix to 80 mg daily; continue lisinopril 20 mg daily.", SEGS)
    assert {e.segment_id for e in both} == {"seg-00008", "seg-00009"}
    assert link_evidence("The weather in Paris was lovely.", SEGS) == []
    assert link_evidence("", SEGS) == [] and link_evidence("Lasix 80 mg", []) == []


def test_link_evidence_uses_word_times():
    words = [
        Word(text=w, start=10 + i, end=10.5 + i, probability=0.9)
        for i, w in enumerate("Hello there. Take lasix 40 mg daily.".split())
    ]
    seg = Segment(
        id="seg-00000", index=0, start=10, end=17, text="Hello there. Take lasix 40 mg daily.", words=words
    )
    (e,) = link_evidence("Lasix 40 mg daily.", [seg])
    assert e.quote == "Take lasix 40 mg daily." and (e.start, e.end) == (12, 16.5)


def test_a_confirmed_current_medicine_written_as_a_new_prescription_is_flagged():
    # ACI-Bench dev D2N069 (CC BY 4.0): the patient already takes digoxin (named in the
    # doctor's question, confirmed in the answer); a draft wrote "Prescribe digoxin …" unflagged
    segs = segments_from_turns([{"speaker": who, "text": text} for who, text in [
        ("doctor", "okay , and are you taking any medications for that ?"),
        ("patient", "yeah , i am . um , begins with a d."),
        ("doctor", "uh , digoxin ?"), ("patient", "that's it . yeah , that's it .")]])
    evidence = [Evidence(segment_id=s.id, start=s.start, end=s.end, quote=s.text) for s in segs[2:]]
    flags = check("Prescribe digoxin for atrial fibrillation.", evidence, segs=segs)
    assert kinds(flags) == [FlagKind.dose_status] and "current" in flags[0].message
    assert check("Continue digoxin.", evidence, segs=segs) == []
