"""Words the clinician can trust (issue 15, item 3): a drug name, dose or number that rests on a
word the recogniser was unsure of is flagged by the guard, the flag blocks signing like any
other until it is resolved, and the review app marks the unsure words in the transcript and the
evidence. The threshold (``LOW_CONFIDENCE_WORD``) is measured by
``scripts/bench_word_confidence.py`` (docs/benchmarks.md); these tests hold for any threshold
between 0.2 and 0.9.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from review_support import CLINICIAN, make_settings, seed_encounter
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import OptionList, Static

from scribe.models import (
    LOW_CONFIDENCE_WORD,
    EncounterStatus,
    Evidence,
    FlagKind,
    Note,
    Section,
    Segment,
    Sentence,
    Speaker,
    Word,
)
from scribe.notes.guard import LOW_CONFIDENCE, check_note

pytestmark = pytest.mark.timeout(60)

SAID = "okay we will start apixaban five milligrams twice a day and see you in 2 weeks"


def segment(probabilities: dict[str, float] | None = None, text: str = SAID, index: int = 0,
            start: float = 10.0) -> Segment:
    """A clinician's segment whose words all have p=0.95 except those named."""
    probabilities = probabilities or {}
    words = [Word(text=w, start=start + i * 0.4, end=start + i * 0.4 + 0.35, probability=probabilities.get(w, 0.95))
             for i, w in enumerate(text.split())]
    return Segment(id=Segment.make_id(index), index=index, start=start, end=words[-1].end, text=text, words=words,
                   speaker=Speaker.clinician)


def note_with(sentence: str, seg: Segment, quote: str | None = None) -> Note:
    quote = seg.text if quote is None else quote
    ev = Evidence(segment_id=seg.id, start=seg.start, end=seg.end, quote=quote)
    return Note(encounter_id="enc-lc", sections=[
        Section(key="plan", title="Plan", sentences=[Sentence(id="plan.0", text=sentence, evidence=[ev])])])


def low_flags(note: Note) -> list:
    return [f for f in note.sentences()[0].flags if f.kind is FlagKind.low_confidence_word]


def test_threshold_is_shared_and_in_range() -> None:
    assert LOW_CONFIDENCE == LOW_CONFIDENCE_WORD and 0.2 < LOW_CONFIDENCE_WORD < 0.9


def test_an_unsure_drug_name_is_flagged_and_a_sure_one_is_not() -> None:
    seg = segment({"apixaban": 0.2})
    checked = check_note(note_with("Start apixaban 5 mg twice daily.", seg), [seg])
    flags = low_flags(checked)
    assert len(flags) == 1 and flags[0].span == "apixaban"
    assert "apixaban" in flags[0].message and "0.20" in flags[0].message and "listen" in flags[0].message
    assert "0:11.6" in flags[0].message  # where in the recording to listen

    seg = segment({"apixaban": 0.9})
    assert low_flags(check_note(note_with("Start apixaban 5 mg twice daily.", seg), [seg])) == []


def test_an_unsure_number_or_unit_is_flagged_in_its_spoken_form() -> None:
    for word in ("five", "milligrams"):
        seg = segment({word: 0.2})
        flags = low_flags(check_note(note_with("Start apixaban 5 mg twice daily.", seg), [seg]))
        assert [f.span for f in flags] == [word]
    seg = segment({"2": 0.2})
    assert [f.span for f in low_flags(check_note(note_with("Follow up in 2 weeks.", seg), [seg]))] == ["2"]


def test_only_the_words_that_speak_the_sentences_claims() -> None:
    # an unsure word that is not a drug, number or dose of the sentence: no flag
    seg = segment({"okay": 0.1, "see": 0.1})
    assert low_flags(check_note(note_with("Start apixaban 5 mg twice daily.", seg), [seg])) == []
    # the "2 weeks" the sentence does not claim: no flag
    seg = segment({"2": 0.1})
    assert low_flags(check_note(note_with("Start apixaban 5 mg twice daily.", seg), [seg])) == []
    # outside the quoted span: no flag
    seg = segment({"apixaban": 0.1}, text="apixaban was mentioned then start apixaban five milligrams")
    seg.words[-3] = seg.words[-3].model_copy(update={"probability": 0.95})
    quote = "start apixaban five milligrams"
    assert low_flags(check_note(note_with("Start apixaban 5 mg.", seg, quote), [seg])) == []
    seg.words[-3] = seg.words[-3].model_copy(update={"probability": 0.1})
    assert len(low_flags(check_note(note_with("Start apixaban 5 mg.", seg, quote), [seg]))) == 1
    # segments without words (typed, older transcripts) and threshold 0: nothing to judge
    seg = segment({"apixaban": 0.1}).model_copy(update={"words": []})
    assert low_flags(check_note(note_with("Start apixaban 5 mg twice daily.", seg), [seg])) == []
    seg = segment({"apixaban": 0.1})
    assert low_flags(check_note(note_with("Start apixaban 5 mg twice daily.", seg), [seg], low_confidence=0)) == []


