"""The pure review rules: edits keep matching evidence, resolve flags, and never trust client flags."""

from __future__ import annotations

import pytest
from review_support import flagged_note, sample_segments

from scribe.models import (
    Delivery,
    DeliveryState,
    EncounterStatus,
    Evidence,
    Flag,
    FlagKind,
    Note,
    Sentence,
)
from scribe.review.edits import EditError, apply_edits, kept_evidence, resolve_flag, review_state
from scribe.review.models import ReviewState

SEGS = sample_segments()


@pytest.fixture
def note() -> Note:
    return flagged_note("enc-1", SEGS)


def _with(note: Note, sid: str, text: str | None) -> Note:
    sections = []
    for sec in note.sections:
        items = []
        for s in sec.sentences:
            if s.id != sid:
                items.append(s)
            elif text is not None:
                items.append(s.model_copy(update={"text": text}))
        sections.append(sec.model_copy(update={"sentences": items}))
    return note.model_copy(update={"sections": sections})


def _sentence(note: Note, sid: str) -> Sentence:
    return next(s for s in note.sentences() if s.id == sid)


def test_fixture_has_flags_of_several_kinds(note: Note) -> None:
    kinds = {f.kind for f in note.open_flags}
    assert {FlagKind.no_evidence, FlagKind.unsupported_number, FlagKind.unsupported_drug,
            FlagKind.negation_mismatch} <= kinds


def test_small_edit_keeps_evidence_and_marks_clinician_authored(note: Note) -> None:
    first = note.sentences()[0]
    assert first.evidence and not first.flags
    text = first.text.replace("three days", "3 days")
    new, changes = apply_edits(note, _with(note, first.id, text), SEGS)
    edited = _sentence(new, first.id)
    assert edited.text == text
    assert edited.clinician_authored
    assert edited.evidence == first.evidence  # still says what the patient said
    assert [c.action for c in changes] == ["edit"]
    assert changes[0].before == first.text and changes[0].after == text


def test_edit_that_changes_the_claim_drops_evidence(note: Note) -> None:
    first = note.sentences()[0]
    new, _ = apply_edits(note, _with(note, first.id, "Chest pain radiating to the left arm since Monday."), SEGS)
    assert _sentence(new, first.id).evidence == []


def test_kept_evidence_is_a_subset_of_the_old(note: Note) -> None:
    s = next(x for x in note.sentences() if len(x.evidence) > 1)
    kept = kept_evidence(s.text, s.evidence, SEGS)
    assert kept and all(e in s.evidence for e in kept)


def test_editing_a_flagged_sentence_resolves_its_flags_as_edited(note: Note) -> None:
    sid = "plan.x0"
    before = _sentence(note, sid)
    assert len(before.flags) == 3
    new, changes = apply_edits(note, _with(note, sid, "Discussed fluids and diet."), SEGS)
    after = _sentence(new, sid)
    assert all(f.resolved and f.resolution == "edited" for f in after.flags)
    assert len(after.flags) == 3  # the decisions are kept with the sentence
    assert [c.action for c in changes].count("resolve") == 3
    assert sid not in {s.id for s in new.sentences() if any(not f.resolved for f in s.flags)}


def test_client_cannot_clear_flags_or_forge_evidence(note: Note) -> None:
    sid = "plan.x0"
    forged_sections = []
    for sec in note.sections:
        items = []
        for s in sec.sentences:
            if s.id == sid:
                s = s.model_copy(update={
                    "flags": [],
                    "evidence": [Evidence(segment_id="seg-00002", start=0, end=1, quote="forged")],
                })
            items.append(s)
        forged_sections.append(sec.model_copy(update={"sentences": items}))
    forged = note.model_copy(update={"sections": forged_sections})
    new, changes = apply_edits(note, forged, SEGS)
    assert changes == []
    assert _sentence(new, sid).flags == _sentence(note, sid).flags
    assert _sentence(new, sid).evidence == []


def test_deleting_a_sentence_resolves_its_flags_as_deleted(note: Note) -> None:
    new, changes = apply_edits(note, _with(note, "objective.x0", None), SEGS)
    assert "objective.x0" not in {s.id for s in new.sentences()}
    assert changes[0].action == "delete" and changes[0].before == "Temperature 38.5 degrees."
    assert {c.resolution for c in changes[1:]} == {"deleted"}


