"""Draft persistence: every saved version kept, the latest returned, who saved it recorded,
and the schema migrated once beside the store's own."""

from __future__ import annotations

import pytest
from notes_support import short_segments

from scribe.models import Sentence
from scribe.notes.extractive import draft
from scribe.notes.repo import NoteRepo
from scribe.store import Store

pytest_plugins = ["pg_support"]  # store_url: SQLite and PostgreSQL


def test_round_trip_and_versions(store_url):
    store = Store(store_url)
    repo = NoteRepo(store)
    note = draft(short_segments(), encounter_id="enc-1")
    assert repo.latest("enc-1") is None and repo.versions("enc-1") == []
    assert repo.save_draft(note, actor="writer:extractive") == 1
    assert repo.latest("enc-1") == note  # lossless

    edited = note.model_copy(deep=True)
    edited.sections[0].sentences.append(Sentence(id="c1", text="Clinician addendum.", clinician_authored=True))
    assert repo.save_draft(edited, actor="clinician:dr-lee") == 2
    assert repo.latest("enc-1") == edited
    assert repo.get("enc-1", 1) == note

    vs = repo.versions("enc-1")
    assert [(v.version, v.actor) for v in vs] == [(1, "writer:extractive"), (2, "clinician:dr-lee")]
    assert vs[0].saved_at <= vs[1].saved_at and vs[0].saved_at.tzinfo is not None
    assert vs[1].note == edited and vs[0].writer == "extractive" and vs[0].template == "soap"
    # another encounter has its own numbering
    other = note.model_copy(update={"encounter_id": "enc-2"})
    assert repo.save_draft(other, actor="writer:extractive") == 1
    store.close()

    # reopening: data survives, migration is not re-applied
    store = Store(store_url)
    repo = NoteRepo(store)
    assert [v.version for v in repo.versions("enc-1")] == [1, 2]
    assert store.db.execute("SELECT version FROM component_versions WHERE component='notes'").fetchone()[0] == 1
    store.close()


def test_save_composes_into_an_outer_transaction(store_url):
    store = Store(store_url)
    repo = NoteRepo(store)
    note = draft(short_segments(), encounter_id="enc-1")
    with pytest.raises(RuntimeError), store.tx():
        repo.save_draft(note, actor="writer:extractive")
        raise RuntimeError("the caller's other write failed")
    assert repo.latest("enc-1") is None  # rolled back with the caller's transaction
    store.close()


def test_refuses_a_note_without_encounter_or_actor(tmp_path):
    store = Store(tmp_path / "s.db")
    repo = NoteRepo(store)
    note = draft(short_segments(), encounter_id="enc-1")
    with pytest.raises(ValueError, match="encounter_id"):
        repo.save_draft(note.model_copy(update={"encounter_id": ""}), actor="x")
    with pytest.raises(ValueError, match="actor"):
        repo.save_draft(note, actor="")
    store.close()
