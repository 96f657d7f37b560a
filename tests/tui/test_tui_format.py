"""How transcript lines name their speaker in the review app (pure formatting)."""

from __future__ import annotations

from scribe.models import Segment, Speaker
from tui.format import SPEAKER_STYLE, segment_prompt


def _line(speaker: Speaker):
    seg = Segment(id="seg-00001", index=1, start=62.5, end=65.0, text=" He wheezes at night. ", speaker=speaker)
    return segment_prompt(seg).body


def test_each_role_is_named_and_coloured_apart():
    styles = {}
    for role in (Speaker.clinician, Speaker.patient, Speaker.other):
        body = _line(role)
        assert body.plain == f"{role.value}: He wheezes at night."
        styles[role] = str(body.spans[0].style)
    assert styles[Speaker.other] == SPEAKER_STYLE[Speaker.other]
    assert len(set(styles.values())) == 3  # a visitor's line never looks like the patient's


def test_unlabelled_lines_have_no_speaker_prefix():
    assert _line(Speaker.unknown).plain == "He wheezes at night."


def test_the_app_edits_its_copy_of_the_note_with_the_review_librarys_functions():
    """The edits the app makes before ``PUT …/draft`` live once, beside the wire models, and are
    the ones the service's rules use (no copy in ``tui/``)."""
    import importlib.util

    from review_support import flagged_note, sample_segments

    from scribe.review import edits, models
    from tui.screens import encounter

    assert importlib.util.find_spec("tui.note_edits") is None
    assert edits.replace_sentence is models.replace_sentence
    assert encounter.with_text is models.with_text and encounter.with_sentence_after is models.with_sentence_after

    note = flagged_note("enc-e", sample_segments())
    ids = [s.id for s in note.sentences()]
    changed = models.with_text(note, ids[1], "Changed words.")
    assert [s.text for s in changed.sentences()][1] == "Changed words."
    assert [s.id for s in changed.sentences()] == ids and changed.sentences()[1].evidence == note.sentences()[1].evidence
    assert [s.id for s in models.with_text(note, ids[1], None).sentences()] == ids[:1] + ids[2:]
    assert models.with_text(note, "no-such-id", "x") == note
    added = models.with_sentence_after(note, ids[0], "New one.")
    assert [(s.id, s.text) for s in added.sentences()][1] == ("", "New one.")
    at_end = models.with_sentence_after(note, None, "Last one.")
    assert at_end.sections[-1].sentences[-1].text == "Last one." and len(at_end.sentences()) == len(ids) + 1
