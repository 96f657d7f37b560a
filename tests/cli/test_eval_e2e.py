"""``scribe eval e2e``: a recording through the live pass, the labeller and the record pass into
the note, scored against the same writer's note from the reference dialogue. Real
faster-whisper, the real speaker encoder, the extractive writer (the llama path is measured by
the command itself, see docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribe.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("isolated_cli")]
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "synth_dialogue_dev_01.flac"


def test_a_recording_is_drafted_from_the_transcript_of_record_and_scored(tmp_path, capsys):
    out, notes = tmp_path / "e2e.json", tmp_path / "notes"
    assert main(["eval", "e2e", str(SAMPLE), "--writer", "extractive", "--out", str(out),
                 "--save-notes", str(notes)]) == 0
    [r] = json.loads(out.read_text())
    assert r["recording"] == SAMPLE.stem and r["record_segments"] > 10 and r["live_segments"] > 10
    # the espeak voices through tiny.en lose words, but most of what the note says survives
    assert 0.4 < r["rouge1"] < 1.0 and 0.3 < r["fact_recall"] <= 1.0
    assert r["audio_note"]["evidence_linked_pct"] == 100.0 and r["audio_note"]["sentences"] >= 3
    heard = (notes / f"e2e_{SAMPLE.stem}.from-audio.md").read_text()
    said = (notes / f"e2e_{SAMPLE.stem}.from-reference-dialogue.md").read_text()
    assert "`[rec-" in heard  # drafted from the record pass, as the server drafts
    assert "`[seg-" in said
    assert "end to end" in capsys.readouterr().out


def test_a_recording_without_its_manifest_is_a_clear_error(tmp_path, capsys):
    lone = tmp_path / "lone.flac"
    lone.write_bytes(SAMPLE.read_bytes())
    assert main(["eval", "e2e", str(lone), "--writer", "extractive"]) == 2
    assert "manifest" in capsys.readouterr().err
