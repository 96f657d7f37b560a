"""Append-only, hash-chained audit log of every access to patient data.

Why a hash chain: each entry stores the SHA-256 of its predecessor (``prev_hash``) and its own
hash over a canonical JSON of all its fields *including* ``prev_hash`` and ``seq``. Editing,
removing or reordering any entry therefore breaks the chain at that point, and ``verify()``
names the first sequence number where it breaks.

What the chain cannot see on its own: someone who can write the database can cut entries off
the *end* (the remaining chain is still consistent) or rewrite the whole chain with fresh
hashes. So the head (seq + hash) is anchored outside the database (``trust.anchor``): by
default after every committed entry (``trust.audit_anchor_every``), on a schedule and at
shutdown of the service, into ``<data_dir>/keys/audit.anchor``, signed with a sub-key of the
data key. ``verify(anchor=...)`` proves that everything up to the anchored head is still there
and unchanged, and *fails* when it cannot (no anchor for a non-empty log, a shorter log, a
different entry at the anchored seq, an unsigned or forged anchor). An anchor is only ever
advanced from a log that still reaches the previous one, so the next append cannot bless a
cut log. Left open: entries committed after the last anchor (a crash between commit and
anchor), and whoever holds the database, the anchor file and the key together; ship anchors
off-host (``scribe audit anchor --file``) for that.

Entries never carry PHI: actors and objects are opaque ids, ``detail`` is a small dict of
codes and counts, and :func:`check_detail` refuses free text and identifying key names.

Entries are written inside the caller's transaction (``with store.tx()`` is re-entrant), so
an audit record lands atomically with the change it describes, or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..models import utcnow
from .anchor import (
    AFTER_INVESTIGATING,
    REASON_HELP,
    AnchorRecord,
    AnchorUnreadable,
    check_signature,
    make_anchor,
    read_anchor_file,
    write_anchor_file,
)
from .ports import TrustStore

log = logging.getLogger(__name__)

GENESIS = "0" * 64
"""``prev_hash`` of the first entry."""

MIGRATIONS: list[str] = [
    # 1: the log itself. seq is explicit (not a rowid alias that SQLite may reuse) so that a
    # removed entry leaves a visible gap.
    """
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_log_by_time ON audit_log (at);
    CREATE INDEX audit_log_by_object ON audit_log (object_type, object_id)
    """,
]

# Triggers hold ';' inside BEGIN … END, which Store.migrate_component would split, so they are
# created idempotently on construction instead. They stop accidental UPDATE/DELETE through
# SQL; they do not stop someone with write access to the file (the hash chain catches that).
_TRIGGERS = (
    ("CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log "
     "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"),
    ("CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log "
     "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"),
)


class Action(StrEnum):
    """What was done. Only added to, never renamed: exports and verifiers depend on them."""

    create = "create"
    read = "read"
    update = "update"
    sign = "sign"
    deliver = "deliver"
    export = "export"
    delete = "delete"
    purge = "purge"
    login_failed = "login_failed"
    access_denied = "access_denied"
    consent_recorded = "consent_recorded"
    consent_refused = "consent_refused"
    consent_withdrawn = "consent_withdrawn"
    token_created = "token_created"
    token_revoked = "token_revoked"
    key_rotated = "key_rotated"
    audit_anchor_reset = "audit_anchor_reset"
    """An operator re-anchored a log that no longer matched its anchor (``--force``)."""


class Outcome(StrEnum):
    success = "success"
    denied = "denied"
    failed = "failed"


class AuditError(ValueError):
    """An audit entry was refused (it would carry PHI or malformed fields)."""


# Ids and codes: letters, digits and a few separators, no spaces — so free text cannot slip in.
_CODE = re.compile(r"^[A-Za-z0-9_.:@/+=-]{1,128}$")
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_OBJECT_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Key names that suggest identifying or clinical content. A detail is about *what happened*
# (counts, codes, reasons), never about *whom* or *what was said*.
_FORBIDDEN_KEY_PARTS = ("patient", "name", "text", "transcript", "content", "birth", "dob", "address",
                        "phone", "email", "mrn", "ssn", "note_body", "summary")
MAX_DETAIL_KEYS = 16


def as_code(value: str | None, fallback: str) -> str:
    """``value`` if the audit log accepts it as an id or code, else ``fallback`` (client-chosen
    ids and user names are recorded only when they cannot carry free text)."""
    return value if isinstance(value, str) and _CODE.match(value) else fallback


def check_code(value: str, what: str) -> str:
    if not isinstance(value, str) or not _CODE.match(value):
        raise AuditError(f"audit {what} must be an id or code (1-128 of A-Z a-z 0-9 _ . : @ / + = -), "
                         f"got {type(value).__name__} of length {len(value) if isinstance(value, str) else '?'}")
    return value


def check_detail(detail: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``detail`` if it holds only non-PHI codes and numbers; raise :class:`AuditError`.

    The error message names the offending key but never echoes the value (it might be PHI).
    """
    if detail is None:
        return {}
    if not isinstance(detail, dict):
        raise AuditError("audit detail must be a dict of codes")
    if len(detail) > MAX_DETAIL_KEYS:
        raise AuditError(f"audit detail has {len(detail)} keys; at most {MAX_DETAIL_KEYS}")
    out: dict[str, Any] = {}
    for key, value in detail.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise AuditError("audit detail keys must be snake_case identifiers")
        if any(part in key for part in _FORBIDDEN_KEY_PARTS):
            raise AuditError(f"audit detail key {key!r} suggests identifying or clinical content; "
                             "audit entries carry ids and codes only")
        if value is None or isinstance(value, (bool, int)):
            out[key] = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise AuditError(f"audit detail {key!r} must be a finite number")
            out[key] = value
        elif isinstance(value, str):
            if not _CODE.match(value):
                raise AuditError(f"audit detail {key!r} must be a code (no spaces, at most 128 characters)")
            out[key] = value
        else:
            raise AuditError(f"audit detail {key!r} must be a code, number, bool or null")
    return out


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    at: str
    """UTC time, ISO 8601 with microseconds, exactly as hashed."""
    actor: str
    action: str
    object_type: str
    object_id: str
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def canonical(self) -> bytes:
        return canonical_bytes(self.model_dump(exclude={"hash"}))

    def expected_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def canonical_bytes(fields: dict[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no whitespace, UTF-8. Changing this breaks every
    existing chain, so it is versioned by never changing it."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


class VerifyResult(BaseModel):
    ok: bool
    checked: int
    """Entries examined."""
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None
    """``hash_mismatch``, ``chain_break``, ``gap``, ``out_of_order``, ``bad_row``; with an
    anchor also ``anchor_missing`` (non-empty log, no anchor), ``anchor_missing_entry`` (log
    shorter than the anchor), ``anchor_mismatch``, ``anchor_unsigned``, ``anchor_forged``,
    ``anchor_key_unknown``, ``anchor_unreadable``."""
    anchored_seq: int | None = None
    anchored_at: str | None = None


def _fmt_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise AuditError("audit times must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


# PostgreSQL (proposed store backend, see scribe/trust/pg_probe.md): the same guard as a
# PL/pgSQL trigger function.
_PG_TRIGGERS = (
    ("CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
     "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$"),
    ("CREATE OR REPLACE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
     "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"),
)
_PG_LOCK = "SELECT pg_advisory_xact_lock(7307724101)"
"""On PostgreSQL a transaction does not lock the table the way SQLite's BEGIN IMMEDIATE does:
this transaction-scoped advisory lock serialises appenders across replicas."""


class AuditLog:
    """The audit trail in a :class:`scribe.store.Store`.

    ``record`` appends inside ``store.tx()``, so it joins a caller's transaction when there is
    one (the change and its audit record commit together) and otherwise commits on its own.
    ``BEGIN IMMEDIATE`` serialises writers, so two processes cannot fork the chain.
    """

    COMPONENT = "audit"

    def __init__(self, store: TrustStore, *, anchor_file: Path | str | None = None, anchor_every: int | None = None):
        """``anchor_file``/``anchor_every``: where and how often to anchor the head after a
        commit; default the store's (``open_store`` sets them from the settings; a bare
        ``Store`` has none, so nothing is anchored automatically)."""
        self.store = store
        configured = anchor_file if anchor_file is not None else getattr(store, "audit_anchor_file", None)
        self.anchor_file: Path | None = Path(configured) if configured is not None else None
        self.anchor_every = anchor_every if anchor_every is not None else int(getattr(store, "audit_anchor_every", 1))
        self._since_anchor = 0
        self._refused: str | None = None
        store.migrate_component(self.COMPONENT, MIGRATIONS)
        self._postgres = getattr(store, "dialect", "sqlite") == "postgresql"
        with store.tx() as db:
            if self._postgres:
                db.execute(_PG_LOCK)  # replicas starting together would race on CREATE OR REPLACE
            for trigger in _PG_TRIGGERS if self._postgres else _TRIGGERS:
                db.execute(trigger)

    # -- writing

    def record(
        self,
        actor: str,
        action: Action | str,
        object_type: str,
        object_id: str,
        outcome: Outcome | str = Outcome.success,
        detail: dict[str, Any] | None = None,
        *,
        at: datetime | None = None,
    ) -> AuditEntry:
        action = Action(action).value
        outcome = Outcome(outcome).value
        check_code(actor, "actor")
        if not _OBJECT_TYPE.match(object_type or ""):
            raise AuditError("audit object_type must be a snake_case identifier")
        check_code(object_id, "object_id")
        clean = check_detail(detail)
        when = _fmt_time(at or utcnow())
        with self.store.tx() as db:
            if self._postgres:
                db.execute(_PG_LOCK)
            row = db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            fields = {"seq": seq, "at": when, "actor": actor, "action": action, "object_type": object_type,
                      "object_id": object_id, "outcome": outcome, "detail": clean, "prev_hash": prev}
            digest = hashlib.sha256(canonical_bytes(fields)).hexdigest()
            db.execute(
                "INSERT INTO audit_log (seq, at, actor, action, object_type, object_id, outcome, detail, "
                "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, when, actor, action, object_type, object_id, outcome,
                 canonical_bytes(clean).decode("utf-8"), prev, digest),
            )
            self._anchor_after_commit()
        return AuditEntry(**fields, hash=digest)

    def _anchor_after_commit(self) -> None:
        """Every ``anchor_every``-th entry, anchor the head once the transaction has committed
        (several entries in one transaction: one anchor)."""
        if self.anchor_file is None or self.anchor_every <= 0:
            return
        self._since_anchor += 1
        after_commit = getattr(self.store, "after_commit", None)
        if self._since_anchor < self.anchor_every or after_commit is None:  # stand-in store: the schedule anchors
            return
        after_commit(self._anchor_committed)  # queued once per transaction

    def _anchor_committed(self) -> None:
        self._since_anchor = 0
        self.anchor_quietly()

    # -- reading

    _COLS = "seq, at, actor, action, object_type, object_id, outcome, detail, prev_hash, hash"

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> AuditEntry:
        seq, at, actor, action, otype, oid, outcome, detail, prev, digest = row
        return AuditEntry(seq=seq, at=at, actor=actor, action=action, object_type=otype, object_id=oid,
                          outcome=outcome, detail=json.loads(detail), prev_hash=prev, hash=digest)

    def entries(self, since: datetime | None = None, until: datetime | None = None) -> Iterator[AuditEntry]:
        """Entries in ``[since, until)`` by time, in chain order."""
        sql = f"SELECT {self._COLS} FROM audit_log"
        where, args = [], []
        if since is not None:
            where.append("at >= ?")
            args.append(_fmt_time(since))
        if until is not None:
            where.append("at < ?")
            args.append(_fmt_time(until))
        if where:
            sql += " WHERE " + " AND ".join(where)
        for row in self.store.db.execute(sql + " ORDER BY seq", args):
            yield self._entry(row)

    def for_object(self, object_type: str, object_id: str) -> list[AuditEntry]:
        rows = self.store.db.execute(
            f"SELECT {self._COLS} FROM audit_log WHERE object_type = ? AND object_id = ? ORDER BY seq",
            (object_type, object_id),
        ).fetchall()
        return [self._entry(r) for r in rows]

    def head(self) -> tuple[int, str]:
        row = self.store.db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    def export(self, since: datetime | None = None, until: datetime | None = None) -> Iterator[str]:
        """JSON Lines for the privacy office: one entry per line, hashes included, so the
        recipient can re-check the range with :func:`verify_entries` (the first line's
        ``prev_hash`` links it to the entry before the range)."""
        for entry in self.entries(since, until):
            yield entry.model_dump_json() + "\n"

    # -- checking

    def verify(self, anchor: Path | str | None = None) -> VerifyResult:
        """Walk the whole chain (streamed: memory does not grow with the log); with ``anchor``,
        also check that the anchored head is still there, unchanged."""

        def rows() -> Iterator[AuditEntry | int]:
            for row in self.store.db.execute(f"SELECT {self._COLS} FROM audit_log ORDER BY seq"):
                try:
                    yield self._entry(row)
                except Exception:  # a row edited into something unparseable
                    yield int(row[0]) if isinstance(row[0], int) else -1

        result = verify_entries(rows(), start_seq=1, start_hash=GENESIS)
        if not result.ok or anchor is None:
            return result
        try:
            record = read_anchor_file(anchor)
        except AnchorUnreadable:
            return result.model_copy(update={"ok": False, "reason": "anchor_unreadable"})
        reason, first_bad = self.check_anchor(record, result.head_seq)
        update: dict[str, Any] = {}
        if record is not None:
            update = {"anchored_seq": record.seq, "anchored_at": record.at}
        if reason is not None:
            update.update({"ok": False, "reason": reason, "first_bad_seq": first_bad})
        return result.model_copy(update=update)

    def check_anchor(self, record: AnchorRecord | None, head_seq: int) -> tuple[str | None, int | None]:
        """``(reason, first_bad_seq)`` if the log does not reach ``record`` (None: all good).

        O(1) in the log's length (one lookup): :meth:`verify` walks the chain first, and
        the anchoring paths call this before advancing an anchor."""
        if record is None:
            return ("anchor_missing", head_seq) if head_seq > 0 else (None, None)
        signature = check_signature(record, getattr(self.store, "keyring", None))
        if signature is not None:
            return signature, None
        if record.seq <= 0:
            return None, None
        if record.seq > head_seq:
            # The chain is shorter than it was when anchored: the tail was cut.
            return "anchor_missing_entry", head_seq + 1
        row = self.store.db.execute("SELECT hash FROM audit_log WHERE seq = ?", (record.seq,)).fetchone()
        if row is None or row[0] != record.hash:
            return "anchor_mismatch", record.seq
        return None, None

    def anchor(self, path: Path | str | None = None, *, append: bool = True, force: bool = False) -> tuple[int, str]:
        """Anchor the current head in ``path`` (default the configured anchor file, replaced
        atomically; an explicit file is appended to, so it can live on append-only storage).

        Refuses (:class:`AnchorRefused`) when the log does not reach the anchor already in
        that file: advancing it would bless a truncated or rewritten log. ``force`` writes
        anyway (the caller audits that). A missing anchor is simply created."""
        if path is None:
            if self.anchor_file is None:
                raise AuditError("no anchor file configured for this store")
            path, append = self.anchor_file, False
        seq, digest = self.head()
        try:
            reason, _ = self.check_anchor(read_anchor_file(path), seq)
        except AnchorUnreadable:
            reason = "anchor_unreadable"
        if reason == "anchor_missing":
            # The first entry of a fresh log is the expected case; more entries and no anchor
            # means the anchor was lost (or this is the first run after upgrading): say so.
            (log.warning if seq > 1 else log.info)("no audit anchor at %s yet: anchoring the current head (seq %d)",
                                                   path, seq)
        elif reason is not None and not force:
            raise AnchorRefused(reason)
        write_anchor_file(path, make_anchor(seq, digest, _fmt_time(utcnow()), getattr(self.store, "keyring", None)),
                          append=append)
        log.debug("audit head anchored at seq %d", seq)
        self._refused = None
        return seq, digest

    def anchor_quietly(self) -> int | None:
        """:meth:`anchor` into the configured file for the automatic paths (after a commit, the
        service's schedule): never raises. A refusal is logged as an error once per reason,
        with what to do; the anchor stays where it was, as evidence."""
        if self.anchor_file is None:
            return None
        try:
            return self.anchor()[0]
        except AnchorRefused as exc:
            if self._refused != exc.reason:
                self._refused = exc.reason
                log.error("audit anchor not advanced: %s (%s). Run 'scribe audit verify'; %s",
                          exc.reason, REASON_HELP.get(exc.reason, ""), AFTER_INVESTIGATING)
        except OSError as exc:
            if self._refused != "write_failed":  # once, not after every entry
                self._refused = "write_failed"
                log.warning("cannot write the audit anchor %s: %s; 'scribe audit verify' will fail until it can",
                            self.anchor_file, exc.strerror)
        except Exception as exc:  # a store error: the next anchor or the verifier will report it
            log.warning("audit anchor skipped", extra={"error": type(exc).__name__})
        return None


class AnchorRefused(AuditError):
    """The log does not reach the existing anchor; ``reason`` is a ``VerifyResult.reason``."""

    def __init__(self, reason: str):
        super().__init__(f"the audit log does not reach its anchor ({reason}): {REASON_HELP.get(reason, '')}")
        self.reason = reason


def read_anchor(path: Path | str) -> tuple[int, str]:
    """The latest anchor in an anchor file: ``(seq, hash)`` (signature not checked)."""
    record = read_anchor_file(path)
    if record is None:
        raise FileNotFoundError(str(path))
    return record.seq, record.hash


def verify_entries(entries: Iterable[AuditEntry | int], start_seq: int = 1, start_hash: str = GENESIS) -> VerifyResult:
    """Check a sequence of entries (in stored order) links up; pure, also used on exports.

    An ``int`` in ``entries`` stands for a row that could not be parsed (its seq).
    """
    expected_seq, prev = start_seq, start_hash
    checked = 0
    head_seq, head_hash = start_seq - 1, start_hash
    for entry in entries:
        checked += 1
        if isinstance(entry, int):
            return VerifyResult(ok=False, checked=checked, head_seq=head_seq, head_hash=head_hash,
                                first_bad_seq=entry, reason="bad_row")
        bad: str | None = None
        if entry.seq != expected_seq:
            bad = "gap" if entry.seq > expected_seq else "out_of_order"
            first_bad = expected_seq if bad == "gap" else entry.seq
        elif entry.expected_hash() != entry.hash:
            bad, first_bad = "hash_mismatch", entry.seq
        elif entry.prev_hash != prev:
            bad, first_bad = "chain_break", entry.seq
        if bad is not None:
            return VerifyResult(ok=False, checked=checked, head_seq=head_seq, head_hash=head_hash,
                                first_bad_seq=first_bad, reason=bad)
        expected_seq, prev = entry.seq + 1, entry.hash
        head_seq, head_hash = entry.seq, entry.hash
    return VerifyResult(ok=True, checked=checked, head_seq=head_seq, head_hash=head_hash)


def parse_export(lines: list[str]) -> list[AuditEntry | int]:
    """Entries from an exported JSONL range (for :func:`verify_entries`)."""
    out: list[AuditEntry | int] = []
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(AuditEntry.model_validate_json(line))
        except Exception:
            out.append(-(n + 1))
    return out
