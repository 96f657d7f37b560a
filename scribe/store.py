"""The durable store: encounters, their audio frames and committed transcript segments.

SQLite is the embedded default (one file, WAL, ``synchronous=FULL`` so that an ``ack`` sent
after a commit survives a crash or power loss). The schema is versioned with ordered
migrations so later features (notes, sign-offs, audit log, outbox) add tables without
touching what is there.

``Store`` is synchronous and owned by one thread; ``AsyncStore`` runs every call on that
thread so the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import ValidationError

from .db import SQLITE, is_conflict, parse_target, redact
from .db import connect as connect_database
from .audio import SAMPLE_RATE, pcm16_to_float
from .models import Consent, Encounter, EncounterStatus, Segment, Speaker, utcnow
from .trust.crypto import (
    CryptoError,
    DecryptionError,
    EncryptedColumn,
    Keyring,
    PlaintextRefused,
    check_store_keys,
    open_bytes,
    open_text,
    seal_bytes,
    seal_text,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS: list[str] = [
    # 1: encounters, frames, segments
    """
    CREATE TABLE encounters (
        id TEXT PRIMARY KEY,
        clinician_id TEXT NOT NULL,
        patient_ref TEXT NOT NULL,
        language TEXT NOT NULL,
        sample_rate INTEGER NOT NULL,
        consent TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_seq INTEGER NOT NULL DEFAULT -1,
        samples_received INTEGER NOT NULL DEFAULT 0,
        committed_until INTEGER NOT NULL DEFAULT 0,
        segment_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX encounters_by_clinician ON encounters (clinician_id, created_at);
    CREATE TABLE frames (
        encounter_id TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        start_sample INTEGER NOT NULL,
        pcm BLOB NOT NULL,
        PRIMARY KEY (encounter_id, seq)
    );
    CREATE TABLE segments (
        encounter_id TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        id TEXT NOT NULL,
        start REAL NOT NULL,
        "end" REAL NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (encounter_id, idx)
    );
    """,
    # 2: range reads of audio by sample position stay O(log n) as a visit grows
    """
    CREATE INDEX frames_by_sample ON frames (encounter_id, start_sample);
    """,
    # 3: the record pass (scribe.asr.record): its segments, each with the window that wrote it,
    # and how far it has got; its segments replace the live ones before ``done_until`` (a sample)
    """
    CREATE TABLE record_segments (
        encounter_id TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        id TEXT NOT NULL,
        win INTEGER NOT NULL,
        start REAL NOT NULL,
        "end" REAL NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (encounter_id, idx)
    );
    CREATE TABLE record_pass (
        encounter_id TEXT PRIMARY KEY REFERENCES encounters (id) ON DELETE CASCADE,
        done_until INTEGER NOT NULL,
        segments INTEGER NOT NULL,
        windows INTEGER NOT NULL
    );
    """,
]

ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn("frames", "pcm", ("encounter_id", "seq"), text=False),
    EncryptedColumn("segments", "data", ("encounter_id", "idx"), text=True),
    EncryptedColumn("record_segments", "data", ("encounter_id", "idx"), text=True),
)
"""The core tables' PHI columns (audio and transcript). Each feature declares its own beside its
schema; ``scribe/database.py`` collects them all for rotation and the key check at open."""

ENCOUNTER_TABLES: tuple[str, ...] = ("frames", "segments", "record_segments", "record_pass")
"""The core tables whose rows for an encounter hold what its recording produced: consent
withdrawal deletes them (``trust.consent.apply_withdrawal``; ``scribe/database.py`` collects
every schema's)."""


class StoreError(Exception):
    """A store operation failed; the message names the encounter and the problem."""


class EncounterConflict(StoreError):
    """An encounter id was reused with a different clinician or patient."""


class FrameOrderError(StoreError):
    """Frames must be appended with consecutive sequence numbers."""


class DatabaseLocked(StoreError, sqlite3.OperationalError):
    """Another connection held the write lock longer than the busy timeout; nothing was written.

    Still an ``sqlite3.OperationalError`` so code written against sqlite3 keeps working."""


class StoreFull(StoreError, sqlite3.OperationalError):
    """The disk (or the database's size limit) is full; the failed write was rolled back whole."""


class StoreIOError(StoreError, sqlite3.OperationalError):
    """The operating system reported an I/O error on the database files."""


class TransactionConflict(StoreError):
    """PostgreSQL aborted the transaction (serialization failure or deadlock with another
    replica); everything was rolled back and the whole transaction may simply run again."""


MIGRATION_LOCK = "scribe:migrations"
"""Advisory-lock key held (PostgreSQL) while any schema migration runs."""


def _pg_error_types() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.Error,)


def _is_pg_error(exc: BaseException) -> bool:
    return isinstance(exc, _pg_error_types())


class CorruptRow(StoreError):
    """A stored row cannot be read back (damaged on disk or edited by hand). The message names
    the table, encounter and row, never the row's content (it may hold PHI)."""


class EncryptionKeyError(StoreError, ValueError):
    """The configured key cannot read this database (wrong key, missing retired key, or an
    encrypted database opened without a key). Names key ids, never keys or content. Also a
    ``ValueError`` so startup code that reports configuration errors reports this one."""


class Store:
    def __init__(self, path: str | Path, keyring: Keyring | None = None, *,
                 encrypted_columns: Sequence[EncryptedColumn] = ENCRYPTED_COLUMNS):
        """``path``: a SQLite file (a bare path or ``sqlite:///PATH``) or a ``postgresql://`` URL
        (``scribe.db``). ``self.db`` has ``sqlite3.Connection``'s surface on both: on SQLite it is
        the connection itself. ``encrypted_columns``: what the key check at open probes besides the
        recorded key ids (the core tables'; the composition passes every feature's too,
        ``scribe/database.py``)."""
        self.dialect, target = parse_target(path)
        self.path = Path(target) if self.dialect == SQLITE else redact(target)  # type: ignore[assignment]
        self.keyring = keyring
        self.audit_anchor_file: Path | None = None
        """Where ``trust.audit.AuditLog`` anchors this store's audit head (set by
        ``open_store`` from the settings; None: no automatic anchor, e.g. a bare test store)."""
        self.audit_anchor_every = 1
        """Anchor after every Nth committed audit entry (``trust.audit_anchor_every``)."""
        self._after_commit: list[Callable[[], None]] = []
        """Encrypts PHI columns (``ENCRYPTED_COLUMNS`` above); feature repositories use
        the store's keyring too. None: values are written and read in clear. With a keyring a
        value stored in clear is refused on read (``trust.crypto.PlaintextRefused``)."""
        if self.dialect == SQLITE and target != ":memory:" and not self.path.parent.exists():
            # A directory made for the database is private; an existing one is the operator's
            # choice (the data directory itself is made 0700 by trust.at_rest.open_keyed_store).
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._tx_depth = 0
            self.busy_timeout_s = 10.0
            self.database = connect_database(path, timeout=self.busy_timeout_s)
            self.db = self.database.raw if self.dialect == SQLITE else self.database
            self._migrate()
            if keyring is not None:
                check_store_keys(self, keyring, encrypted_columns)
        except StoreError:
            raise
        except CryptoError as exc:
            self.db.close()
            raise EncryptionKeyError(str(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open the database {self.path}: {exc}. If the file is corrupt, move it aside "
                "and restore the latest backup; scribe will not overwrite it."
            ) from None
        except Exception as exc:
            if not _is_pg_error(exc):
                raise
            raise StoreError(
                f"cannot open the database {self.path}: {str(exc).strip()}. Check the database URL, that the "
                "server is reachable and that the role may connect and create tables."
            ) from None

    # -- schema

    def _migrate(self) -> None:
        if self.dialect != SQLITE:
            # Replicas starting together: one migrates, the others wait and then find it done.
            with self._tx("migrating the core schema"):
                self.database.lock(MIGRATION_LOCK)
                self._migrate_core()
        else:
            self._migrate_core()

    def _migrate_core(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self.db.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        if current > len(MIGRATIONS):
            raise StoreError(
                f"the database {self.path} has schema version {current}, newer than this scribe "
                f"({len(MIGRATIONS)}); upgrade scribe"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            with self._tx():
                # executescript() would COMMIT on its own; run statement by statement so a
                # migration and its version row land together or not at all.
                for statement in self._statements(MIGRATIONS[version - 1]):
                    self.db.execute(statement)
                self.db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    @property
    def schema_version(self) -> int:
        return self.db.execute("SELECT max(version) FROM schema_version").fetchone()[0]

    class _Tx:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; re-entrant so that feature repositories (notes,
        outbox, audit) can compose their writes into one transaction: only the outermost
        ``with`` commits or rolls back.

        A locked database, a full disk or an I/O error becomes a ``StoreError`` subclass whose
        message names the database and what was being written, and the transaction is rolled
        back whole (SQLite may already have rolled it back itself after ``SQLITE_FULL``; a
        second ``ROLLBACK`` would then raise and hide the real error, so it is only sent while
        a transaction is open). Nothing half-written survives, so nothing can be acked that
        is not on disk.
        """

        def __init__(self, store: Store, what: str | None = None):
            self.store = store
            self.what = what

        def __enter__(self) -> sqlite3.Connection:
            if self.store._tx_depth == 0:
                try:
                    self.store.database.begin_write()
                except Exception as exc:
                    translated = self.store._translate(exc, self.what)
                    if translated is None:
                        raise
                    raise translated from exc
            self.store._tx_depth += 1
            return self.store.db

        def __exit__(self, exc_type, exc, tb) -> None:
            store = self.store
            store._tx_depth -= 1
            if store._tx_depth:
                return  # an inner block: the outermost one commits or rolls back
            if exc_type is None:
                try:
                    store.database.commit()
                except Exception as commit_exc:
                    store._after_commit.clear()
                    store._rollback()
                    translated = store._translate(commit_exc, self.what)
                    if translated is None:
                        raise
                    raise translated from commit_exc
                store._run_after_commit()
                return None
            store._after_commit.clear()
            store._rollback()
            if isinstance(exc, (sqlite3.Error, *_pg_error_types())) and not isinstance(exc, StoreError):
                translated = store._translate(exc, self.what)
                if translated is not None:
                    raise translated from exc

    def tx(self, what: str | None = None) -> Store._Tx:
        """A (re-entrant) write transaction: ``with store.tx() as db: db.execute(...)``.
        ``what`` (e.g. ``"encounter X: saving audio"``) goes into error messages."""
        return Store._Tx(self, what)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the current transaction has committed (now, outside one); dropped
        if it rolls back; queued once per transaction however often it is asked for. For work
        that must only ever see committed state (the audit anchor: anchoring an entry that is
        then rolled back would look like a truncation)."""
        if self._tx_depth == 0:
            self._call_quietly(fn)
        elif fn not in self._after_commit:
            self._after_commit.append(fn)

    def _run_after_commit(self) -> None:
        pending, self._after_commit = self._after_commit, []
        for fn in pending:
            self._call_quietly(fn)

    @staticmethod
    def _call_quietly(fn: Callable[[], None]) -> None:
        """The transaction is committed whatever a hook does: a failing hook is logged (its
        type only), never raised into the caller."""
        try:
            fn()
        except Exception as exc:
            log.warning("after-commit hook failed", extra={"error": type(exc).__name__})

    def _rollback(self) -> None:
        if not self.database.in_transaction:
            return
        try:
            self.database.rollback()
        except (sqlite3.Error, *_pg_error_types()) as exc:  # the original error is the one that matters; keep it
            log.warning("rollback failed", extra={"code": getattr(exc, "sqlite_errorname", type(exc).__name__)})

    def _translate(self, exc: BaseException, what: str | None) -> StoreError | None:
        """A clear, PHI-free error for the failures an operator can act on; None for the rest."""
        name = getattr(exc, "sqlite_errorname", "") or ""
        doing = f"{what}: " if what else ""
        if self.dialect != SQLITE:
            return self._translate_pg(exc, doing)
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return DatabaseLocked(
                f"{doing}the database {self.path} is locked by another process or connection (waited "
                f"{self.busy_timeout_s:g} s; {name}); nothing was written. Retry; if it persists, find the "
                "process holding the lock (a backup tool, a second scribe on the same file, an open sqlite3 shell)."
            )
        if name.startswith("SQLITE_FULL"):
            return StoreFull(
                f"{doing}the database {self.path} is full: the disk has no space left or the database hit its "
                f"size limit ({name}); nothing of this write was kept. Free disk space, then retry."
            )
        if name.startswith("SQLITE_IOERR"):
            return StoreIOError(
                f"{doing}the operating system reported an I/O error on {self.path} ({name}); nothing of this "
                "write was kept. Check the disk (space, permissions, hardware), then retry."
            )
        return None

    def _translate_pg(self, exc: BaseException, doing: str) -> StoreError | None:
        """PostgreSQL's SQLSTATEs for the same operator-actionable failures (messages carry the
        code, never the statement or its values)."""
        state = getattr(exc, "sqlstate", None) or ""
        if is_conflict(exc):
            return TransactionConflict(
                f"{doing}the transaction conflicted with another writer on {self.path} (SQLSTATE {state}); nothing "
                "was written. It is safe to run it again (Store.retrying does so)."
            )
        if state in ("55P03", "57014"):
            return DatabaseLocked(
                f"{doing}a lock on {self.path} was held by another connection longer than "
                f"{self.busy_timeout_s:g} s (SQLSTATE {state}); nothing was written. Retry; if it persists, look for "
                "a long transaction in pg_stat_activity."
            )
        if state.startswith("53"):
            return StoreFull(
                f"{doing}the database server {self.path} is out of disk, memory or connections (SQLSTATE {state}); "
                "nothing of this write was kept. Free resources on the server, then retry."
            )
        if state.startswith("08") or type(exc).__name__ in ("OperationalError", "InterfaceError") and not state:
            return StoreIOError(
                f"{doing}the connection to {self.path} failed ({type(exc).__name__} {state}); nothing of this write "
                "was kept. Check that the database server is up and reachable, then retry."
            )
        return None

    _tx = tx

    def lock(self, key: str) -> None:
        """Serialise writers on ``key`` until the current transaction ends. On SQLite a no-op
        (``BEGIN IMMEDIATE`` already holds the one write lock); on PostgreSQL an advisory lock,
        for read-then-write code (``max(version) + 1``) that must not interleave across replicas."""
        if self._tx_depth == 0:
            raise StoreError("Store.lock() must be called inside store.tx()")
        self.database.lock(key)

    @property
    def for_update(self) -> str:
        """``" FOR UPDATE"`` on PostgreSQL (lock the rows read), ``""`` on SQLite."""
        return self.database.for_update

    def table_columns(self, table: str) -> list[str]:
        """Column names of ``table`` (empty when it does not exist), on either engine."""
        return self.database.table_columns(table)

    def retrying(self, fn: Callable[..., T], *args: Any, attempts: int = 3, **kwargs: Any) -> T:
        """Run ``fn`` and, when its outermost transaction lost a PostgreSQL serialization or
        deadlock conflict (``TransactionConflict``: everything rolled back), run it again. Only
        for a ``fn`` whose writes are one transaction. Never triggers on SQLite."""
        for attempt in range(1, attempts + 1):
            try:
                return fn(*args, **kwargs)
            except TransactionConflict:
                if self._tx_depth or attempt == attempts:
                    raise
                log.info("transaction conflict; retrying", extra={"attempt": attempt})
                time.sleep(0.01 * attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    def _statements(self, migration: Any) -> list[str]:
        """One migration entry as statements for this engine. An entry is SQL text (split on
        ``;``; SQLite type names are mapped on PostgreSQL by ``db.pg_ddl``) or a per-dialect dict
        ``{"sqlite": text, "postgresql": text or [statements]}`` for what must differ (a list
        keeps PL/pgSQL bodies, which contain ``;``, whole)."""
        if isinstance(migration, dict):
            if self.dialect not in migration:
                raise StoreError(f"a migration has no {self.dialect} variant ({sorted(migration)})")
            migration = migration[self.dialect]
        parts = migration.split(";") if isinstance(migration, str) else list(migration)
        return [self.database.ddl(p) for p in parts if p.strip()]

    def migrate_component(self, component: str, migrations: Sequence[Any]) -> None:
        """Apply a feature's own ordered migrations (idempotent).

        Each feature (notes, delivery, audit, speakers …) keeps its schema beside its code and
        versions it under its own name, so features evolve independently and a database
        written by a newer scribe is refused instead of misread.
        """
        if self.dialect != SQLITE:
            with self._tx(f"migrating {component}"):
                self.database.lock(MIGRATION_LOCK)
                self._migrate_component(component, migrations)
        else:
            self._migrate_component(component, migrations)

    def _migrate_component(self, component: str, migrations: Sequence[Any]) -> None:
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS component_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        row = self.db.execute("SELECT version FROM component_versions WHERE component = ?", (component,)).fetchone()
        current = row[0] if row else 0
        if current > len(migrations):
            raise StoreError(
                f"the database {self.path} has {component} schema version {current}, newer than this scribe "
                f"({len(migrations)}); upgrade scribe"
            )
        for version in range(current + 1, len(migrations) + 1):
            with self.tx():
                for statement in self._statements(migrations[version - 1]):
                    self.db.execute(statement)
                self.db.execute(
                    "INSERT INTO component_versions (component, version) VALUES (?, ?) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, version),
                )

    def close(self) -> None:
        self.database.close()

    # -- encounters

    @staticmethod
    def _row_to_encounter(row: sqlite3.Row | tuple[Any, ...]) -> Encounter:
        (eid, clinician, patient, language, rate, consent, status, created, updated, last_seq, received,
         committed, count) = row
        try:
            return Store._encounter_from(eid, clinician, patient, language, rate, consent, status, created,
                                         updated, last_seq, received, committed, count)
        except (ValidationError, ValueError, TypeError):
            # ``from None``: a pydantic error quotes the stored value, which may be PHI.
            raise CorruptRow(
                f"encounter {eid}: its row in the encounters table is corrupt and cannot be read; restore it "
                "from a backup (its audio frames and segments are stored separately)"
            ) from None

    @staticmethod
    def _encounter_from(eid, clinician, patient, language, rate, consent, status, created, updated, last_seq,
                        received, committed, count) -> Encounter:
        return Encounter(
            id=eid,
            clinician_id=clinician,
            patient_ref=patient,
            language=language,
            sample_rate=rate,
            consent=Consent.model_validate_json(consent),
            status=EncounterStatus(status),
            created_at=datetime.fromisoformat(created),
            updated_at=datetime.fromisoformat(updated),
            last_seq=last_seq,
            samples_received=received,
            committed_until=committed,
            segment_count=count,
        )

    _ENC_COLS = (
        "id, clinician_id, patient_ref, language, sample_rate, consent, status, created_at, updated_at, "
        "last_seq, samples_received, committed_until, segment_count"
    )

    def get_encounter(self, encounter_id: str) -> Encounter | None:
        row = self.db.execute(f"SELECT {self._ENC_COLS} FROM encounters WHERE id = ?", (encounter_id,)).fetchone()
        return self._row_to_encounter(row) if row else None

    def list_encounters(self, clinician_id: str | None = None, limit: int = 200) -> list[Encounter]:
        if clinician_id:
            rows = self.db.execute(
                f"SELECT {self._ENC_COLS} FROM encounters WHERE clinician_id = ? ORDER BY created_at DESC LIMIT ?",
                (clinician_id, limit),
            )
        else:
            rows = self.db.execute(f"SELECT {self._ENC_COLS} FROM encounters ORDER BY created_at DESC LIMIT ?", (limit,))
        return [self._row_to_encounter(r) for r in rows.fetchall()]

    def open_encounter(
        self,
        encounter_id: str,
        *,
        clinician_id: str,
        patient_ref: str,
        language: str,
        sample_rate: int,
        consent: Consent,
    ) -> tuple[Encounter, bool]:
        """Create the encounter, or return the existing one for a resume.

        Reusing an id for another clinician, patient or sample rate is refused: a resume
        must continue the same recording, never splice two visits together.
        """
        with self._tx(f"encounter {encounter_id}: opening"):
            self.lock(f"encounter:{encounter_id}")  # PostgreSQL: two replicas opening one id
            existing = self.get_encounter(encounter_id)
            if existing is not None:
                if (existing.clinician_id, existing.patient_ref) != (clinician_id, patient_ref):
                    raise EncounterConflict(
                        f"encounter {encounter_id} already exists for a different clinician or patient; "
                        "use a new encounter id"
                    )
                if existing.sample_rate != sample_rate:
                    raise EncounterConflict(
                        f"encounter {encounter_id} was started at {existing.sample_rate} Hz; resume at the same rate"
                    )
                return existing, False
            now = utcnow().isoformat()
            self.db.execute(
                f"INSERT INTO encounters ({self._ENC_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, -1, 0, 0, 0)",
                (encounter_id, clinician_id, patient_ref, language, sample_rate, consent.model_dump_json(),
                 EncounterStatus.recording.value, now, now),
            )
        enc = self.get_encounter(encounter_id)
        assert enc is not None
        return enc, True

    def set_status(self, encounter_id: str, status: EncounterStatus) -> None:
        with self._tx(f"encounter {encounter_id}: setting status {status.value}"):
            cur = self.db.execute(
                "UPDATE encounters SET status = ?, updated_at = ? WHERE id = ?",
                (status.value, utcnow().isoformat(), encounter_id),
            )
            if cur.rowcount != 1:
                raise StoreError(f"no encounter {encounter_id}")

    # -- audio

    def append_frames(self, encounter_id: str, frames: Iterable[tuple[int, bytes]]) -> tuple[int, int]:
        """Persist in-order frames (already 16 kHz PCM16) in one transaction.

        Returns ``(last_seq, samples_received)``. A frame whose seq is not the next one is an
        error: the protocol layer filters duplicates and gaps before this point, so hitting
        it means a bug, and failing loudly beats a silent hole in the recording.
        """
        with self._tx(f"encounter {encounter_id}: saving audio frames"):
            row = self.db.execute(  # FOR UPDATE (PostgreSQL): two replicas cannot interleave appends
                "SELECT last_seq, samples_received FROM encounters WHERE id = ?" + self.for_update, (encounter_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no encounter {encounter_id}")
            last_seq, received = row
            for seq, pcm in frames:
                if seq != last_seq + 1:
                    raise FrameOrderError(f"encounter {encounter_id}: frame {seq} after {last_seq}")
                self.db.execute(
                    "INSERT INTO frames (encounter_id, seq, start_sample, pcm) VALUES (?, ?, ?, ?)",
                    (encounter_id, seq, received, seal_bytes(self.keyring, pcm, "frames", "pcm", (encounter_id, seq))),
                )
                last_seq = seq
                received += len(pcm) // 2
            self.db.execute(
                "UPDATE encounters SET last_seq = ?, samples_received = ?, updated_at = ? WHERE id = ?",
                (last_seq, received, utcnow().isoformat(), encounter_id),
            )
        return last_seq, received

    def audio_from(self, encounter_id: str, sample: int, end: int | None = None) -> np.ndarray:
        """Persisted audio in ``[sample, end)`` (to the end when ``end`` is None), as float32:
        what a resumed transcriber re-reads, and what a transcriber that fell behind the
        in-memory queue catches up from."""
        upper = end if end is not None else 2**62
        if upper <= sample:
            return np.zeros(0, dtype=np.float32)
        # Frames are contiguous: the one holding ``sample`` starts at or before it.
        first = self.db.execute(
            "SELECT max(start_sample) FROM frames WHERE encounter_id = ? AND start_sample <= ?",
            (encounter_id, sample),
        ).fetchone()[0]
        rows = self.db.execute(
            "SELECT start_sample, pcm, seq FROM frames WHERE encounter_id = ? AND start_sample >= ? AND start_sample < ? "
            "ORDER BY start_sample",
            (encounter_id, first if first is not None else sample, upper),
        ).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.float32)
        first_start = rows[0][0]
        pcm = b"".join(self._open_field(open_bytes, r[1], "frames", "pcm", (encounter_id, r[2]), "audio frame")
                       for r in rows)
        samples = pcm16_to_float(pcm)
        lo = max(0, sample - first_start)
        return samples[lo : max(lo, upper - first_start)]

    # -- transcript

    def commit_segments(self, encounter_id: str, segments: Iterable[Segment], committed_until: int) -> None:
        """Store new segments and advance the resume point, atomically."""
        with self._tx(f"encounter {encounter_id}: saving transcript segments"):
            row = self.db.execute(
                "SELECT segment_count, committed_until FROM encounters WHERE id = ?" + self.for_update, (encounter_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no encounter {encounter_id}")
            count, until = row
            for seg in segments:
                if seg.index != count:
                    raise StoreError(f"encounter {encounter_id}: segment {seg.index} committed after {count - 1}")
                self.db.execute(
                    'INSERT INTO segments (encounter_id, idx, id, start, "end", data) VALUES (?, ?, ?, ?, ?, ?)',
                    (encounter_id, seg.index, seg.id, seg.start, seg.end,
                     seal_text(self.keyring, seg.model_dump_json(), "segments", "data", (encounter_id, seg.index))),
                )
                count += 1
            self.db.execute(
                "UPDATE encounters SET segment_count = ?, committed_until = ?, updated_at = ? WHERE id = ?",
                (count, max(until, committed_until), utcnow().isoformat(), encounter_id),
            )

    def _open_field(self, opener: Callable[..., T], value: Any, table: str, column: str, row_key: tuple[Any, ...],
                    what: str) -> T:
        """Decrypt one stored value. A value that fails authentication is a ``CorruptRow``
        (altered, or moved from another row), and so is a value stored in clear when this store
        encrypts (unless ``trust.accept_plaintext_rows`` is set while migrating); a key problem
        is an ``EncryptionKeyError``. Messages name the row, never its content."""
        try:
            return opener(self.keyring, value, table, column, row_key)
        except PlaintextRefused:
            raise CorruptRow(
                f"encounter {row_key[0]}: {what} {row_key[-1]} in {self.path} is not encrypted although this store "
                "encrypts it: refused (written around scribe; restore it from a backup). A database from before "
                "encryption: run 'scribe keys rotate --encrypt-plaintext' once, with "
                "trust.accept_plaintext_rows=true until it has run"
            ) from None
        except DecryptionError:
            raise CorruptRow(
                f"encounter {row_key[0]}: {what} {row_key[-1]} in {self.path} fails decryption (altered on disk, "
                "or copied from another row); restore it from a backup"
            ) from None
        except CryptoError as exc:
            raise EncryptionKeyError(f"encounter {row_key[0]}: {what} {row_key[-1]}: {exc}") from None

    def segments(self, encounter_id: str, since: int = 0) -> list[Segment]:
        rows = self.db.execute(
            "SELECT idx, data FROM segments WHERE encounter_id = ? AND idx >= ? ORDER BY idx", (encounter_id, since)
        ).fetchall()
        out: list[Segment] = []
        for idx, data in rows:
            out.append(self._segment_row("segments", encounter_id, idx, data, "transcript segment",
                                         "the audio and the other segments are intact. Restore the row from a "
                                         "backup, or re-transcribe the encounter's stored audio"))
        return out

    def _segment_row(self, table: str, encounter_id: str, idx: int, data: Any, what: str, fix: str) -> Segment:
        """One stored segment, decrypted and checked; a bad row is named, never quoted (it is PHI)."""
        text = self._open_field(open_text, data, table, "data", (encounter_id, idx), what)
        try:
            seg = Segment.model_validate_json(text)
        except (ValidationError, ValueError, TypeError):
            seg = None
        if seg is None or seg.index != idx:
            raise CorruptRow(
                f"encounter {encounter_id}: {what} {idx} in {self.path} is corrupt and cannot be read "
                f"(not a valid segment record); {fix}"
            ) from None
        return seg


    # -- the record pass

    def record_progress(self, encounter_id: str) -> tuple[int, int, int]:
        """``(until, segments, windows)``: the sample the record pass has re-transcribed up to,
        its segment count and its window count (zeros before its first window)."""
        row = self.db.execute("SELECT done_until, segments, windows FROM record_pass WHERE encounter_id = ?",
                              (encounter_id,)).fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    def commit_record_window(self, encounter_id: str, number: int, segments: Iterable[Segment], until: int) -> None:
        """Store one record-pass window (its number, its segments) and advance ``until``,
        atomically. Windows are stored in order: a window out of turn (a second writer, or one
        replayed after it was stored) is refused."""
        with self._tx(f"encounter {encounter_id}: saving record-pass segments"):
            self.lock(f"record:{encounter_id}")
            row = self.db.execute("SELECT done_until, segments, windows FROM record_pass WHERE encounter_id = ?"
                                  + self.for_update, (encounter_id,)).fetchone()
            done, count, windows = row if row else (0, 0, 0)
            if number != windows or until <= done:
                raise StoreError(f"encounter {encounter_id}: record window {number} after {windows - 1}")
            for seg in segments:
                if seg.index != count:
                    raise StoreError(f"encounter {encounter_id}: record segment {seg.index} after {count - 1}")
                self.db.execute(
                    'INSERT INTO record_segments (encounter_id, idx, id, win, start, "end", data) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (encounter_id, seg.index, seg.id, number, seg.start, seg.end,
                     seal_text(self.keyring, seg.model_dump_json(), "record_segments", "data",
                               (encounter_id, seg.index))),
                )
                count += 1
            if row:
                self.db.execute("UPDATE record_pass SET done_until = ?, segments = ?, windows = ? WHERE encounter_id = ?",
                                (until, count, windows + 1, encounter_id))
            else:
                self.db.execute("INSERT INTO record_pass (encounter_id, done_until, segments, windows) VALUES (?, ?, ?, ?)",
                                (encounter_id, until, count, windows + 1))

    def record_segments(self, encounter_id: str) -> list[tuple[int, Segment]]:
        """The record pass's segments, each with the number of the window that wrote it."""
        rows = self.db.execute(
            "SELECT idx, win, data FROM record_segments WHERE encounter_id = ? ORDER BY idx", (encounter_id,)
        ).fetchall()
        out: list[tuple[int, Segment]] = []
        for idx, win, data in rows:
            out.append((int(win), self._segment_row("record_segments", encounter_id, idx, data, "record-pass segment",
                                                    "restore the row from a backup")))
        return out

    def transcript(self, encounter_id: str) -> list[Segment]:
        """The encounter's transcript as it stands: the record pass's segments where it has
        re-transcribed the audio, the live pass's after that (``scribe.asr.record``)."""
        until, _, windows = self.record_progress(encounter_id)
        live = self.segments(encounter_id)
        if not windows:
            return live
        cut = until / SAMPLE_RATE
        return [*(s for _, s in self.record_segments(encounter_id)),
                *(s for s in live if (s.start + s.end) / 2 >= cut)]

    def relabel_record_segments(self, encounter_id: str, speakers: dict[str, Speaker]) -> int:
        """Set the speaker of record-pass segments (carried over from the live pass's label
        revisions). Returns how many rows changed."""
        if not speakers:
            return 0
        changed = 0
        with self._tx():
            for seg_id, speaker in speakers.items():
                row = self.db.execute("SELECT idx, data FROM record_segments WHERE encounter_id = ? AND id = ?",
                                      (encounter_id, seg_id)).fetchone()
                if row is None:
                    continue
                key = (encounter_id, row[0])
                seg = Segment.model_validate_json(
                    self._open_field(open_text, row[1], "record_segments", "data", key, "record-pass segment"))
                if seg.speaker == speaker:
                    continue
                self.db.execute("UPDATE record_segments SET data = ? WHERE encounter_id = ? AND idx = ?",
                                (seal_text(self.keyring, seg.model_copy(update={"speaker": speaker}).model_dump_json(),
                                           "record_segments", "data", key), encounter_id, row[0]))
                changed += 1
        return changed

    def relabel_segments(self, encounter_id: str, speakers: dict[str, Speaker]) -> int:
        """Set the speaker of already committed segments (the diarizer revises recent labels
        as it learns the voices). Returns how many rows changed."""
        if not speakers:
            return 0
        changed = 0
        with self._tx():
            for seg_id, speaker in speakers.items():
                row = self.db.execute(
                    "SELECT idx, data FROM segments WHERE encounter_id = ? AND id = ?", (encounter_id, seg_id)
                ).fetchone()
                if row is None:
                    continue
                seg = Segment.model_validate_json(
                    self._open_field(open_text, row[1], "segments", "data", (encounter_id, row[0]), "transcript segment"))
                if seg.speaker == speaker:
                    continue
                self.db.execute("UPDATE segments SET data = ? WHERE encounter_id = ? AND idx = ?",
                                (seal_text(self.keyring, seg.model_copy(update={"speaker": speaker}).model_dump_json(),
                                           "segments", "data", (encounter_id, row[0])), encounter_id, row[0]))
                changed += 1
        return changed


class AsyncStore:
    """Runs a ``Store`` on its own thread: SQLite calls (and their fsyncs) never block the loop."""

    def __init__(self, store: Store):
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scribe-store")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Each call is one unit of work: on PostgreSQL a transaction that lost a conflict with
        another replica is run again (``Store.retrying``)."""
        loop = asyncio.get_running_loop()
        retrying = getattr(self.store, "retrying", None)
        if retrying is None:  # a stand-in store (tests)
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        return await loop.run_in_executor(self._executor, lambda: retrying(fn, *args, **kwargs))

    # The store's calls the service awaits, typed (anything else: ``call(store.method, …)``).

    async def get_encounter(self, encounter_id: str) -> Encounter | None:
        return await self.call(self.store.get_encounter, encounter_id)

    async def list_encounters(self, clinician_id: str | None = None, limit: int = 200) -> list[Encounter]:
        return await self.call(self.store.list_encounters, clinician_id, limit)

    async def open_encounter(self, encounter_id: str, **fields: Any) -> tuple[Encounter, bool]:
        return await self.call(self.store.open_encounter, encounter_id, **fields)

    async def set_status(self, encounter_id: str, status: EncounterStatus) -> None:
        await self.call(self.store.set_status, encounter_id, status)

    async def append_frames(self, encounter_id: str, frames: Iterable[tuple[int, bytes]]) -> tuple[int, int]:
        return await self.call(self.store.append_frames, encounter_id, list(frames))

    async def audio_from(self, encounter_id: str, sample: int, end: int | None = None) -> np.ndarray:
        return await self.call(self.store.audio_from, encounter_id, sample, end)

    async def commit_segments(self, encounter_id: str, segments: Iterable[Segment], committed_until: int) -> None:
        await self.call(self.store.commit_segments, encounter_id, list(segments), committed_until)

    async def segments(self, encounter_id: str, since: int = 0) -> list[Segment]:
        return await self.call(self.store.segments, encounter_id, since)

    async def relabel_segments(self, encounter_id: str, speakers: dict[str, Speaker]) -> int:
        return await self.call(self.store.relabel_segments, encounter_id, speakers)

    async def transcript(self, encounter_id: str) -> list[Segment]:
        return await self.call(self.store.transcript, encounter_id)

    def close(self) -> None:
        self._executor.submit(self.store.close).result()
        self._executor.shutdown(wait=True)

