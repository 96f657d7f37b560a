"""The durable outbox: a signed note waits in the store until every target has acknowledged it.

Signing records the signature (who, when, version, the note as signed, its content hash) and
enqueues one delivery row per configured target **in the same transaction**, so there is no
moment where a note is signed but not queued, or queued but not signed. Signing the same
content again returns the existing signature and queues nothing.

``OutboxWorker`` claims due rows (a lease, so a crashed worker's rows are taken over once the
lease runs out), delivers through the row's target and records the outcome. Every step that
touches the target is written to an append-only **ledger** first (``post_started`` is committed
before the POST leaves), so after a crash between the POST and the result being recorded the
next attempt knows a copy may exist and searches by identifier before posting again: exactly
one DocumentReference even on EHRs that ignore conditional create. The retry schedule
(attempts, next attempt time) lives in the row, so it survives restarts.

Ordering: a row waits while an earlier row for the same encounter and target is still pending,
so version 2 is never sent before version 1, nor a retraction before the note it retracts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import sqlite3
import traceback
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from scribe.fhir.errors import DeliveryError
from scribe.fhir.outcome import backoff_delay
from scribe.fhir.targets import DeliveryContext, DeliveryJob, DeliveryResult, DeliveryTarget
from scribe.models import Delivery, DeliveryState, Note, SignedNote, utcnow
from scribe.trust.crypto import EncryptedColumn, open_text, seal_text

if TYPE_CHECKING:
    from scribe.config import Settings
    from scribe.store import AsyncStore, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS: list[str] = [
    # 1: signatures, deliveries, ledger, per-encounter EHR context
    """
    CREATE TABLE delivery_signatures (
        id TEXT PRIMARY KEY,
        encounter_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        signed_by TEXT NOT NULL,
        signed_at TEXT NOT NULL,
        note TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        replaces TEXT REFERENCES delivery_signatures (id),
        context TEXT NOT NULL,
        retracted_at TEXT,
        retracted_by TEXT,
        retract_reason TEXT,
        UNIQUE (encounter_id, version)
    );
    CREATE INDEX delivery_signatures_by_hash ON delivery_signatures (encounter_id, content_hash);
    CREATE TABLE delivery_contexts (
        encounter_id TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        signature_id TEXT NOT NULL REFERENCES delivery_signatures (id),
        encounter_id TEXT NOT NULL,
        target TEXT NOT NULL,
        action TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        lease_until TEXT,
        resource_id TEXT,
        location TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (signature_id, target, action)
    );
    CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
    CREATE INDEX deliveries_by_encounter ON deliveries (encounter_id, target, seq);
    CREATE TABLE delivery_ledger (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id TEXT NOT NULL,
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX delivery_ledger_by_delivery ON delivery_ledger (delivery_id, seq);
    """,
]

ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn("delivery_signatures", "note", ("id",), text=True),
    EncryptedColumn("delivery_signatures", "retract_reason", ("id",), text=True),
)
"""The PHI columns of these tables (the signed note, the reason typed for a retraction),
collected by ``scribe/database.py`` so that key rotation and the key check at open walk them."""

# Ledger events after which a copy may exist at the target even if no result was recorded.
_WRITE_EVENTS = ("post_started",)


class SignRefused(Exception):
    """Signing is not allowed (open flags, nothing to amend, unknown encounter …); says why."""


class OutboxError(Exception):
    """An outbox operation on an unknown or unsuitable delivery/signature."""


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    delivery_id: str
    at: datetime
    event: str
    detail: str | None


def _ts(dt: datetime) -> str:
    """Fixed-width UTC text: sorts like the instant it names (SQLite compares strings)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def note_content_hash(note: Note) -> str:
    """SHA-256 of what the clinician signs: the note without its draft timestamp."""
    return hashlib.sha256(note.model_dump_json(exclude={"created_at"}).encode("utf-8")).hexdigest()


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


_DELIVERY_COLS = (
    "id, signature_id, encounter_id, target, action, state, attempts, next_attempt_at, resource_id, location, "
    "error, created_at, updated_at, seq"
)


class Outbox:
    """Signatures and their deliveries in the store (``delivery`` component schema).

    ``targets``: names of the targets each signature is queued for (default: from settings:
    ``fhir`` when an EHR is configured, else ``directory``). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        store: Store,
        *,
        targets: Sequence[str] | None = None,
        settings: Settings | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.clock = clock
        if targets is None:
            from scribe.fhir.targets import configured_target_names

            if settings is None:
                from scribe.config import Settings

                settings = Settings()
            targets = configured_target_names(settings)
        if not targets:
            raise ValueError("an outbox needs at least one target")
        self.targets = tuple(targets)
        self.settings = settings
        self._listeners: list[Callable[[Delivery], None]] = []
        store.migrate_component("delivery", MIGRATIONS)

    @property
    def db(self) -> sqlite3.Connection:
        return cast(sqlite3.Connection, self.store.db)

    # ------------------------------------------------------------------ listeners

    def add_listener(self, callback: Callable[[Delivery], None]) -> Callable[[], None]:
        """Call ``callback(delivery)`` after every committed state change; returns an unsubscribe."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _notify(self, delivery_ids: Sequence[str]) -> None:
        if not self._listeners:
            return
        for did in delivery_ids:
            d = self.delivery(did)
            if d is None:
                continue
            for cb in list(self._listeners):
                try:
                    cb(d)
                except Exception:  # a broken listener must not break delivery
                    log.exception("outbox listener failed")

    # ------------------------------------------------------------------ context

    def set_context(
        self,
        encounter_id: str,
        *,
        patient: str | None = None,
        encounter: str | None = None,
        practitioner: str | None = None,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
        language: str | None = None,
    ) -> None:
        """Record the EHR context of an encounter (EHR encounter id, MRN …) beyond what the
        stream's start message carried; given fields override the stored encounter's."""
        given = {k: v for k, v in {"patient": patient, "encounter": encounter, "practitioner": practitioner,
                                         "period_start": period_start, "period_end": period_end,
                                         "language": language}.items() if v is not None}
        with self.store.tx() as db:
            row = db.execute("SELECT data FROM delivery_contexts WHERE encounter_id = ?", (encounter_id,)).fetchone()
            import json

            data = json.loads(row[0]) if row else {}
            data.update({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in given.items()})
            db.execute(
                "INSERT INTO delivery_contexts (encounter_id, data) VALUES (?, ?) "
                "ON CONFLICT (encounter_id) DO UPDATE SET data = excluded.data",
                (encounter_id, json.dumps(data)),
            )

    def context_for(self, encounter_id: str) -> DeliveryContext:
        import json

        row = self.db.execute("SELECT data FROM delivery_contexts WHERE encounter_id = ?", (encounter_id,)).fetchone()
        override: dict[str, Any] = json.loads(row[0]) if row else {}
        enc = self.store.get_encounter(encounter_id) if hasattr(self.store, "get_encounter") else None
        base: dict[str, Any] = {}
        if enc is not None:
            base = {"patient": enc.patient_ref, "practitioner": enc.clinician_id, "period_start": enc.created_at,
                    "language": enc.language}
        base.update(override)
        practitioner_default = getattr(getattr(self.settings, "fhir", None), "practitioner", None)
        if practitioner_default and "practitioner" not in override:
            base["practitioner"] = practitioner_default
        missing = [k for k in ("patient", "practitioner", "period_start") if not base.get(k)]
        if missing:
            raise SignRefused(
                f"encounter {encounter_id} is unknown to the store and has no delivery context "
                f"(missing {', '.join(missing)}); start it through the service or call Outbox.set_context()"
            )
        try:
            return DeliveryContext.model_validate(base)
        except ValueError as exc:
            raise SignRefused(f"encounter {encounter_id} has an invalid delivery context: {exc}") from None

    # ------------------------------------------------------------------ signing

    @property
    def _keyring(self) -> Any:
        """The store's keyring: the signed note's text (and a retraction reason) are encrypted
        under it, bound to the signature id (``ENCRYPTED_COLUMNS`` above)."""
        return getattr(self.store, "keyring", None)

    def _row_to_signed(self, row: tuple[Any, ...]) -> SignedNote:
        sid, _eid, version, by, at, note, chash, replaces, _ctx, retracted_at = row
        note = open_text(self._keyring, note, "delivery_signatures", "note", (sid,))
        return SignedNote(
            id=sid, note=Note.model_validate_json(note), signed_by=by, signed_at=_dt(at) or utcnow(),
            version=version, replaces=replaces, content_hash=chash, retracted_at=_dt(retracted_at),
        )

    _SIG_COLS = "id, encounter_id, version, signed_by, signed_at, note, content_hash, replaces, context, retracted_at"

    def signed(self, encounter_id: str) -> list[SignedNote]:
        """Every signed version of an encounter's note, oldest first."""
        rows = self.db.execute(
            f"SELECT {self._SIG_COLS} FROM delivery_signatures WHERE encounter_id = ? ORDER BY version", (encounter_id,)
        ).fetchall()
        return [self._row_to_signed(r) for r in rows]

    def signature(self, signature_id: str) -> SignedNote | None:
        row = self.db.execute(f"SELECT {self._SIG_COLS} FROM delivery_signatures WHERE id = ?", (signature_id,)).fetchone()
        return self._row_to_signed(row) if row else None

    def _signature_context(self, signature_id: str) -> DeliveryContext:
        row = self.db.execute("SELECT context FROM delivery_signatures WHERE id = ?", (signature_id,)).fetchone()
        if row is None:
            raise OutboxError(f"no signature {signature_id}")
        return DeliveryContext.model_validate_json(row[0])

    def sign(self, note: Note, signed_by: str, *, replaces: str | None = None) -> SignedNote:
        """Sign ``note`` and queue it for every target, atomically.

        Refused while the note has open flags. Signing content already signed for this encounter
        returns that signature (no second delivery). ``replaces`` (a signature id) makes this an
        amendment (same as ``amend``); signing different content for an encounter whose note is
        already signed is refused: amend it instead, so the chart shows the replacement.
        """
        if replaces is not None:
            return self.amend(note, signed_by, replaces=replaces)
        self._check_signable(note, signed_by)
        chash = note_content_hash(note)
        with self.store.tx() as db:
            same = self._same_content(db, note.encounter_id, chash)
            if same is not None:
                return same
            active = self._latest_active(db, note.encounter_id)
            if active is not None:
                raise SignRefused(
                    f"the note of encounter {note.encounter_id} is already signed (version {active.version}); "
                    "amend it to change what the chart shows"
                )
            signed, ids = self._record(db, note, signed_by, chash, replaces=None)
        log.info("signed %s v%d, queued %d deliveries", signed.id, signed.version, len(ids))
        self._notify(ids)
        return signed

    def amend(self, note: Note, signed_by: str, *, replaces: str | None = None) -> SignedNote:
        """Sign a new version that replaces ``replaces`` (default: the latest active version).

        Delivered as a new DocumentReference with ``relatesTo: replaces`` → the old one, which
        is marked ``superseded``. Amending with unchanged content returns the existing version.
        """
        self._check_signable(note, signed_by)
        chash = note_content_hash(note)
        with self.store.tx() as db:
            same = self._same_content(db, note.encounter_id, chash)
            if same is not None:
                return same
            if replaces is None:
                old = self._latest_active(db, note.encounter_id)
                if old is None:
                    raise SignRefused(f"encounter {note.encounter_id} has no signed note to amend; sign it first")
            else:
                old = self.signature(replaces)
                if old is None or old.note.encounter_id != note.encounter_id:
                    raise SignRefused(f"no signed note {replaces} for encounter {note.encounter_id} to amend")
                if old.retracted_at is not None:
                    raise SignRefused(f"signed note {replaces} was retracted; sign a new note instead of amending it")
                newer = self._latest_active(db, note.encounter_id)
                if newer is not None and newer.version > old.version:
                    raise SignRefused(
                        f"signed note {replaces} (version {old.version}) was already amended by version "
                        f"{newer.version}; amend the latest version"
                    )
            signed, ids = self._record(db, note, signed_by, chash, replaces=old.id)
        log.info("amended %s -> %s v%d", old.id, signed.id, signed.version)
        self._notify(ids)
        return signed

    def retract(self, signature_id: str, retracted_by: str, *, reason: str | None = None) -> SignedNote:
        """Mark a signed version as entered in error: queued as ``entered-in-error`` per target."""
        if not retracted_by.strip():
            raise SignRefused("a retraction needs the name of who retracts")
        now = self.clock()
        with self.store.tx() as db:
            signed = self.signature(signature_id)
            if signed is None:
                raise SignRefused(f"no signed note {signature_id}")
            if signed.retracted_at is None:
                db.execute(
                    "UPDATE delivery_signatures SET retracted_at = ?, retracted_by = ?, retract_reason = ? WHERE id = ?",
                    (_ts(now), retracted_by,
                     None if reason is None else seal_text(self._keyring, reason, "delivery_signatures",
                                                           "retract_reason", (signature_id,)),
                     signature_id),
                )
            targets = [r[0] for r in db.execute(
                "SELECT DISTINCT target FROM deliveries WHERE signature_id = ? AND action = 'create'", (signature_id,)
            )]
            ids = []
            for target in targets:
                did = _new_id("dlv")
                cur = db.execute(  # ON CONFLICT DO NOTHING: INSERT OR IGNORE in the SQL both engines speak
                    "INSERT INTO deliveries (id, signature_id, encounter_id, target, action, state, "
                    "next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, 'retract', 'queued', ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (did, signature_id, signed.note.encounter_id, target, _ts(now), _ts(now), _ts(now)),
                )
                if cur.rowcount:
                    ids.append(did)
                    self._ledger(db, did, "queued", f"retract v{signed.version}")
        self._notify(ids)
        result = self.signature(signature_id)
        assert result is not None
        return result

    def _check_signable(self, note: Note, signed_by: str) -> None:
        if not signed_by or not signed_by.strip():
            raise SignRefused("a signature needs the name of who signs")
        open_flags = note.open_flags
        if open_flags:
            kinds = sorted({f.kind.value for f in open_flags})
            raise SignRefused(
                f"the note has {len(open_flags)} unresolved flag(s) ({', '.join(kinds)}); "
                "resolve each one (edit, accept with a reason, or delete the sentence) before signing"
            )
        if not note.sentences():
            raise SignRefused("the note is empty; there is nothing to sign")

    def _lock(self, key: str) -> None:
        """PostgreSQL: serialise read-then-write (next version number) across replicas; SQLite's
        ``BEGIN IMMEDIATE`` already does (``Store.lock`` is a no-op there)."""
        lock = getattr(self.store, "lock", None)
        if lock is not None:
            lock(key)

    @property
    def _postgres(self) -> bool:
        return getattr(self.store, "dialect", "sqlite") == "postgresql"

    def _same_content(self, db: sqlite3.Connection, encounter_id: str, chash: str) -> SignedNote | None:
        self._lock(f"delivery:{encounter_id}")
        row = db.execute(
            f"SELECT {self._SIG_COLS} FROM delivery_signatures WHERE encounter_id = ? AND content_hash = ? "
            "AND retracted_at IS NULL ORDER BY version DESC LIMIT 1",
            (encounter_id, chash),
        ).fetchone()
        return self._row_to_signed(row) if row else None

    def _latest_active(self, db: sqlite3.Connection, encounter_id: str) -> SignedNote | None:
        row = db.execute(
            f"SELECT {self._SIG_COLS} FROM delivery_signatures WHERE encounter_id = ? AND retracted_at IS NULL "
            "ORDER BY version DESC LIMIT 1",
            (encounter_id,),
        ).fetchone()
        return self._row_to_signed(row) if row else None

    def _record(
        self, db: sqlite3.Connection, note: Note, signed_by: str, chash: str, *, replaces: str | None
    ) -> tuple[SignedNote, list[str]]:
        context = self.context_for(note.encounter_id)
        now = self.clock()
        version = (db.execute(
            "SELECT coalesce(max(version), 0) FROM delivery_signatures WHERE encounter_id = ?", (note.encounter_id,)
        ).fetchone()[0]) + 1
        sid = _new_id("sig")
        db.execute(
            f"INSERT INTO delivery_signatures ({self._SIG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (sid, note.encounter_id, version, signed_by, _ts(now),
             seal_text(self._keyring, note.model_dump_json(), "delivery_signatures", "note", (sid,)), chash, replaces,
             context.model_dump_json()),
        )
        ids = []
        for target in self.targets:
            did = _new_id("dlv")
            db.execute(
                "INSERT INTO deliveries (id, signature_id, encounter_id, target, action, state, next_attempt_at, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, 'create', 'queued', ?, ?, ?)",
                (did, sid, note.encounter_id, target, _ts(now), _ts(now), _ts(now)),
            )
            self._ledger(db, did, "queued", f"v{version}")
            ids.append(did)
        signed = SignedNote(id=sid, note=note, signed_by=signed_by, signed_at=_dt(_ts(now)) or now,
                            version=version, replaces=replaces, content_hash=chash)
        return signed, ids

    # ------------------------------------------------------------------ reading

    def _row_to_delivery(self, row: tuple[Any, ...]) -> Delivery:
        (did, sid, eid, target, action, state, attempts, next_at, rid, location, error, created, updated, _seq) = row
        version = self.db.execute("SELECT version FROM delivery_signatures WHERE id = ?", (sid,)).fetchone()
        return Delivery(
            id=did, encounter_id=eid, target=target, state=DeliveryState(state), attempts=attempts,
            resource_id=rid, error=error, updated_at=_dt(updated) or utcnow(), signature_id=sid,
            version=version[0] if version else None, action=action, next_attempt_at=_dt(next_at),
            location=location, created_at=_dt(created),
        )

    def deliveries(self, encounter_id: str | None = None, *, state: DeliveryState | str | None = None) -> list[Delivery]:
        """Delivery rows, oldest first (all encounters when ``encounter_id`` is None)."""
        where, params = [], []
        if encounter_id is not None:
            where.append("encounter_id = ?")
            params.append(encounter_id)
        if state is not None:
            where.append("state = ?")
            params.append(DeliveryState(state).value)
        sql = f"SELECT {_DELIVERY_COLS} FROM deliveries" + (f" WHERE {' AND '.join(where)}" if where else "")
        return [self._row_to_delivery(r) for r in self.db.execute(sql + " ORDER BY seq", params).fetchall()]

    def delivery(self, delivery_id: str) -> Delivery | None:
        row = self.db.execute(f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return self._row_to_delivery(row) if row else None

    def ledger(self, delivery_id: str) -> list[LedgerEntry]:
        rows = self.db.execute(
            "SELECT seq, delivery_id, at, event, detail FROM delivery_ledger WHERE delivery_id = ? ORDER BY seq",
            (delivery_id,),
        ).fetchall()
        return [LedgerEntry(r[0], r[1], _dt(r[2]) or utcnow(), r[3], r[4]) for r in rows]

    def pending_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM deliveries WHERE state IN ('queued', 'in_flight')").fetchone()[0])

    def next_due_at(self) -> datetime | None:
        # Only rows not waiting behind an earlier one (see claim_due): the blocker's time counts.
        row = self.db.execute(
            "SELECT min(CASE d.state WHEN 'queued' THEN d.next_attempt_at ELSE d.lease_until END) FROM deliveries d "
            "WHERE d.state IN ('queued', 'in_flight') AND NOT EXISTS (SELECT 1 FROM deliveries e "
            "WHERE e.encounter_id = d.encounter_id AND e.target = d.target AND e.seq < d.seq "
            "AND e.state IN ('queued', 'in_flight'))"
        ).fetchone()
        return _dt(row[0]) if row and row[0] else None

    # ------------------------------------------------------------------ operator actions

    def retry(self, delivery_id: str) -> Delivery:
        """Queue a failed (or waiting) delivery to be tried now, with a fresh attempt budget."""
        now = self.clock()
        with self.store.tx() as db:
            row = db.execute("SELECT state FROM deliveries WHERE id = ?" + (" FOR UPDATE" if self._postgres else ""),
                             (delivery_id,)).fetchone()
            if row is None:
                raise OutboxError(f"no delivery {delivery_id}")
            if row[0] == DeliveryState.delivered.value:
                raise OutboxError(f"delivery {delivery_id} is already delivered")
            if row[0] == DeliveryState.in_flight.value:
                raise OutboxError(f"delivery {delivery_id} is being delivered right now")
            db.execute(
                "UPDATE deliveries SET state = 'queued', attempts = 0, next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (_ts(now), _ts(now), delivery_id),
            )
            self._ledger(db, delivery_id, "retry_requested", None)
        self._notify([delivery_id])
        d = self.delivery(delivery_id)
        assert d is not None
        return d

    # ------------------------------------------------------------------ worker side

    def _ledger(self, db: sqlite3.Connection, delivery_id: str, event: str, detail: str | None) -> None:
        db.execute(
            "INSERT INTO delivery_ledger (delivery_id, at, event, detail) VALUES (?, ?, ?, ?)",
            (delivery_id, _ts(self.clock()), event, detail),
        )

    def record(self, delivery_id: str, event: str, detail: str | None = None,
               earlier: Sequence[tuple[str, str | None]] = ()) -> None:
        """Append ledger entries (``earlier`` first) and commit them: called before the step the
        last one announces leaves the machine."""
        with self.store.tx() as db:
            for ev, det in earlier:
                self._ledger(db, delivery_id, ev, det)
            self._ledger(db, delivery_id, event, detail)

    def claim_due(self, limit: int, lease_s: float) -> list[str]:
        """Take up to ``limit`` due rows: queued and due, or in flight with an expired lease."""
        now = self.clock()
        with self.store.tx() as db:
            rows = db.execute(
                """
                SELECT d.id, d.state FROM deliveries d
                WHERE ((d.state = 'queued' AND d.next_attempt_at <= :now)
                       OR (d.state = 'in_flight' AND d.lease_until <= :now))
                  AND NOT EXISTS (
                      SELECT 1 FROM deliveries e
                      WHERE e.encounter_id = d.encounter_id AND e.target = d.target AND e.seq < d.seq
                        AND e.state IN ('queued', 'in_flight'))
                ORDER BY d.next_attempt_at, d.seq
                LIMIT :limit
                """ + (" FOR UPDATE OF d SKIP LOCKED" if self._postgres else ""),  # replicas claim disjoint rows
                {"now": _ts(now), "limit": limit},
            ).fetchall()
            lease = _ts(now + timedelta(seconds=lease_s))
            for did, state in rows:
                db.execute(
                    "UPDATE deliveries SET state = 'in_flight', lease_until = ?, attempts = attempts + 1, "
                    "updated_at = ? WHERE id = ?",
                    (lease, _ts(now), did),
                )
                self._ledger(db, did, "claimed" if state == "queued" else "reclaimed_after_lease", None)
        ids = [r[0] for r in rows]
        self._notify(ids)
        return ids

    def job_for(self, delivery_id: str) -> DeliveryJob:
        d = self.delivery(delivery_id)
        if d is None or d.signature_id is None:
            raise OutboxError(f"no delivery {delivery_id}")
        signed = self.signature(d.signature_id)
        assert signed is not None
        context = self._signature_context(d.signature_id)
        replaced_rid = replaced_version = None
        if signed.replaces:
            old = self.signature(signed.replaces)
            replaced_version = old.version if old else None
            row = self.db.execute(
                "SELECT resource_id FROM deliveries WHERE signature_id = ? AND target = ? AND action = 'create' "
                "AND state = 'delivered'",
                (signed.replaces, d.target),
            ).fetchone()
            replaced_rid = row[0] if row else None
        resource_id = None
        if d.action == "retract":
            row = self.db.execute(
                "SELECT resource_id FROM deliveries WHERE signature_id = ? AND target = ? AND action = 'create' "
                "AND state = 'delivered'",
                (d.signature_id, d.target),
            ).fetchone()
            resource_id = row[0] if row else None
        events = {e.event for e in self.ledger(delivery_id)}
        return DeliveryJob(
            delivery_id=delivery_id, action=d.action, signed=signed, context=context,
            replaced_resource_id=replaced_rid, replaced_version=replaced_version, resource_id=resource_id,
            attempted_before=bool(events.intersection(_WRITE_EVENTS)),
        )

    def _transition(self, delivery_id: str, set_sql: str, params: Sequence[Any], event: str, detail: str | None,
                    earlier: Sequence[tuple[str, str | None]]) -> None:
        """One state change of a delivery: the ledger events buffered during the attempt, the
        row update and its own ledger event, in one transaction; then the listeners."""
        now = self.clock()
        with self.store.tx() as db:
            for ev, det in earlier:
                self._ledger(db, delivery_id, ev, det)
            db.execute(f"UPDATE deliveries SET {set_sql}, lease_until = NULL, updated_at = ? WHERE id = ?",
                       (*params, _ts(now), delivery_id))
            self._ledger(db, delivery_id, event, detail)
        self._notify([delivery_id])

    def mark_delivered(self, delivery_id: str, result: DeliveryResult,
                       earlier: Sequence[tuple[str, str | None]] = ()) -> None:
        self._transition(delivery_id, "state = 'delivered', resource_id = ?, location = ?, error = NULL",
                         (result.resource_id, result.location), "delivered",
                         " ".join(x for x in (result.resource_id, result.detail) if x), earlier)

    def mark_failed(self, delivery_id: str, error: str, earlier: Sequence[tuple[str, str | None]] = ()) -> None:
        self._transition(delivery_id, "state = 'failed', error = ?", (error,), "failed", error, earlier)

    def mark_retry(self, delivery_id: str, error: str, delay_s: float,
                   earlier: Sequence[tuple[str, str | None]] = ()) -> None:
        due = _ts(self.clock() + timedelta(seconds=delay_s))
        self._transition(delivery_id, "state = 'queued', error = ?, next_attempt_at = ?", (error, due),
                         "retry_scheduled", f"in {delay_s:.1f}s: {error}", earlier)


class OutboxWorker:
    """Delivers due rows through their targets; run it in the service or via ``scribe deliver``.

    Store calls go through ``astore`` (an ``AsyncStore``) when given, so SQLite fsyncs never block
    the event loop; without it they run inline (fine for the CLI and tests).
    """

    def __init__(
        self,
        outbox: Outbox,
        targets: Mapping[str, DeliveryTarget],
        *,
        concurrency: int = 4,
        lease_s: float = 120.0,
        max_attempts: int = 40,
        backoff_base_s: float = 2.0,
        backoff_max_s: float = 600.0,
        poll_s: float = 5.0,
        astore: AsyncStore | None = None,
        on_event: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.targets = dict(targets)
        self.concurrency = max(1, concurrency)
        self.lease_s = lease_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.poll_s = poll_s
        self.astore = astore
        self._wake = asyncio.Event()
        self._subscribers: list[asyncio.Queue[Delivery]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe = outbox.add_listener(self._on_change)
        if on_event is not None:
            self._unsubscribe_cb = outbox.add_listener(on_event)

    @classmethod
    def from_settings(cls, outbox: Outbox, settings: Settings, **kwargs: Any) -> OutboxWorker:
        from scribe.fhir.targets import targets_from_settings

        fhir = settings.fhir
        kwargs.setdefault("lease_s", fhir.lease_s)
        kwargs.setdefault("max_attempts", fhir.max_attempts)
        kwargs.setdefault("backoff_base_s", fhir.backoff_base_s)
        kwargs.setdefault("backoff_max_s", fhir.backoff_max_s)
        return cls(outbox, targets_from_settings(settings), **kwargs)

    # -- events

    def _on_change(self, delivery: Delivery) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        def push() -> None:
            self._wake.set()
            for q in self._subscribers:
                q.put_nowait(delivery)
        try:
            if asyncio.get_running_loop() is loop:
                push()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(push)

    async def events(self) -> AsyncIterator[Delivery]:
        """Every delivery status change (queued, in flight, delivered, failed …), as it happens."""
        self._loop = asyncio.get_running_loop()
        q: asyncio.Queue[Delivery] = asyncio.Queue()
        self._subscribers.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.remove(q)

    def wake(self) -> None:
        """Look for due work now (e.g. right after a sign)."""
        self._wake.set()

    # -- running

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        if self.astore is not None:
            result: T = await self.astore.call(fn, *args)
            return result
        return fn(*args)

    async def run_once(self) -> int:
        """Deliver everything due now (in batches of ``concurrency``); returns rows processed."""
        self._loop = asyncio.get_running_loop()
        done = 0
        while True:
            ids = await self._db(self.outbox.claim_due, self.concurrency, self.lease_s)
            if not ids:
                return done
            await asyncio.gather(*(self._deliver(did) for did in ids))
            done += len(ids)

    async def run_until_idle(self, *, max_wait_s: float | None = None) -> int:
        """Deliver until nothing is queued or in flight, waiting out backoffs (up to ``max_wait_s``)."""
        self._loop = asyncio.get_running_loop()
        loop = asyncio.get_running_loop()
        deadline = None if max_wait_s is None else loop.time() + max_wait_s
        done = 0
        while True:
            done += await self.run_once()
            nxt = await self._db(self.outbox.next_due_at)
            if nxt is None:
                return done
            wait = max(0.0, (nxt - self.outbox.clock()).total_seconds())
            if deadline is not None and loop.time() + wait > deadline:
                return done
            await self._sleep_or_wake(min(wait, self.poll_s) if wait > 0 else 0.01)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Deliver forever (until ``stop`` is set): the service's background task."""
        self._loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.run_once()
                nxt = await self._db(self.outbox.next_due_at)
            except Exception:
                log.exception("outbox worker pass failed")
                nxt = None
            wait = self.poll_s if nxt is None else min(self.poll_s, max(0.0, (nxt - self.outbox.clock()).total_seconds()))
            await self._sleep_or_wake(max(wait, 0.01), stop)

    async def _sleep_or_wake(self, seconds: float, stop: asyncio.Event | None = None) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(self._wake.wait())]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def aclose(self) -> None:
        self._unsubscribe()
        for t in self.targets.values():
            await t.aclose()

    async def _deliver(self, delivery_id: str) -> None:
        job = await self._db(self.outbox.job_for, delivery_id)
        delivery = await self._db(self.outbox.delivery, delivery_id)
        assert delivery is not None
        target = self.targets.get(delivery.target)
        if target is None:
            await self._db(self.outbox.mark_failed, delivery_id,
                           f"target {delivery.target!r} is not configured here (configured: "
                           f"{', '.join(self.targets) or 'none'})")
            return

        # Informational entries ride along with the next durable write; a write-ahead entry
        # (``post_started``) is committed before the call that it announces (one fsync, not five).
        buffered: list[tuple[str, str | None]] = []

        async def ledger(event: str, detail: str | None) -> None:
            if event in _WRITE_EVENTS:
                await self._db(self.outbox.record, delivery_id, event, detail, list(buffered))
                buffered.clear()
            else:
                buffered.append((event, detail))

        job.ledger = ledger
        try:
            result = await target.deliver(job)
        except DeliveryError as exc:
            # The EHR is down, overloaded or unreachable: keep trying (at the capped backoff)
            # however long the outage lasts; the note must reach the chart without a person.
            await self._handle_error(delivery, exc.message, exc.retryable, exc.retry_after, buffered,
                                     give_up=False)
            return
        except Exception as exc:  # noqa: BLE001 -- a bug or unexpected library error: keep the row, retry later
            # Type and code location only: an exception's message may quote note text (PHI).
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            log.error("delivery %s: unexpected %s at %s:%s", delivery_id, type(exc).__name__,
                      frame.filename if frame else "?", frame.lineno if frame else "?")
            await self._handle_error(delivery, f"internal error ({type(exc).__name__}); will retry", True, None,
                                     buffered)
            return
        await self._db(self.outbox.mark_delivered, delivery_id, result, buffered)
        log.info("delivery %s delivered to %s as %s", delivery_id, delivery.target, result.resource_id)

    async def _handle_error(self, delivery: Delivery, message: str, retryable: bool, retry_after: float | None,
                            earlier: Sequence[tuple[str, str | None]] = (), *, give_up: bool = True) -> None:
        """``give_up``: park after ``max_attempts`` (for unexpected errors, which may be bugs that
        retrying will not fix); transient EHR errors retry indefinitely at the backoff cap."""
        if not retryable:
            log.warning("delivery %s failed permanently (attempt %d)", delivery.id, delivery.attempts)
            await self._db(self.outbox.mark_failed, delivery.id, message, earlier)
            return
        if give_up and delivery.attempts >= self.max_attempts:
            await self._db(self.outbox.mark_failed, delivery.id,
                           f"gave up after {delivery.attempts} attempts: {message}", earlier)
            return
        delay = backoff_delay(delivery.attempts, base=self.backoff_base_s, cap=self.backoff_max_s,
                              retry_after=retry_after)
        log.info("delivery %s attempt %d failed; retry in %.1fs", delivery.id, delivery.attempts, delay)
        await self._db(self.outbox.mark_retry, delivery.id, message, delay, earlier)


Action = Literal["create", "retract"]