def test_new_sentence_gets_an_id_and_linked_evidence(note: Note) -> None:
    sections = [sec.model_copy(update={"sentences": [*sec.sentences, Sentence(id="", text="Pain in the lower abdomen on the left side.")]})
                if sec.key == "assessment" else sec for sec in note.sections]
    new, changes = apply_edits(note, note.model_copy(update={"sections": sections}), SEGS)
    added = [c for c in changes if c.action == "add"]
    assert len(added) == 1
    s = _sentence(new, added[0].sentence_id)
    assert s.clinician_authored and s.id.startswith("assessment.")
    assert any(e.segment_id in ("seg-00011", "seg-00013") for e in s.evidence)


@pytest.mark.parametrize("mutate, message", [
    (lambda n: n.model_copy(update={"encounter_id": "other"}), "encounter"),
    (lambda n: n.model_copy(update={"sections": n.sections[:-1]}), "sections"),
    (lambda n: _with(n, n.sentences()[0].id, "   "), "empty"),
])
def test_bad_edits_are_refused_with_a_reason(note: Note, mutate, message: str) -> None:
    with pytest.raises(EditError, match=message) as info:
        apply_edits(note, mutate(note), SEGS)
    assert info.value.status == 400


def test_accept_needs_a_reason_and_resolves_only_that_flag(note: Note) -> None:
    with pytest.raises(EditError, match="reason"):
        resolve_flag(note, SEGS, sentence_id="plan.x0", flag=0, resolution="accepted", reason="")
    new, changes = resolve_flag(note, SEGS, sentence_id="plan.x0", flag=1, resolution="accepted",
                                reason="dose agreed by phone")
    flags = _sentence(new, "plan.x0").flags
    assert flags[1].resolved and flags[1].resolution == "accepted"
    assert flags[1].resolution_reason == "dose agreed by phone"
    assert not flags[0].resolved and not flags[2].resolved
    assert changes[0].reason == "dose agreed by phone"
    with pytest.raises(EditError, match="already resolved") as again:
        resolve_flag(new, SEGS, sentence_id="plan.x0", flag=1, resolution="accepted", reason="x")
    assert again.value.status == 409


def test_resolve_edited_and_deleted(note: Note) -> None:
    new, _ = resolve_flag(note, SEGS, sentence_id="assessment.x0", flag=0, resolution="edited",
                          text="Reports lower abdominal pain.")
    assert all(f.resolved for f in _sentence(new, "assessment.x0").flags)
    new, _ = resolve_flag(new, SEGS, sentence_id="objective.x0", flag=1, resolution="deleted")
    assert "objective.x0" not in {s.id for s in new.sentences()}
    with pytest.raises(EditError) as missing:
        resolve_flag(new, SEGS, sentence_id="nope", flag=0, resolution="deleted")
    assert missing.value.status == 404


def test_guard_rerun_keeps_resolved_flags(note: Note) -> None:
    accepted, _ = resolve_flag(note, SEGS, sentence_id="objective.x0", flag=0, resolution="accepted",
                               reason="measured at triage")
    # an unrelated edit re-runs the guard over the whole note: the acceptance survives
    first = accepted.sentences()[0]
    new, _ = apply_edits(accepted, _with(accepted, first.id, first.text + " Worse today."), SEGS)
    f = _sentence(new, "objective.x0").flags[0]
    assert f.resolved and f.resolution_reason == "measured at triage"


def _d(state: DeliveryState) -> Delivery:
    return Delivery(id="d1", encounter_id="e", target="fhir", state=state)


@pytest.mark.parametrize("args, expected", [
    ((EncounterStatus.recording, False, False, None), ReviewState.recording),
    ((EncounterStatus.transcribed, False, False, None), ReviewState.drafting),
    ((EncounterStatus.drafting, True, False, None), ReviewState.drafting),
    ((EncounterStatus.draft_ready, True, False, None), ReviewState.draft_ready),
    ((EncounterStatus.signed, True, True, _d(DeliveryState.queued)), ReviewState.signed),
    ((EncounterStatus.signed, True, True, _d(DeliveryState.delivered)), ReviewState.delivered),
    ((EncounterStatus.signed, True, True, _d(DeliveryState.failed)), ReviewState.failed),
    ((EncounterStatus.failed, False, False, None), ReviewState.failed),
    ((EncounterStatus.signed, True, False, _d(DeliveryState.delivered)), ReviewState.draft_ready),  # amending
])
def test_review_state(args, expected) -> None:
    status, has_draft, signed_current, delivery = args
    assert review_state(status, has_draft=has_draft, signed_current=signed_current, delivery=delivery) is expected


def test_flag_model_roundtrip_unchanged_by_review(note: Note) -> None:
    new, changes = apply_edits(note, note, SEGS)
    assert changes == [] and new == note
    assert isinstance(new.sentences()[0].flags, list) and Flag
