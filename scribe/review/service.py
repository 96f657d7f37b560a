"""Review actions against the store: each one a single transaction with its audit records.

``ReviewService`` is synchronous and runs on the store's thread (the API calls it through
``AsyncStore.call``), so a draft version, its audit rows, a signature and its queued delivery
are written together or not at all (``Store.tx()`` is re-entrant: the notes repository and the
outbox join the same transaction).

The ``review_events`` table is append-only by use (nothing here updates or deletes a row); the
audit-trail feature hash-chains it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..models import Delivery, EncounterStatus, Note, SignedNote, utcnow
from ..store import Store
from ..trust.crypto import EncryptedColumn, open_text, seal_text
from .edits import Change, EditError, apply_edits, resolve_flag, review_state
from .models import (
    AmendRequest,
    DeliveryView,
    DraftProgress,
    DraftUpdate,
    DraftView,
    EncounterList,
    EncounterSummary,
    FlagResolution,
    ReviewEvent,
    ReviewState,
    SignRequest,
    SignResult,
    TranscriptView,
)

if TYPE_CHECKING:
    from ..fhir.outbox import Outbox
    from ..notes.repo import NoteRepo

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE review_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        encounter_id TEXT NOT NULL,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        sentence_id TEXT,
        flag_kind TEXT,
        resolution TEXT,
        reason TEXT,
        before TEXT,
        after TEXT,
        draft_version INTEGER
    );
    CREATE INDEX review_events_by_encounter ON review_events (encounter_id, seq)
    """,
]

ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn("review_events", "before", ("seq",), text=True),
    EncryptedColumn("review_events", "after", ("seq",), text=True),
    EncryptedColumn("review_events", "reason", ("seq",), text=True),
)
"""The PHI columns of these tables (sentence text before and after a change, the clinician's
reason), collected by ``scribe/database.py`` so that key rotation and the key check at open
walk them."""
ENCOUNTER_TABLES: tuple[str, ...] = ("review_events",)
"""Tables whose rows for an encounter consent withdrawal deletes (collected by ``scribe/database.py``)."""


class ReviewError(EditError):
    """A refused review action (the message is shown to the clinician as is)."""


