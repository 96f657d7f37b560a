"""The consent gate, consent withdrawal, and retention purges.

Policy first, I/O second: :func:`validate_consent` and :func:`withdrawal_plan` are pure (a
record or an encounter in, a decision out) so the rules can be read and tested on their own;
:func:`apply_withdrawal` and :func:`purge_expired` carry them out against the store, each
deletion in the same transaction as its audit record.

Why these rules:

- Recording needs a consent that says *who* agreed (the patient or someone entitled to agree
  for them), *how* (verbal, written, electronic), *when*, and *who recorded it*. A bare
  ``given: true`` proves nothing to a privacy office.
- Withdrawal deletes what the recording produced (audio, transcript, drafts and review edits
  of that encounter) and keeps the audit trail, which holds ids and codes only. A note that was
  already signed is part of the medical record: it is not deleted automatically, the plan is
  refused so a person decides.
- Retention: audio is the most identifying artefact and the least needed once the transcript
  exists, so it goes first; unsigned drafts go after their own period; signed notes and
  transcripts that back them are kept (delivered notes live in the EHR's retention regime).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..models import EncounterStatus, utcnow
from .audit import Action, AuditLog, Outcome
from .ports import EncounterStore, TrustStore

log = logging.getLogger(__name__)

SIGNED_STATUSES = frozenset({EncounterStatus.signed.value, EncounterStatus.delivered.value})


class ConsentReason(StrEnum):
    missing = "consent_missing"
    not_given = "consent_not_given"
    incomplete = "consent_incomplete"
    invalid = "consent_invalid"
    stale = "consent_stale"
    future = "consent_in_future"
    withdrawal_after_signature = "withdrawal_after_signature"


class ConsentError(Exception):
    """Consent refused. ``reason`` is fine-grained; ``code`` is the protocol error code
    (``consent_required``) the server sends. The message names fields, never values."""

    code = "consent_required"

    def __init__(self, reason: ConsentReason, message: str, missing: tuple[str, ...] = ()):
        super().__init__(message)
        self.reason = reason
        self.missing = missing


class ConsentRecord(BaseModel):
    """A complete consent: who agreed, how, when, and who recorded it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    given: Literal[True]
    given_by: Literal["patient", "guardian", "representative"]
    method: Literal["verbal", "written", "electronic"]
    at: datetime
    recorded_by: str


@dataclass(frozen=True)
class ConsentPolicy:
    max_age: timedelta = timedelta(hours=24)
    """Consent must have been recorded this recently before recording starts."""
    clock_skew: timedelta = timedelta(minutes=5)
    """Tolerance for a client clock slightly ahead of the server's."""


_REQUIRED = ("given_by", "method", "at", "recorded_by")


def validate_consent(consent: Any, *, now: datetime | None = None,
                     policy: ConsentPolicy = ConsentPolicy()) -> ConsentRecord:
    """The consent as a :class:`ConsentRecord`, or :class:`ConsentError` saying what is wrong.

    Accepts ``scribe.models.Consent`` (which does not yet carry ``given_by``), a dict, or a
    :class:`ConsentRecord`.
    """
    now = now or utcnow()
    if consent is None:
        raise ConsentError(ConsentReason.missing, "recording needs a recorded patient consent")
    if isinstance(consent, BaseModel):
        data = consent.model_dump()
    elif isinstance(consent, Mapping):
        data = dict(consent)
    else:
        raise ConsentError(ConsentReason.invalid, "consent must be an object")
    if data.get("given") is not True:
        raise ConsentError(ConsentReason.not_given, "the patient has not given consent to recording")
    if data.get("method") == "unspecified":
        data["method"] = None
    if isinstance(data.get("recorded_by"), str) and not data["recorded_by"].strip():
        data["recorded_by"] = None
    missing = tuple(f for f in _REQUIRED if data.get(f) in (None, ""))
    if missing:
        raise ConsentError(ConsentReason.incomplete, f"consent is missing: {', '.join(missing)}", missing)
    try:
        record = ConsentRecord.model_validate(data)
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors() if e.get("loc")})
        raise ConsentError(ConsentReason.invalid, f"consent has invalid fields: {', '.join(fields)}",
                           tuple(fields)) from None
    if record.at.tzinfo is None:
        raise ConsentError(ConsentReason.invalid, "consent time must include a timezone", ("at",))
    if record.at > now + policy.clock_skew:
        raise ConsentError(ConsentReason.future, "consent time is in the future", ("at",))
    if now - record.at > policy.max_age:
        raise ConsentError(ConsentReason.stale, "consent was recorded too long ago; record it again for this visit",
                           ("at",))
    return record


# --------------------------------------------------------------------------- withdrawal


