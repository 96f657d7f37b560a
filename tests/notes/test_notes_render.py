"""Rendering is deterministic and shows evidence and flags on request; notes serialise
losslessly."""

from __future__ import annotations

from datetime import datetime, timezone

from scribe.models import Evidence, Flag, FlagKind, Note, Section, Sentence
from scribe.notes.dialogue import segments_from_turns
from scribe.notes.extractive import draft
from scribe.notes.render import render_markdown, render_text

NOTE = Note(
    encounter_id="e1",
    created_at=datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    omissions=["medication: lisinopril 20 mg daily (current) [seg-00009]"],
    sections=[
        Section(
            key="subjective",
            title="Subjective",
            sentences=[
                Sentence(
                    id="s1",
                    text="Denies fever and chills.",
                    evidence=[
                        Evidence(
                            segment_id="seg-00003", start=1, end=2, quote="have you had a fever or chills ?"
                        ),
                        Evidence(segment_id="seg-00004", start=2, end=3, quote="no ."),
                    ],
                ),
                Sentence(
                    id="s2",
                    text="Pain is 8/10 *sharp* [left].",
                    evidence=[],
                    flags=[
                        Flag(kind=FlagKind.no_evidence, message="This sentence has no transcript evidence."),
                        Flag(
                            kind=FlagKind.unsupported_number,
                            message="old",
                            resolved=True,
                            resolution="accepted",
                        ),
                    ],
                ),
            ],
        ),
        Section(key="objective", title="Objective"),
    ],
)


def test_plain_text():
    out = render_text(NOTE)
    assert (
        out
        == "SOAP note\n\nSUBJECTIVE\n- Denies fever and chills.\n- Pain is 8/10 *sharp* [left].\n\nOBJECTIVE\nNothing recorded.\n"
    )
    full = render_text(NOTE, evidence=True, flags=True)
    assert "- Denies fever and chills. [seg-00003, seg-00004]" in full
    assert "[no evidence]" in full
    assert "! no_evidence: This sentence has no transcript evidence." in full
    assert "old" not in full  # resolved flags are not shown
    assert full.rstrip().endswith("- medication: lisinopril 20 mg daily (current) [seg-00009]")


def test_markdown():
    md = render_markdown(NOTE, evidence=True, flags=True)
    assert md.startswith("# SOAP note\n\n## Subjective\n\n")
    assert "- Denies fever and chills. `[seg-00003, seg-00004]`" in md
    assert r"Pain is 8/10 \*sharp\* \[left\]." in md
    assert "  - ⚠ **no_evidence**: This sentence has no transcript evidence." in md
    assert "*Nothing recorded.*" in md and "## Not in the note" in md
    assert "## Not in the note" not in render_markdown(NOTE)


def test_deterministic_and_independent_of_creation_time():
    later = NOTE.model_copy(update={"created_at": datetime(2030, 1, 1, tzinfo=timezone.utc)})
    for fn in (render_text, render_markdown):
        assert (
            fn(NOTE, evidence=True, flags=True)
            == fn(NOTE, evidence=True, flags=True)
            == fn(later, evidence=True, flags=True)
        )


def test_drafted_note_round_trips_through_json():
    segs = segments_from_turns(
        [
            {"speaker": "doctor", "text": "Any chest pain?"},
            {"speaker": "patient", "text": "No."},
            {"speaker": "doctor", "text": "Continue lisinopril 20 mg daily."},
        ]
    )
    note = draft(segs, encounter_id="e2")
    assert Note.model_validate_json(note.model_dump_json()) == note
    assert render_text(note, evidence=True).splitlines()[3] == "- Denies chest pain. [seg-00000, seg-00001]"
