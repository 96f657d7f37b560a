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