@dataclass(frozen=True)
class PurgeTarget:
    table: str
    where: str
    """SQL condition with one ``?`` for the encounter id."""


@dataclass(frozen=True)
class WithdrawalPlan:
    encounter_id: str
    delete: tuple[PurgeTarget, ...]
    keep: tuple[str, ...] = ("audit_log", "encounters")
    blocked: ConsentReason | None = None


def withdrawal_plan(encounter: Any, tables: Sequence[str]) -> WithdrawalPlan:
    """What withdrawing consent for ``encounter`` deletes (pure): its rows of ``tables`` (the
    tables each schema says hold an encounter's content, ``scribe.database.WITHDRAWAL_TABLES``:
    this package names no feature's table). Optional tables (a feature not installed) are
    skipped when absent.

    Refused (``blocked``) when a note was already signed: that is medical record, and its
    removal is a decision for a person under the site's records policy, not an automatism.
    """
    status = getattr(encounter, "status", None)
    status = getattr(status, "value", status)
    blocked = ConsentReason.withdrawal_after_signature if status in SIGNED_STATUSES else None
    return WithdrawalPlan(encounter_id=encounter.id, delete=tuple(PurgeTarget(t, "encounter_id = ?") for t in tables),
                          blocked=blocked)


def _existing_columns(db: Any, table: str) -> set[str]:
    columns = getattr(db, "table_columns", None)  # PostgreSQL (scribe.db); SQLite: the PRAGMA
    if columns is not None:
        return set(columns(table))
    return {row[1] for row in db.execute(f'PRAGMA table_info("{table}")').fetchall()}


def _secure_delete(db: Any) -> None:
    # Overwrite freed pages with zeros so deleted audio and text do not linger in the file.
    # (PostgreSQL has no equivalent: dead tuples stay until VACUUM; docs/deployment.md.)
    if getattr(db, "dialect", "sqlite") == "sqlite":
        db.execute("PRAGMA secure_delete = ON")


def _checkpoint(store: TrustStore) -> None:
    """Fold the WAL back and truncate it, so deleted content leaves the WAL file too.

    Only outside a caller's transaction; best effort (a reader holding a snapshot can keep
    the WAL alive until it finishes)."""
    if getattr(store, "_tx_depth", 0) == 0 and getattr(store, "dialect", "sqlite") == "sqlite":
        try:
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception:  # pragma: no cover - not fatal: the next checkpoint does it
            log.warning("wal checkpoint after purge failed")


def apply_withdrawal(store: EncounterStore, audit: AuditLog, encounter_id: str, *, tables: Sequence[str], actor: str,
                     now: datetime | None = None) -> dict[str, int]:
    """Carry out consent withdrawal for one encounter in one transaction.

    Records ``consent_withdrawn`` and one ``delete`` entry per table touched (with the row
    count), marks the encounter failed/withdrawn, and returns ``{table: rows deleted}``. The
    caller (the server session) stops recording first.
    """
    encounter = store.get_encounter(encounter_id)
    if encounter is None:
        raise KeyError(f"no encounter {encounter_id}")
    plan = withdrawal_plan(encounter, tables)
    if plan.blocked is not None:
        with store.tx():
            audit.record(actor, Action.consent_withdrawn, "encounter", encounter_id, Outcome.denied,
                         {"reason": plan.blocked.value})
        raise ConsentError(plan.blocked, f"encounter {encounter_id} has a signed note; consent withdrawal after "
                                         "signature needs a records-office decision, nothing was deleted")
    counts: dict[str, int] = {}
    _secure_delete(store.db)
    with store.tx() as db:
        audit.record(actor, Action.consent_withdrawn, "encounter", encounter_id, Outcome.success)
        for target in plan.delete:
            if "encounter_id" not in _existing_columns(db, target.table):
                continue
            n = db.execute(f'DELETE FROM "{target.table}" WHERE {target.where}', (encounter_id,)).rowcount
            counts[target.table] = n
            audit.record(actor, Action.delete, target.table, encounter_id, Outcome.success,
                         {"rows": n, "reason": "consent_withdrawn"})
        status = getattr(EncounterStatus, "withdrawn", EncounterStatus.failed)
        db.execute("UPDATE encounters SET status = ?, updated_at = ? WHERE id = ?",
                   (status.value, (now or utcnow()).isoformat(), encounter_id))
    _checkpoint(store)
    log.info("consent withdrawn for encounter %s: %s", encounter_id, counts)
    return counts


# --------------------------------------------------------------------------- retention


@dataclass
class PurgeReport:
    audio: dict[str, int] = field(default_factory=dict)
    """encounter id → audio frames deleted."""
    drafts: dict[str, int] = field(default_factory=dict)
    """encounter id → draft rows deleted."""
    notes_skipped: str | None = None
    """Why drafts were not purged (no ``notes`` table, or one this code cannot read)."""
    dry_run: bool = False

    @property
    def frames_deleted(self) -> int:
        return sum(self.audio.values())

    @property
    def drafts_deleted(self) -> int:
        return sum(self.drafts.values())


