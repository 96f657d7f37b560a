"""``scribe draft`` through ``scribe.cli.main``: transcript files in every accepted shape, an
encounter from the store, and one-line errors for what a user can fix."""

from __future__ import annotations

import json

import pytest
from notes_support import SHORT, short_segments

from scribe.cli import main
from scribe.models import Consent, Transcript
from scribe.notes.repo import NoteRepo
from scribe.config import Settings
from scribe.store import Store
from scribe.database import open_store


pytestmark = pytest.mark.usefixtures("isolated_cli")


def _transcript_file(tmp_path):
    p = tmp_path / "enc-7.transcript.json"
    p.write_text(Transcript(encounter_id="enc-7", segments=short_segments()).model_dump_json(), encoding="utf-8")
    return p


def test_draft_demo_transcript_prints_note_with_evidence(tmp_path, capsys):
    assert main(["draft", str(_transcript_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SOAP note")
    for heading in ("SUBJECTIVE", "OBJECTIVE", "ASSESSMENT", "PLAN"):
        assert heading in out
    bullets = [line for line in out.splitlines() if line.startswith("- ")]
    assert bullets and all(line.rstrip().endswith("]") and "[seg-" in line for line in bullets)
    assert "benzonatate 100 mg" in out


def test_draft_jsonl_turns_markdown_and_json(tmp_path, capsys):
    p = tmp_path / "visit.jsonl"
    p.write_text("\n".join(json.dumps({"speaker": s, "text": t}) for s, t in SHORT), encoding="utf-8")
    assert main(["draft", str(p), "--markdown", "--template", "progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# ") and "`[seg-" in out
    assert main(["draft", str(p), "--json"]) == 0
    note = json.loads(capsys.readouterr().out)
    assert note["encounter_id"] == "visit" and note["template"] == "soap"
    assert all(s["evidence"] for sec in note["sections"] for s in sec["sentences"])


def test_draft_encounter_from_store_and_save(tmp_path, capsys):
    store = open_store(Settings())  # the service's store: segments are encrypted (plaintext ones are refused)
    store.open_encounter("enc-9", clinician_id="dr-lee", patient_ref="Patient/1", consent=Consent(given=True),
                         language="en", sample_rate=16000)
    store.commit_segments("enc-9", short_segments(), committed_until=0)
    store.close()
    assert main(["draft", "enc-9", "--save"]) == 0
    assert "lisinopril" in capsys.readouterr().out
    store = open_store(Settings())  # the saved draft is encrypted under the data key
    vs = NoteRepo(store).versions("enc-9")
    store.close()
    assert [(v.version, v.actor) for v in vs] == [(1, "cli:extractive")]


def test_unknown_encounter_is_one_line_error(tmp_path, capsys):
    Store(tmp_path / "data" / "scribe.db").close()
    assert main(["draft", "enc-nope"]) == 2
    assert "no encounter 'enc-nope'" in capsys.readouterr().err


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    t = _transcript_file(tmp_path)
    bad = tmp_path / "broken.toml"
    bad.write_text('name = "broken"\ntitle = "Broken\n', encoding="utf-8")
    assert main(["draft", str(t), "--template", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.toml" in err and "TOML syntax error" in err

    assert main(["draft", str(t), "--template", "nonesuch"]) == 2
    assert "no template named 'nonesuch'" in capsys.readouterr().err

    j = tmp_path / "bad.jsonl"
    j.write_text('{"speaker": "doctor", "text": "hi"}\n{not json\n', encoding="utf-8")
    assert main(["draft", str(j)]) == 2
    assert "bad.jsonl:2: invalid JSON" in capsys.readouterr().err

    fr = tmp_path / "fr.transcript.json"
    fr.write_text(Transcript(encounter_id="fr", language="fr", segments=short_segments()).model_dump_json())
    assert main(["draft", str(fr)]) == 2
    assert "English only" in capsys.readouterr().err

    missing_lm = main(["draft", str(t), "--writer", "transformers", "--lm-model", str(tmp_path / "no-model")])
    assert missing_lm == 2
    assert "no note model" in capsys.readouterr().err


def test_empty_and_one_word_visits(tmp_path, capsys):
    empty = tmp_path / "empty.transcript.json"
    empty.write_text(Transcript(encounter_id="e").model_dump_json())
    assert main(["draft", str(empty)]) == 0
    cap = capsys.readouterr()
    assert "no speech" in cap.err and cap.out.count("Nothing recorded.") == 4
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"speaker": "patient", "text": "Hello."}))
    assert main(["draft", str(one)]) == 0
    assert capsys.readouterr().out.count("Nothing recorded.") == 4


def test_eval_notes_json(tmp_path, capsys):
    rec = {"id": "t/1", "dialogue": [{"speaker": s, "text": t} for s, t in SHORT],
           "reference_note": "Cough and sore throat for 3 days. Denies fever. Lisinopril 10 mg daily. "
                             "Start benzonatate 100 mg TID PRN."}
    f = tmp_path / "mini.jsonl"
    f.write_text(json.dumps(rec) + "\n")
    assert main(["eval", "notes", str(f), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    systems = {s["system"]: s for s in res["files"]["mini"]["systems"]}
    assert set(systems) == {"copy-transcript", "extractive"}
    ext = systems["extractive"]
    assert ext["evidence_linked_pct"] == 100.0 and ext["flagged_pct"] == 0.0
    assert ext["fact_recall"] > 50 and ext["stop_to_draft_s_mean"] is not None
    # each record's figures too, for each drafting system (a tail is traced to its records)
    (one,) = [r for r in res["records"] if r["system"] == "extractive"]
    assert one["id"] == "t/1" and one["file"] == "mini" and one["sentences"] > 0
    assert one["rouge1"] > 1 and one["stop_to_draft_s"] >= 0