class ReviewService:
    def __init__(self, store: Store, repo: NoteRepo, outbox: Outbox):
        self.store = store
        self.repo = repo
        self.outbox = outbox
        self.progress: dict[str, DraftProgress] = {}
        """Drafts being written now (set by the API's drafting task)."""
        store.migrate_component("review", MIGRATIONS)

    # ------------------------------------------------------------------ reads

    def _encounter(self, encounter_id: str):
        enc = self.store.get_encounter(encounter_id)
        if enc is None:
            raise ReviewError(f"no encounter {encounter_id}", status=404)
        return enc

    def _latest(self, encounter_id: str) -> tuple[int, Note] | None:
        """(version, note) of the latest draft version (``NoteRepo.versions``: oldest first)."""
        versions = self.repo.versions(encounter_id)
        if not versions:
            return None
        last = versions[-1]
        return int(last.version), last.note

    def _last_event(self, encounter_id: str, action: str) -> tuple[int | None, str | None] | None:
        row = self.store.db.execute(
            "SELECT draft_version, reason, seq FROM review_events WHERE encounter_id = ? AND action = ? "
            "ORDER BY seq DESC LIMIT 1",
            (encounter_id, action),
        ).fetchone()
        return (row[0], self._open(row[1], "reason", row[2])) if row else None

    # before/after (sentence text) and reason (typed by the clinician) are content: encrypted
    # under the store's keyring, bound to the event's seq (ENCRYPTED_COLUMNS above).

    @property
    def _keyring(self):
        return getattr(self.store, "keyring", None)

    def _open(self, value: str | None, column: str, seq: int) -> str | None:
        return None if value is None else open_text(self._keyring, value, "review_events", column, (seq,))

    def _signed(self, encounter_id: str) -> list[SignedNote]:
        return list(self.outbox.signed(encounter_id))

    def _deliveries(self, encounter_id: str) -> list[Delivery]:
        return list(self.outbox.deliveries(encounter_id))

    def _current_delivery(self, encounter_id: str, signed: list[SignedNote]) -> Delivery | None:
        deliveries = [d for d in self._deliveries(encounter_id) if d.action == "create"]
        if not deliveries:
            return None
        live = [s for s in signed if s.retracted_at is None]
        if live:
            sig = live[-1]
            mine = [d for d in deliveries if (d.signature_id and d.signature_id == sig.id)
                    or (d.version is not None and d.version == sig.version)]
            if mine:
                return mine[-1]
        return deliveries[-1]

    def summary(self, encounter_id: str) -> EncounterSummary:
        enc = self._encounter(encounter_id)
        latest = self._latest(encounter_id)
        signed = self._signed(encounter_id)
        sign_event = self._last_event(encounter_id, "sign")
        signed_current = bool(signed) and latest is not None and (
            sign_event is None or sign_event[0] is None or sign_event[0] >= latest[0]
        )
        delivery = self._current_delivery(encounter_id, signed) if signed else None
        state = review_state(enc.status, has_draft=latest is not None, signed_current=signed_current,
                             delivery=delivery, drafting=encounter_id in self.progress
                             and not self.progress[encounter_id].finished)
        note = latest[1] if latest else None
        return EncounterSummary(
            id=enc.id,
            patient_ref=enc.patient_ref,
            clinician_id=enc.clinician_id,
            status=enc.status.value,
            state=state,
            created_at=enc.created_at,
            updated_at=enc.updated_at,
            segment_count=enc.segment_count,
            draft_version=latest[0] if latest else None,
            sentences=len(note.sentences()) if note else 0,
            open_flags=len(note.open_flags) if note else 0,
            signed_version=signed[-1].version if signed else None,
            delivery=delivery,
        )

    def list(self, state: ReviewState | None = None, query: str | None = None, limit: int = 200,
             clinician_id: str | None = None) -> EncounterList:
        """``clinician_id``: only that clinician's encounters (a per-clinician token); None: all."""
        summaries = [self.summary(e.id) for e in self.store.list_encounters(clinician_id, limit=limit)]
        counts = {s: 0 for s in ReviewState}
        for s in summaries:
            counts[s.state] += 1
        if state is not None:
            summaries = [s for s in summaries if s.state is state]
        if query:
            q = query.lower()
            summaries = [s for s in summaries if q in s.id.lower() or q in s.patient_ref.lower()
                         or q in s.clinician_id.lower()]
        return EncounterList(encounters=summaries, counts=counts)

    def transcript(self, encounter_id: str, since: int = 0) -> TranscriptView:
        enc = self._encounter(encounter_id)
        # The record pass's segments where it has re-transcribed the audio, the live ones after
        # (Store.transcript); ``since`` counts positions in that list.
        return TranscriptView(encounter_id=enc.id, status=enc.status.value,
                              segments=self.store.transcript(encounter_id)[since:],
                              segment_count=enc.segment_count, revisions=self.store.record_progress(encounter_id)[2])

    def draft(self, encounter_id: str) -> DraftView:
        summary = self.summary(encounter_id)
        latest = self._latest(encounter_id)
        if latest is None:
            progress = self.progress.get(encounter_id)
            hint = "it is being written now" if progress and not progress.finished else (
                "start one with POST /v1/review/encounters/{id}/draft once the recording has stopped"
            )
            raise ReviewError(f"encounter {encounter_id} has no draft yet; {hint}", status=404)
        version, note = latest
        return DraftView(encounter_id=encounter_id, version=version, note=note, state=summary.state,
                         open_flags=len(note.open_flags), progress=self.progress.get(encounter_id))

    def deliveries(self, encounter_id: str) -> DeliveryView:
        self._encounter(encounter_id)
        return DeliveryView(encounter_id=encounter_id, signed=self._signed(encounter_id),
                            deliveries=self._deliveries(encounter_id))

    def events(self, encounter_id: str) -> list[ReviewEvent]:
        self._encounter(encounter_id)
        rows = self.store.db.execute(
            "SELECT seq, encounter_id, at, actor, action, sentence_id, flag_kind, resolution, reason, before, "
            "after, draft_version FROM review_events WHERE encounter_id = ? ORDER BY seq",
            (encounter_id,),
        ).fetchall()
        keys = ("seq", "encounter_id", "at", "actor", "action", "sentence_id", "flag_kind", "resolution", "reason",
                "before", "after", "draft_version")
        out = []
        for r in rows:
            event = dict(zip(keys, r))
            for column in ("reason", "before", "after"):
                event[column] = self._open(event[column], column, event["seq"])
            out.append(ReviewEvent.model_validate(event))
        return out

    # ------------------------------------------------------------------ writes

    def _record(self, encounter_id: str, actor: str, changes: list[Change], version: int | None) -> None:
        at = utcnow().isoformat()
        with self.store.tx() as db:
            for c in changes:
                cur = db.execute(
                    "INSERT INTO review_events (encounter_id, at, actor, action, sentence_id, flag_kind, resolution, "
                    "reason, before, after, draft_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                    (encounter_id, at, actor, c.action, c.sentence_id, c.flag_kind, c.resolution,
                     *((None, None, None) if self._keyring else (c.reason, c.before, c.after)), version),
                )
                seq = cur.fetchone()[0]
                if self._keyring is not None:
                    # The AAD names the row's seq, known only after the insert (same transaction).
                    db.execute(
                        "UPDATE review_events SET reason = ?, before = ?, after = ? WHERE seq = ?",
                        (*(None if v is None else seal_text(self._keyring, v, "review_events", col, (seq,))
                           for col, v in (("reason", c.reason), ("before", c.before), ("after", c.after))), seq),
                    )

    def _editable(self, encounter_id: str, base_version: int) -> tuple[int, Note]:
        summary = self.summary(encounter_id)
        latest = self._latest(encounter_id)
        if latest is None:
            raise ReviewError(f"encounter {encounter_id} has no draft to edit", status=404)
        if summary.state in (ReviewState.signed, ReviewState.delivered, ReviewState.failed):
            raise ReviewError("this note is signed; start an amendment to change it", status=409)
        if summary.state is ReviewState.drafting:
            raise ReviewError("the draft is still being written; wait until it is ready", status=409)
        if base_version != latest[0]:
            raise ReviewError(
                f"the draft changed since you opened it (you edited version {base_version}, the latest is "
                f"{latest[0]}); reload and redo the change",
                status=409,
            )
        return latest

    def _save(self, encounter_id: str, note: Note, actor: str, changes: list[Change]) -> DraftView:
        with self.store.tx():
            version = self.repo.save_draft(note, actor)
            self._record(encounter_id, actor, changes, version)
        log.info("draft edited", extra={"encounter": encounter_id, "version": version, "changes": len(changes)})
        return self.draft(encounter_id)

    def save_generated(self, encounter_id: str, note: Note, actor: str = "scribe") -> DraftView:
        """A freshly written draft (not a clinician edit)."""
        with self.store.tx():
            version = self.repo.save_draft(note, actor)
            self._record(encounter_id, actor, [Change("draft", after=note.writer)], version)
            enc = self._encounter(encounter_id)
            if enc.status in (EncounterStatus.transcribed, EncounterStatus.drafting):
                self.store.set_status(encounter_id, EncounterStatus.draft_ready)
        return self.draft(encounter_id)

    def update_draft(self, encounter_id: str, update: DraftUpdate, actor: str) -> DraftView:
        version, old = self._editable(encounter_id, update.base_version)
        if update.note.encounter_id != encounter_id:
            raise ReviewError(f"the note is for encounter {update.note.encounter_id!r}, not {encounter_id!r}")
        new, changes = apply_edits(old, update.note, self.store.transcript(encounter_id))
        if not changes:
            return self.draft(encounter_id)
        return self._save(encounter_id, new, actor, changes)

    def resolve(self, encounter_id: str, req: FlagResolution, actor: str) -> DraftView:
        version, old = self._editable(encounter_id, req.base_version)
        new, changes = resolve_flag(old, self.store.transcript(encounter_id), sentence_id=req.sentence_id,
                                    flag=req.flag, resolution=req.resolution, reason=req.reason, text=req.text)
        return self._save(encounter_id, new, actor, changes)

    def sign(self, encounter_id: str, req: SignRequest, actor: str) -> SignResult:
        if not req.confirm:
            raise ReviewError("signing needs confirm=true (the clinician confirmed the note is correct)")
        summary = self.summary(encounter_id)
        latest = self._latest(encounter_id)
        if latest is None:
            raise ReviewError(f"encounter {encounter_id} has no draft to sign", status=404)
        version, note = latest
        if req.version != version:
            raise ReviewError(f"the draft changed since you read it (version {req.version}, latest {version}); "
                              "read it again before signing", status=409)
        if summary.state in (ReviewState.signed, ReviewState.delivered, ReviewState.failed):
            signed = self._signed(encounter_id)
            return SignResult(signed=signed[-1], deliveries=self._deliveries(encounter_id))
        n_open = len(note.open_flags)
        if n_open:
            raise ReviewError(
                f"cannot sign: {n_open} flag{'s' if n_open != 1 else ''} still open. Resolve each one (edit the "
                "sentence, accept it with a reason, or delete it) first.",
                status=409,
            )
        from ..fhir.outbox import SignRefused

        # An amendment in progress (or any signed version still active) is replaced, not signed
        # beside: the EHR then shows the new version superseding the old.
        active = [x for x in self._signed(encounter_id) if x.retracted_at is None]
        with self.store.tx():
            try:
                if active:
                    signed = self.outbox.amend(note, actor, replaces=active[-1].id)
                else:
                    signed = self.outbox.sign(note, actor)
            except SignRefused as exc:
                raise ReviewError(f"cannot sign: {exc}", status=409) from None
            self._record(encounter_id, actor, [Change("sign", after=signed.id)], version)
            self.store.set_status(encounter_id, EncounterStatus.signed)
        log.info("note signed", extra={"encounter": encounter_id, "version": signed.version})
        return SignResult(signed=signed, deliveries=self._deliveries(encounter_id))

    def amend(self, encounter_id: str, req: AmendRequest, actor: str) -> DraftView:
        """Open a signed note for amendment: its text becomes a new draft version to edit and sign
        again; the new signature replaces the old one in the EHR."""
        summary = self.summary(encounter_id)
        if summary.state not in (ReviewState.signed, ReviewState.delivered, ReviewState.failed):
            raise ReviewError("only a signed note can be amended; this one is "
                              f"{summary.state.label}", status=409)
        signed = [s for s in self._signed(encounter_id) if s.retracted_at is None]
        if not signed:
            raise ReviewError("this note has no signed version to amend", status=409)
        note = signed[-1].note
        with self.store.tx():
            version = self.repo.save_draft(note, actor)
            self._record(encounter_id, actor, [Change("amend", reason=req.reason, before=signed[-1].id)], version)
            self.store.set_status(encounter_id, EncounterStatus.draft_ready)
        return self.draft(encounter_id)

    def retry(self, delivery_id: str) -> Delivery:
        from ..fhir.outbox import OutboxError

        if self.outbox.delivery(delivery_id) is None:
            raise ReviewError(f"no delivery {delivery_id}", status=404)
        try:
            return self.outbox.retry(delivery_id)
        except OutboxError as exc:
            raise ReviewError(str(exc), status=409) from None