def _iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        raise ValueError("purge times must be timezone-aware")
    return dt.isoformat()


def purge_expired(store: EncounterStore, now: datetime, audio_days: float, draft_days: float, *, drafts_table: str | None,
                  audit: AuditLog | None = None, actor: str = "retention", dry_run: bool = False) -> PurgeReport:
    """Delete audio frames of encounters started more than ``audio_days`` ago, and unsigned
    drafts older than ``draft_days``; one audit ``purge`` entry per encounter and kind.

    "Unsigned draft": a row of ``drafts_table`` (the notes component's, named by
    ``scribe.database.DRAFTS_TABLE``; None: no drafts to purge) whose encounter is not
    signed or delivered (and, if the table has a ``status`` or ``signed_at`` column, whose own
    row is not signed). The draft's age is its ``updated_at``/``created_at`` column when it
    has one, else the encounter's last update. Absent tables are skipped, not an error.
    A ``days`` value ≤ 0 disables that kind of purge.
    """
    report = PurgeReport(dry_run=dry_run)
    if audit is None:
        audit = AuditLog(store)
    db = store.db
    if not dry_run:
        _secure_delete(db)
    with store.tx() as db:
        if audio_days > 0:
            cutoff = _iso(now - timedelta(days=audio_days))
            rows = db.execute(
                "SELECT e.id, count(f.seq) FROM encounters e JOIN frames f ON f.encounter_id = e.id "
                "WHERE e.created_at < ? GROUP BY e.id ORDER BY e.id", (cutoff,)
            ).fetchall()
            for eid, n in rows:
                report.audio[eid] = n
                if not dry_run:
                    db.execute("DELETE FROM frames WHERE encounter_id = ?", (eid,))
                    audit.record(actor, Action.purge, "audio", eid, Outcome.success,
                                 {"rows": n, "reason": "retention", "days": audio_days})
        if draft_days > 0 and drafts_table is None:
            report.notes_skipped = "no drafts table"
        elif draft_days > 0 and drafts_table is not None:
            _purge_drafts(db, drafts_table, audit, report, now, draft_days, actor, dry_run)
    if not dry_run and (report.audio or report.drafts):
        _checkpoint(store)
    log.info("retention purge: %d frames in %d encounters, %d drafts in %d encounters%s",
             report.frames_deleted, len(report.audio), report.drafts_deleted, len(report.drafts),
             " (dry run)" if dry_run else "")
    return report


def _purge_drafts(db: Any, table: str, audit: AuditLog, report: PurgeReport, now: datetime, draft_days: float,
                  actor: str, dry_run: bool) -> None:
    cols = _existing_columns(db, table)
    if not cols:
        report.notes_skipped = "no notes table"
        return
    if "encounter_id" not in cols:
        report.notes_skipped = "notes table has no encounter_id column"
        return
    cutoff = _iso(now - timedelta(days=draft_days))
    time_col = next((f'n."{c}"' for c in ("saved_at", "updated_at", "created_at") if c in cols), "e.updated_at")
    conds = ["e.status NOT IN (?, ?)", f"{time_col} < ?"]
    args: list[Any] = [*sorted(SIGNED_STATUSES), cutoff]
    if "status" in cols:
        conds.append("n.status NOT IN (?, ?)")
        args += sorted(SIGNED_STATUSES)
    if "signed_at" in cols:
        conds.append("n.signed_at IS NULL")
    where = " AND ".join(conds)
    row_key = "ctid" if getattr(db, "dialect", "sqlite") == "postgresql" else "rowid"
    try:
        rows = db.execute(
            f"SELECT n.{row_key}, n.encounter_id FROM {table} n JOIN encounters e ON e.id = n.encounter_id "
            f"WHERE {where}",
            args,
        ).fetchall()
    except Exception as exc:  # e.g. a WITHOUT ROWID table: report, do not guess
        report.notes_skipped = f"notes table not readable for purge ({type(exc).__name__})"
        return
    by_encounter: dict[str, list[int]] = {}
    for rowid, eid in rows:
        by_encounter.setdefault(eid, []).append(rowid)
    for eid in sorted(by_encounter):
        ids = by_encounter[eid]
        report.drafts[eid] = len(ids)
        if dry_run:
            continue
        db.executemany(f"DELETE FROM {table} WHERE {row_key} = ?", [(i,) for i in ids])
        audit.record(actor, Action.purge, "draft", eid, Outcome.success,
                     {"rows": len(ids), "reason": "retention", "days": draft_days})