def test_the_biased_drug_the_issue_names() -> None:
    """Hotword biasing once turned "allergic to penicillin" into "add apixaban": the drug is in
    the evidence (so no unsupported_drug flag), only its probability tells."""
    seg = segment({"apixaban": 0.31}, text="add apixaban")
    checked = check_note(note_with("Add apixaban.", seg), [seg])
    assert [f.kind for f in checked.sentences()[0].flags] == [FlagKind.low_confidence_word]


def test_a_low_confidence_drug_name_is_flagged_in_the_draft() -> None:
    """The default drafter (extractive) runs the guard: the draft's sentence carries the flag."""
    from scribe.notes import draft

    note = draft([segment({"apixaban": 0.2})], encounter_id="enc-lc")
    flagged = [s for s in note.sentences() if any(f.kind is FlagKind.low_confidence_word for f in s.flags)]
    assert flagged and "apixaban" in flagged[0].text and note.open_flags
    assert not [f for s in draft([segment()], encounter_id="enc-lc").sentences() for f in s.flags
                if f.kind is FlagKind.low_confidence_word]


def test_a_check_again_keeps_the_clinicians_decision() -> None:
    seg = segment({"apixaban": 0.2})
    checked = check_note(note_with("Start apixaban 5 mg twice daily.", seg), [seg])
    assert check_note(checked, [seg]) == checked  # idempotent


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from scribe.fhir.outbox import Outbox
    from scribe.notes.repo import NoteRepo
    from scribe.review.service import ReviewService
    from scribe.database import open_store

    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = make_settings(tmp_path, out_dir=tmp_path / "ehr-out")
    store = open_store(settings)
    try:
        yield store, ReviewService(store, NoteRepo(store), Outbox(store, targets=["directory"]))
    finally:
        store.close()


def test_the_flag_blocks_signing_until_resolved(service) -> None:
    from scribe.review.models import FlagResolution, SignRequest
    from scribe.review.service import ReviewError

    store, review = service
    seg = segment({"apixaban": 0.2})
    seed_encounter(store, "enc-lc", status=EncounterStatus.draft_ready, segments=[seg])
    review.save_generated("enc-lc", check_note(note_with("Start apixaban 5 mg twice daily.", seg), [seg]),
                          actor="scribe")
    view = review.draft("enc-lc")
    assert view.open_flags == 1
    with pytest.raises(ReviewError, match="1 flag still open") as err:
        review.sign("enc-lc", SignRequest(version=view.version, confirm=True), CLINICIAN)
    assert err.value.status == 409
    kinds = [f.kind for f in view.note.sentences()[0].flags]
    view = review.resolve("enc-lc", FlagResolution(base_version=view.version, sentence_id="plan.0",
                                                   flag=kinds.index(FlagKind.low_confidence_word),
                                                   resolution="accepted",
                                                   reason="Listened to the recording: apixaban 5 mg is right."),
                          CLINICIAN)
    assert view.open_flags == 0  # the re-check after resolving does not raise it again
    signed = review.sign("enc-lc", SignRequest(version=view.version, confirm=True), CLINICIAN)
    assert signed.signed.signed_by == CLINICIAN


# ------------------------------------------------------------------ the review app


class Host(App[None]):
    def __init__(self, pane) -> None:
        super().__init__()
        self.pane = pane

    def compose(self) -> ComposeResult:
        yield self.pane


def styled(text: Text, style: str) -> list[str]:
    return [text.plain[s.start : s.end] for s in text.spans if str(s.style) == style]


async def test_the_transcript_and_evidence_panes_mark_unsure_words() -> None:
    from tui.widgets import EvidencePane, TranscriptPane
    from tui.widgets.confidence import LOW_CONFIDENCE_STYLE

    unsure = segment({"apixaban": 0.2, "weeks": 0.3})
    sure = segment(index=1, start=20.0)
    plain = segment({"apixaban": 0.2}, index=2, start=30.0).model_copy(update={"words": []})

    transcript = TranscriptPane()
    async with Host(transcript).run_test(size=(120, 30)) as pilot:
        transcript.segments = (unsure, sure, plain)
        await pilot.pause()
        lines = transcript.query_one("#transcript", OptionList)
        bodies = [lines.get_option_at_index(i).prompt.body for i in range(3)]
        assert styled(bodies[0], LOW_CONFIDENCE_STYLE) == ["apixaban", "weeks"]
        assert styled(bodies[1], LOW_CONFIDENCE_STYLE) == []
        assert styled(bodies[2], LOW_CONFIDENCE_STYLE) == []  # no words: rendered as before

    evidence = EvidencePane()
    async with Host(evidence).run_test(size=(120, 30)) as pilot:
        evidence.segments = (unsure, sure)
        note = note_with("Start apixaban 5 mg twice daily.", unsure, quote="start apixaban five milligrams")
        evidence.sentence = note.sentences()[0]
        await pilot.pause()
        content = evidence.query_one("#evidence", Static).content
        assert isinstance(content, Text)
        assert styled(content, LOW_CONFIDENCE_STYLE) == ["apixaban"]  # "weeks" is outside the quote
