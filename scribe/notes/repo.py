"""Drafts in the store: every version of an encounter's note, who saved it and when.

    repo = NoteRepo(store)
    v = repo.save_draft(note, actor="writer:extractive")   # -> 1, 2, 3 … per encounter
    repo.latest("enc-1")                                     # -> Note | None
    repo.versions("enc-1")                                   # -> [NoteVersion(version, actor, saved_at, writer, note)]

Versions are append-only (a clinician's edit is a new version, never an overwrite), so the
review UI can show what changed and the audit trail can say who changed it. ``save_draft``
runs inside ``store.tx()``: a caller can compose it atomically with its own writes. The note is
stored as its lossless JSON, encrypted under the store's keyring when it has one (AAD: encounter
id + version); ``actor`` is an id ("clinician:dr-lee", "writer:openai"), never a
name typed by a user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..models import Note, utcnow
from ..store import Store
from ..trust.crypto import EncryptedColumn, Keyring, open_text, seal_text

MIGRATIONS = [
    """
    CREATE TABLE note_versions (
        encounter_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        actor TEXT NOT NULL,
        saved_at TEXT NOT NULL,
        writer TEXT NOT NULL,
        template TEXT NOT NULL,
        open_flags INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (encounter_id, version)
    );
    """,
]

ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn("note_versions", "data", ("encounter_id", "version"), text=True),
)
"""The PHI columns of these tables (the note's text), collected by ``scribe/database.py``
so that key rotation and the key check at open walk them."""

DRAFTS_TABLE = "note_versions"
"""Where drafts are kept: the retention purge deletes unsigned ones (``trust.consent``)."""
ENCOUNTER_TABLES: tuple[str, ...] = (DRAFTS_TABLE,)
"""Tables whose rows for an encounter consent withdrawal deletes (collected by ``scribe/database.py``)."""


@dataclass(frozen=True)
class NoteVersion:
    encounter_id: str
    version: int
    actor: str
    saved_at: datetime
    writer: str
    template: str
    open_flags: int
    note: Note


class NoteRepo:
    def __init__(self, store: Store):
        self.store = store
        store.migrate_component("notes", MIGRATIONS)

    def save_draft(self, note: Note, actor: str) -> int:
        """Append ``note`` as the next version of its encounter's draft; returns the version (1-based)."""
        if not note.encounter_id:
            raise ValueError("a note must carry its encounter_id to be saved")
        if not actor:
            raise ValueError("save_draft needs an actor (who or what wrote this version)")
        with self.store.tx() as db:
            if hasattr(self.store, "lock"):  # PostgreSQL: replicas saving at once get distinct versions
                self.store.lock(f"notes:{note.encounter_id}")
            row = db.execute(
                "SELECT coalesce(max(version), 0) FROM note_versions WHERE encounter_id = ?", (note.encounter_id,)
            ).fetchone()
            version = int(row[0]) + 1
            db.execute(
                "INSERT INTO note_versions (encounter_id, version, actor, saved_at, writer, template, open_flags, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    note.encounter_id, version, actor, utcnow().isoformat(), note.writer, note.template,
                    len(note.open_flags),
                    seal_text(self._keyring, note.model_dump_json(), "note_versions", "data", (note.encounter_id, version)),
                ),
            )
        return version

    @property
    def _keyring(self) -> Keyring | None:
        """The store's keyring (None: notes are stored in clear, e.g. a store opened keyless)."""
        return getattr(self.store, "keyring", None)

    def _note(self, encounter_id: str, version: int, data: str) -> Note:
        return Note.model_validate_json(open_text(self._keyring, data, "note_versions", "data", (encounter_id, version)))

    def latest(self, encounter_id: str) -> Note | None:
        row = self.store.db.execute(
            "SELECT version, data FROM note_versions WHERE encounter_id = ? ORDER BY version DESC LIMIT 1",
            (encounter_id,),
        ).fetchone()
        return self._note(encounter_id, row[0], row[1]) if row else None

    def get(self, encounter_id: str, version: int) -> Note | None:
        row = self.store.db.execute(
            "SELECT data FROM note_versions WHERE encounter_id = ? AND version = ?", (encounter_id, version)
        ).fetchone()
        return self._note(encounter_id, version, row[0]) if row else None

    def versions(self, encounter_id: str) -> list[NoteVersion]:
        """All versions, oldest first."""
        rows = self.store.db.execute(
            "SELECT encounter_id, version, actor, saved_at, writer, template, open_flags, data FROM note_versions "
            "WHERE encounter_id = ? ORDER BY version",
            (encounter_id,),
        ).fetchall()
        return [
            NoteVersion(r[0], r[1], r[2], datetime.fromisoformat(r[3]), r[4], r[5], r[6], self._note(r[0], r[1], r[7]))
            for r in rows
        ]


__all__ = ["MIGRATIONS", "NoteRepo", "NoteVersion"]
