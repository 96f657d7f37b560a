"""The one composition root: every long-lived part of the service is built here, once, and
handed to the parts that use it.

``StreamServer`` owns the store, the engines (``engine``), the audit log and its anchor, the
token store and the ``Gate`` (``auth``), the notes repository, the outbox and its delivery
worker, and the review service; it mounts the HTTP routes (``encounters_api``,
``review_api``) and the websocket (one ``session.Connection`` per recording), and runs the
lifecycle: models loaded at startup, the review API's context built on the store's thread,
the retention policy on a schedule, and an orderly shutdown.

Where a request is handled, by file name: ``/v1/stream`` → ``session.py``; ``/v1/encounters…``
→ ``encounters_api.py``; ``/v1/review/…`` → ``review_api.py``; who may call it → ``auth.py``;
how the note is written → ``drafting.py``; speaker labels → ``labelling.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..config import Settings
from ..models import Delivery, Encounter, EncounterStatus, Note, Segment, utcnow
from ..protocol import CloseCode, ErrorCode, ErrorEvent, WithdrawnEvent
from ..store import AsyncStore, Store
from ..trust.anchor import AnchorKeeper
from ..database import DRAFTS_TABLE, WITHDRAWAL_TABLES, open_store
from ..trust.audit import Action as AuditAction
from ..trust.audit import AuditLog, Outcome
from ..trust.consent import ConsentError, ConsentPolicy, apply_withdrawal, purge_expired
from ..trust.tokens import AuthError, TokenStore
from .auth import PRINCIPAL, Gate, audit_id, json_error, ssl_context
from .drafting import write_all
from .encounters_api import EncountersApi
from .engine import Engine
from .review_api import ReviewContext, add_routes
from .session import Connection, Session, send_event

if TYPE_CHECKING:
    from ..fhir.outbox import OutboxWorker

log = logging.getLogger(__name__)


class StreamServer:
    def __init__(self, settings: Settings, *, engine: Engine | None = None, store: Store | None = None):
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.store = AsyncStore(store or open_store(settings))
        raw = self.store.store
        self.audit = AuditLog(raw)
        self.anchors = AnchorKeeper(self.store, self.audit, settings.trust.audit_anchor_interval_s)
        self.tokens = TokenStore(raw, audit=self.audit)
        self.gate = Gate(settings, self.store, self.audit, self.tokens)
        self.consent_policy = ConsentPolicy(max_age=timedelta(hours=settings.trust.consent_max_age_hours))
        self.sessions: dict[str, Session] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.finishing: set[Connection] = set()
        self._purger: asyncio.Task[None] | None = None
        self.review: ReviewContext | None = None
        """The review API's context: built at startup on the store's thread (schema migrations)."""
        self.outbox_worker: Any = None
        self._worker_stop = asyncio.Event()
        self._worker_task: asyncio.Task[None] | None = None

    # -- wiring

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.server.max_message_bytes,
                              middlewares=[self.gate.middleware])
        app.router.add_get("/v1/stream", self.stream)
        EncountersApi(self).add_routes(app)
        add_routes(app, lambda: self.review)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        return app

    def http_options(self) -> dict[str, Any]:
        """Connection limits for ``web.run_app``/``web.AppRunner``: an idle or half-sent request
        is dropped after ``server.idle_timeout_s`` (aiohttp's own default holds it for an hour)."""
        return {"keepalive_timeout": self.settings.server.idle_timeout_s}

    def runner(self, **kwargs: Any) -> web.AppRunner:
        """The application in a runner with the service's connection limits (tests, demo, bench)."""
        return web.AppRunner(self.app(), **self.http_options(), **kwargs)

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS for ``wss://``/``https://`` when ``server.tls_cert_file`` is set (else None)."""
        return ssl_context(self.settings)

    def _build_review(self) -> tuple[ReviewContext, OutboxWorker]:
        """The notes repository, outbox, delivery worker and review service on the service's
        store (runs on the store's thread: their schemas are created here)."""
        from ..fhir.outbox import Outbox, OutboxWorker
        from ..notes.repo import NoteRepo
        from ..review.service import ReviewService

        raw = self.store.store
        outbox = Outbox(raw, settings=self.settings)
        outbox.add_listener(self.audit_delivery)  # deliveries go to the hash-chained audit log
        worker = OutboxWorker.from_settings(outbox, self.settings, astore=self.store)

        def authorize(request: web.Request) -> str | None:
            # The gate has authenticated the caller and scoped encounter routes. A per-clinician
            # token names the actor; a site token lets the body name it.
            principal = request.get(PRINCIPAL)
            if principal is None:
                raise web.HTTPUnauthorized(text="missing bearer token")
            return None if principal.is_admin else principal.clinician_id

        async def write_note(enc: Encounter, segments: list[Segment], progress: Any) -> Note:
            return await write_all(self.engine, enc, segments, progress)

        ctx = ReviewContext(astore=self.store, service=ReviewService(raw, NoteRepo(raw), outbox),
                            authorize=authorize, write_note=write_note, wake_outbox=worker.wake)
        return ctx, worker

    # -- lifecycle

    async def _startup(self, app: web.Application) -> None:
        self.anchors.start()  # audit head anchored now, every trust.audit_anchor_interval_s, and at shutdown
        loop = asyncio.get_running_loop()
        self.review, self.outbox_worker = await self.store.call(self._build_review)
        self.review.listen_outbox(loop)
        self._worker_task = asyncio.create_task(self.outbox_worker.run(self._worker_stop), name="outbox-worker")
        await loop.run_in_executor(self.engine.executor, self.engine.load)
        if self.settings.trust.purge_interval_hours > 0:
            self._purger = asyncio.create_task(self._retention_loop(), name="retention")

    async def _retention_loop(self) -> None:
        """Apply the retention policy (audio and unsigned drafts past their age) now and then
        every ``trust.purge_interval_hours``; each purge is audited by ``purge_expired``."""
        trust = self.settings.trust
        while True:
            try:
                report = await self.store.call(purge_expired, self.store.store, utcnow(), trust.audio_retention_days,
                                               trust.draft_retention_days, drafts_table=DRAFTS_TABLE, audit=self.audit)
                if report.frames_deleted or report.drafts_deleted:
                    log.info("retention purge", extra={"frames": report.frames_deleted,
                                                       "drafts": report.drafts_deleted})
            except Exception:  # a failed purge is retried next time; it must not stop the service
                log.exception("retention purge failed")
            await asyncio.sleep(trust.purge_interval_hours * 3600)

    async def _shutdown(self, app: web.Application) -> None:
        if self.review is not None:
            await self.review.close()
        if self._worker_task is not None:
            self._worker_stop.set()
            self.outbox_worker.wake()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._worker_task, timeout=5.0)
            with contextlib.suppress(Exception):
                await self.outbox_worker.aclose()
        if self._purger is not None:
            self._purger.cancel()
        for session in list(self.sessions.values()):
            await session.ws.close(code=CloseCode.going_away, message=b"server shutting down")
        # Stopped encounters still transcribing after their client left: their audio is in
        # the store, so a restart (or the client's resume) finishes them; cancel here.
        for conn in list(self.finishing):
            await conn.cancel_tasks()
        await self.anchors.stop()

    async def _cleanup(self, app: web.Application) -> None:
        self.store.close()
        self.engine.executor.shutdown(wait=False, cancel_futures=True)
        self.engine.notes_executor.shutdown(wait=False, cancel_futures=True)
        self.engine.record_executor.shutdown(wait=False, cancel_futures=True)

    # -- what the parts ask of the whole

    def audit_delivery(self, delivery: Delivery) -> None:
        """Outbox listener (runs on the store thread after each committed state change):
        a delivered or finally failed note is an audited ``deliver``."""
        state = getattr(delivery.state, "value", delivery.state)
        if state not in ("delivered", "failed"):
            return
        self.audit.record("scribe", AuditAction.deliver, "encounter", audit_id(delivery.encounter_id),
                          Outcome.success if state == "delivered" else Outcome.failed,
                          {"target": audit_id(str(delivery.target)), "version": getattr(delivery, "version", 0) or 0})

    def save_live_draft(self, note: Note) -> int:
        """The draft written during a recording: stored, audited and the encounter marked ready,
        in one transaction (on the store's thread); returns its version."""
        from ..notes.repo import NoteRepo

        raw = self.store.store
        with raw.tx():
            version = NoteRepo(raw).save_draft(note, actor="scribe")
            self.audit.record("scribe", AuditAction.create, "note", audit_id(note.encounter_id), Outcome.success,
                              {"version": version, "writer": note.writer})
            raw.set_status(note.encounter_id, EncounterStatus.draft_ready)
        return version

    async def withdraw_consent(self, encounter_id: str, actor: str, *, via: Connection | None = None) -> dict[str, int]:
        """Consent withdrawn: stop the live recording (if any) and delete the encounter's audio,
        transcript and drafts in one transaction, audited. Raises ``ConsentError`` when a note was
        already signed (nothing is deleted) and ``KeyError`` for an unknown encounter."""
        async with self.lock(encounter_id):
            session = self.sessions.get(encounter_id)
            conn = session.conn if session is not None else None
            if conn is not None:
                session.finishing = False
                await conn.cancel_tasks()
            try:
                deleted = await self.store.call(apply_withdrawal, self.store.store, self.audit, encounter_id,
                                                tables=WITHDRAWAL_TABLES, actor=audit_id(actor))
            except ConsentError as exc:
                if conn is not None:
                    await conn.send(ErrorEvent(code=ErrorCode.consent_required, message=str(exc), fatal=True))
                    await conn.ws.close(code=CloseCode.protocol_error, message=b"withdrawal_after_signature")
                raise
            if conn is not None:
                await conn.send(WithdrawnEvent(encounter_id=encounter_id, deleted=deleted))
                await conn.ws.close(code=CloseCode.normal, message=b"consent withdrawn")
            log.info("consent withdrawn", extra={"encounter": encounter_id, "rows": sum(deleted.values())})
            return deleted

    def lock(self, encounter_id: str) -> asyncio.Lock:
        return self._locks.setdefault(encounter_id, asyncio.Lock())

    # -- the websocket

    async def stream(self, request: web.Request) -> web.WebSocketResponse | web.Response:
        cfg = self.settings.server
        if request.headers.get("Sec-WebSocket-Protocol"):
            # scribe uses no subprotocol. Clients that smuggle a bearer token in this header
            # would have it written to the log by aiohttp's handshake ("client protocols …
            # don't overlap"): refuse before the handshake, without echoing the value.
            log.warning("websocket refused", extra={"reason": "subprotocol"})
            return json_error(400, "scribe uses no websocket subprotocol: send the token as "
                                   "'Authorization: Bearer <token>' and no Sec-WebSocket-Protocol header")
        ws = web.WebSocketResponse(max_msg_size=cfg.max_message_bytes, heartbeat=20.0)
        await ws.prepare(request)
        try:
            principal = await self.gate.authenticate(request)
        except AuthError as exc:
            self.gate.limiter.allow(self.gate.client_address(request), cost=4.0)
            code = CloseCode.unauthorized if exc.code == "missing" else CloseCode.forbidden
            message = "missing bearer token" if exc.code == "missing" else f"invalid bearer token ({exc.code})"
            await send_event(ws, ErrorEvent(code=ErrorCode.unauthorized, message=message, fatal=True))
            await ws.close(code=code, message=message.encode())
            log.warning("websocket refused", extra={"reason": exc.code})
            return ws
        conn = Connection(self, ws, principal)
        watchdog = asyncio.get_running_loop().call_later(cfg.start_timeout_s, conn.expire_unstarted)
        try:
            await conn.run()
        except Exception:
            log.exception("session failed", extra={"encounter": conn.encounter_id})
            await send_event(ws, ErrorEvent(code=ErrorCode.internal, message="internal server error", fatal=True))
            await ws.close(code=CloseCode.internal_error)
        finally:
            watchdog.cancel()
            await conn.shutdown()
        return ws
