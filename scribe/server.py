"""The streaming service: websocket sessions around the protocol, store and transcriber.

One aiohttp application serves the websocket (``/v1/stream``) and a small HTTP API, on one
port. Per connection: the receive loop feeds ``ServerProtocol``; a persister writes frames
to the store in batches and acks them; a transcriber task feeds the audio, in order, to a
streaming transcriber running in the ASR thread pool, commits segments to the store and only
then sends them. Queues are bounded, so a slow transcriber slows reading from the socket
(TCP backpressure) instead of growing memory.

Resume and restart are the same path: on ``start`` for an existing encounter the session
re-reads the persisted audio after the last committed sample, restarts the transcriber
there with the next segment index, and tells the client the next frame it expects.
"""

from __future__ import annotations

import asyncio
from collections import deque
import hmac
import math
import re
import ssl
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
from aiohttp import WSMsgType, web

from .asr.streaming import AgreementTranscriber, Committed, PartialText, UtteranceTranscriber
from .audio import SAMPLE_RATE, Resampler
from .config import Settings
from .diarize.settle import SettledSegments
from .models import EncounterStatus, Segment, Speaker, Transcript, utcnow
from .protocol import (
    ENCOUNTER_ID_PATTERN,
    AckEvent,
    Audio,
    CloseCode,
    DoneEvent,
    Duplicate,
    ErrorCode,
    ErrorEvent,
    PartialEvent,
    ReadyEvent,
    Reject,
    DraftEvent,
    SegmentEvent,
    ServerProtocol,
    SpeakerRevision,
    SpeakersEvent,
    Start,
    StartMessage,
    Stop,
    Withdraw,
    WithdrawnEvent,
    encode_event,
)
from .store import AsyncStore, DatabaseLocked, EncounterConflict, Store, StoreError, StoreFull, StoreIOError
from .trust.audit import Action as AuditAction
from .trust.anchor import AnchorKeeper
from .trust.audit import AuditLog, Outcome, as_code
from .trust.consent import ConsentError, ConsentPolicy, apply_withdrawal, purge_expired, validate_consent
from .trust.ratelimit import RateLimiter
from .trust.tokens import AuthError, Principal, Role, TokenStore, can_access
from .review.api import mount as mount_review

log = logging.getLogger(__name__)

_EOS = object()


PRINCIPAL = web.RequestKey("principal", Principal)
"""Where the auth middleware leaves the caller's ``Principal`` on each ``/v1`` request."""


_STEREO_KEEP_S = 120


def _deinterleave(pcm: bytes) -> np.ndarray:
    """Interleaved PCM16 stereo → ``(n, 2)`` int16."""
    return np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)


def _mixdown(stereo: np.ndarray) -> bytes:
    """What is stored and transcribed for two-channel input: the mean of the channels."""
    return ((stereo[:, 0].astype(np.int32) + stereo[:, 1]) // 2).astype("<i2").tobytes()


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


_LIST_ROUTES = {"/v1/encounters": "encounters", "/v1/review/encounters": "review_encounters"}
"""List reads, audited as ``read`` of an ``encounter_list`` (who looked at which list)."""


def _delivery_encounter(store: Store, delivery_id: str) -> str | None:
    """The encounter a delivery belongs to (None: no such delivery, or no outbox table yet)."""
    try:
        row = store.db.execute("SELECT encounter_id FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    except Exception:  # noqa: BLE001 - the outbox's table is created with the review API
        return None
    return row[0] if row else None


def _audit_id(value: str) -> str:
    """Encounter ids are client-chosen; the audit log accepts only plain codes."""
    return as_code(value, "invalid-id")
_EMPTY = np.zeros(0, dtype=np.float32)


class StreamingTranscriber(Protocol):
    committed_until: int
    next_index: int

    def feed(self, samples: np.ndarray, *, allow_partial: bool = True) -> list[Committed | PartialText]: ...

    def flush(self) -> list[Committed | PartialText]: ...


class Engine:
    """The shared, expensive parts: one recogniser, one VAD factory, one ASR thread pool."""

    def __init__(self, settings: Settings, recognizer: Any | None = None):
        self.settings = settings
        self._recognizer = recognizer
        asr = settings.asr
        # One executor thread per decode worker the recogniser allows (asr.parallelism()).
        self.executor = ThreadPoolExecutor(max_workers=asr.parallelism()[1], thread_name_prefix="scribe-asr")
        self.notes_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scribe-notes")
        """Per-segment drafting work (classification, fact extraction): off the ASR thread."""
        self.speaker_encoder: Any | None = None
        """The voice encoder for speaker labels (None: labels off or the model is missing)."""

    @property
    def recognizer(self) -> Any:
        if self._recognizer is None:
            raise RuntimeError("engine not loaded")
        return self._recognizer

    def load(self) -> None:
        if self.settings.speakers.enabled and self.speaker_encoder is None:
            from .diarize.encoder import EncoderMissing, load_encoder

            try:
                self.speaker_encoder = load_encoder()
            except EncoderMissing as exc:
                # Transcription still works; segments carry speaker "unknown".
                log.warning("speaker labels off: %s", exc)
        if self._recognizer is None:
            from .asr.whisper import WhisperRecognizer

            self._recognizer = WhisperRecognizer.from_settings(self.settings)

    def policy(self) -> str:
        asr = self.settings.asr
        if asr.policy != "auto":
            return asr.policy
        device = getattr(self._recognizer, "device", "cpu")
        return "local_agreement" if device == "cuda" else "utterance"

    def diarizer(self, clinician_id: str, store: Store) -> Any | None:
        """A speaker labeller for one stream, with the clinician's enrolled voice if any."""
        if self.speaker_encoder is None:
            return None
        from .diarize.diarizer import OnlineDiarizer
        from .diarize.profiles import ProfileError, ProfileRepository, resolve_key

        profile = None
        try:
            repo = ProfileRepository(store, resolve_key(self.settings))
            profile = repo.get(clinician_id)
        except (ProfileError, OSError, ValueError) as exc:
            log.warning("voice profile unavailable; roles are inferred: %s", type(exc).__name__)
        try:
            return OnlineDiarizer(self.speaker_encoder, profile=profile)
        except ValueError:  # a profile from another encoder version: re-enrol
            log.warning("voice profile is for another model; roles are inferred")
            return OnlineDiarizer(self.speaker_encoder)

    def draft_session(self, encounter_id: str, language: str) -> Any | None:
        """A note draft that grows with the transcript (None when drafting is off)."""
        notes = self.settings.notes
        if not notes.draft_on_stop:
            return None
        from .notes import load_template
        from .notes.writers import writer_from_settings

        writer = writer_from_settings(self.settings)
        return writer.start(encounter_id, load_template(notes.template, notes.templates_dir), language=language)

    def unsupported_language(self, language: str | None) -> str | None:
        check = getattr(self.recognizer, "unsupported_language", None)
        return check(language) if check else None

    def transcriber(self, *, origin: int, first_index: int, language: str | None = None) -> StreamingTranscriber:
        asr = self.settings.asr
        recognizer = self.recognizer
        if language and language != getattr(recognizer, "language", None):
            recognizer = _SessionLanguage(recognizer, language)
        if self.policy() == "local_agreement":
            return AgreementTranscriber(recognizer, origin=origin, first_index=first_index)
        from .asr.vad import StreamingVad

        config = asr.segmenter_config()
        return UtteranceTranscriber(
            recognizer,
            StreamingVad(),
            config,
            origin=origin,
            first_index=first_index,
            partial_interval_s=asr.partial_interval_s,
            context_s=asr.context_s,
        )


class _SessionLanguage:
    """The shared recogniser, decoding in one session's spoken language."""

    def __init__(self, recognizer: Any, language: str):
        self.recognizer = recognizer
        self.language = language

    def transcribe(self, audio: np.ndarray, *, offset: float, final: bool = True) -> Any:
        return self.recognizer.transcribe(audio, offset=offset, final=final, language=self.language)


@dataclass
class Session:
    """One live connection's pipeline for one encounter."""

    encounter_id: str
    ws: web.WebSocketResponse
    done: asyncio.Event = field(default_factory=asyncio.Event)
    finishing: bool = False
    """``stop`` was received: the pipeline runs to the end even if the socket drops."""
    conn: Any = None
    """The ``Connection`` serving it (to stop it when consent is withdrawn over HTTP)."""


class StreamServer:
    def __init__(self, settings: Settings, *, engine: Engine | None = None, store: Store | None = None):
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.store = AsyncStore(store or Store.from_settings(settings))
        self.sessions: dict[str, Session] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        cfg = settings.server
        if not cfg.tokens and not cfg.allow_no_auth:
            raise ValueError(
                "no API token configured: set SCRIBE_SERVER__TOKENS='[\"<token>\"]' (or server.tokens in the "
                "TOML file); allow_no_auth=true disables authentication for local experiments only"
            )
        self._tokens = [t.get_secret_value().encode() for t in cfg.tokens]
        self._finishing: set[Connection] = set()
        self._purger: asyncio.Task[None] | None = None
        trust = settings.trust
        self.limiter = RateLimiter(trust.rate_per_second, trust.rate_burst)
        raw = self.store.store
        self.consent_policy = ConsentPolicy(max_age=timedelta(hours=settings.trust.consent_max_age_hours))
        self.audit = AuditLog(raw)
        self.anchors = AnchorKeeper(self.store, self.audit, trust.audit_anchor_interval_s)
        self.tokens = TokenStore(raw, audit=self.audit)

    # -- app

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.server.max_message_bytes,
                              middlewares=[self._auth_middleware])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/v1/stream", self.stream)
        app.router.add_get("/v1/encounters", self.list_encounters)
        app.router.add_get("/v1/encounters/{id}", self.get_encounter)
        app.router.add_get("/v1/encounters/{id}/transcript", self.get_transcript)
        app.router.add_post("/v1/encounters/{id}/withdraw-consent", self.post_withdraw_consent)
        mount_review(app, self)  # /v1/review/…: the review app's API (scribe.review)
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

    async def _startup(self, app: web.Application) -> None:
        self.anchors.start()  # audit head anchored now, every trust.audit_anchor_interval_s, and at shutdown
        loop = asyncio.get_running_loop()
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
                                               trust.draft_retention_days, audit=self.audit)
                if report.frames_deleted or report.drafts_deleted:
                    log.info("retention purge", extra={"frames": report.frames_deleted,
                                                       "drafts": report.drafts_deleted})
            except Exception:  # a failed purge is retried next time; it must not stop the service
                log.exception("retention purge failed")
            await asyncio.sleep(trust.purge_interval_hours * 3600)

    async def _shutdown(self, app: web.Application) -> None:
        if self._purger is not None:
            self._purger.cancel()
        for session in list(self.sessions.values()):
            await session.ws.close(code=CloseCode.going_away, message=b"server shutting down")
        # Stopped encounters still transcribing after their client left: their audio is in
        # the store, so a restart (or the client's resume) finishes them; cancel here.
        for conn in list(self._finishing):
            await conn.cancel_tasks()
        await self.anchors.stop()

    async def _cleanup(self, app: web.Application) -> None:
        self.store.close()
        self.engine.executor.shutdown(wait=False, cancel_futures=True)
        self.engine.notes_executor.shutdown(wait=False, cancel_futures=True)

    # -- auth

    async def authenticate(self, request: web.Request) -> Principal:
        """Who is calling. Site tokens (``server.tokens``) act as admins; per-clinician tokens
        (``scribe tokens create``, stored hashed) see only their own encounters. Raises
        ``AuthError`` (code ``missing``, ``malformed``, ``unknown``, ``revoked``); failures are
        audited by the token store."""
        if self.settings.server.allow_no_auth and not self._tokens:
            return Principal(clinician_id="local", role=Role.admin)
        scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
        given = credentials.strip() if scheme.lower() == "bearer" else ""
        if given and any(hmac.compare_digest(given.encode(), t) for t in self._tokens):
            return Principal(clinician_id="site", role=Role.admin)
        source = request.remote or None
        return await self.store.call(self.tokens.authenticate, given or None, source=source)

    async def _principal_or_error(self, request: web.Request) -> Principal | web.Response:
        try:
            return await self.authenticate(request)
        except AuthError as exc:
            if exc.code == "missing":
                return _json_error(401, "missing bearer token: send 'Authorization: Bearer <token>'",
                                   headers={"WWW-Authenticate": "Bearer"})
            return _json_error(403, f"invalid bearer token ({exc.code})")

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every ``/v1`` HTTP route: authenticate, then scope ``…/encounters/{id}…`` to the
        encounter's clinician (admins see all). Refusals are audited. The websocket does its
        own check so that it can answer with close codes."""
        if not request.path.startswith("/v1/"):
            return await handler(request)
        address = self.client_address(request)
        decision = self.limiter.allow(address)
        if not decision.allowed:
            return _json_error(429, "too many requests; slow down",
                               headers={"Retry-After": str(max(1, math.ceil(decision.retry_after)))})
        if request.path == "/v1/stream":
            return await handler(request)
        principal = await self._principal_or_error(request)
        if isinstance(principal, web.Response):
            self.limiter.allow(address, cost=4.0)  # failed authentication: brute force gets slow fast
            return principal
        request[PRINCIPAL] = principal
        try:
            return await self._scoped(request, principal, handler)
        except StoreError as exc:
            # Named, never quoted: store errors say which record and what failed, not its content.
            log.error("store error serving %s: %s", request.method, type(exc).__name__)
            return _json_error(503 if isinstance(exc, (DatabaseLocked, StoreFull, StoreIOError)) else 500,
                               f"stored data could not be served ({type(exc).__name__}): {exc}")

    async def _scoped(self, request: web.Request, principal: Principal, handler: Any) -> web.StreamResponse:
        """Every route that names an encounter — directly, through a delivery, or as the filter
        of the event stream — is checked here, in one place, before its handler runs. Another
        clinician's encounter is answered exactly like one that does not exist (404), so ids do
        not leak; the attempt is audited. List reads and event subscriptions are audited too."""
        info = request.match_info
        canonical = getattr(getattr(info.route, "resource", None), "canonical", "") or ""
        if "/encounters/{id}" in canonical:
            eid = info["id"]
            refused = await self._refuse_encounter(request, principal, eid, f"no encounter {eid}")
            if refused is not None:
                return refused
            response = await handler(request)
            await self._audit_request(request, principal, canonical, eid, response.status)
            return response
        if "/deliveries/{id}" in canonical:
            did = info["id"]
            owner = await self.store.call(_delivery_encounter, self.store.store, did)
            refused = await self._refuse_encounter(request, principal, owner, f"no delivery {did}")
            if refused is not None:
                return refused
            response = await handler(request)
            await self._audit_request(request, principal, canonical, owner or "", response.status)
            return response
        if canonical == "/v1/review/events":
            eid = request.query.get("encounter") or None
            if eid is not None:
                refused = await self._refuse_encounter(request, principal, eid, f"no encounter {eid}")
                if refused is not None:
                    return refused
            await self.store.call(self.audit.record, _audit_id(principal.clinician_id), AuditAction.read,
                                  "event_stream", _audit_id(eid) if eid else "all", Outcome.success, {})
            return await handler(request)
        response = await handler(request)
        if request.method == "GET" and canonical in _LIST_ROUTES:
            await self.store.call(self.audit.record, _audit_id(principal.clinician_id), AuditAction.read,
                                  "encounter_list", _LIST_ROUTES[canonical],
                                  Outcome.success if response.status < 400 else Outcome.failed,
                                  {"status": response.status})
        return response

    async def _refuse_encounter(self, request: web.Request, principal: Principal, eid: str | None,
                                not_found: str) -> web.Response | None:
        """None when ``principal`` may act on encounter ``eid``; else the 404 to answer, audited
        when the encounter is someone else's. Every route that names an encounter needs it to
        exist (a recording is created over the websocket). An id outside the protocol's character set (``.``,
        ``..``: written before ids were validated, or made up) is not a route at all."""
        if eid is None or not re.fullmatch(ENCOUNTER_ID_PATTERN, eid):
            return _json_error(404, not_found)
        enc = await self.store.get_encounter(eid)
        if enc is None:  # answered here too, so that no handler's own checks tell the two apart
            return _json_error(404, not_found)
        if not can_access(principal, enc):
            return await self._deny(request, principal, eid, not_found)
        return None

    async def _deny(self, request: web.Request, principal: Principal, eid: str, not_found: str) -> web.Response:
        await self.store.call(self.audit.record, principal.clinician_id, AuditAction.access_denied,
                              "encounter", _audit_id(eid), Outcome.denied, {"method": request.method})
        return _json_error(404, not_found)

    def audit_delivery(self, delivery: Any) -> None:
        """Outbox listener (runs on the store thread after each committed state change):
        a delivered or finally failed note is an audited ``deliver``."""
        state = getattr(delivery.state, "value", delivery.state)
        if state not in ("delivered", "failed"):
            return
        self.audit.record("scribe", AuditAction.deliver, "encounter", _audit_id(delivery.encounter_id),
                          Outcome.success if state == "delivered" else Outcome.failed,
                          {"target": _audit_id(str(delivery.target)), "version": getattr(delivery, "version", 0) or 0})

    _AUDITED_POSTS = {"sign": AuditAction.sign, "amend": AuditAction.update, "draft": AuditAction.create,
                      "resolve": AuditAction.update, "retry": AuditAction.deliver}

    async def _audit_request(self, request: web.Request, principal: Principal, route: str, eid: str,
                             status: int) -> None:
        """One audit entry per request that reads or changes an encounter's data (transcript,
        draft, signature, deliveries): who, what, which encounter, outcome. Routes that audit
        themselves in their own transaction (transcript reads, consent withdrawal) are skipped."""
        if route.endswith("/withdraw-consent") or route == "/v1/encounters/{id}/transcript":
            return
        last = route.rstrip("/").rsplit("/", 1)[-1]
        if request.method in ("GET", "HEAD"):
            action = AuditAction.read
        elif request.method in ("PUT", "PATCH"):
            action = AuditAction.update
        elif request.method == "DELETE":
            action = AuditAction.delete
        else:
            action = self._AUDITED_POSTS.get(last, AuditAction.update)
        outcome = Outcome.success if status < 400 else (Outcome.denied if status in (401, 403, 409) else Outcome.failed)
        resource = last if last != "{id}" else "encounter"
        await self.store.call(self.audit.record, _audit_id(principal.clinician_id), action, "encounter",
                              _audit_id(eid), outcome, {"resource": _audit_id(resource), "status": status})

    # -- HTTP

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.sessions)})

    async def list_encounters(self, request: web.Request) -> web.Response:
        principal = request[PRINCIPAL]
        encounters = await self.store.list_encounters(None if principal.is_admin else principal.clinician_id)
        return web.json_response([e.model_dump(mode="json") for e in encounters])

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
                                                actor=_audit_id(actor))
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

    async def post_withdraw_consent(self, request: web.Request) -> web.Response:
        eid = request.match_info["id"]
        if await self.store.get_encounter(eid) is None:
            return _json_error(404, f"no encounter {eid}")
        try:
            deleted = await self.withdraw_consent(eid, request[PRINCIPAL].clinician_id)
        except ConsentError as exc:
            return _json_error(409, str(exc))
        return web.json_response({"encounter_id": eid, "status": "withdrawn", "deleted": deleted})

    async def get_encounter(self, request: web.Request) -> web.Response:
        eid = request.match_info["id"]
        enc = await self.store.get_encounter(eid)
        if enc is None:
            raise web.HTTPNotFound(text=f"no encounter {eid}")
        return web.json_response(text=enc.model_dump_json())

    async def get_transcript(self, request: web.Request) -> web.Response:
        eid = request.match_info["id"]
        enc = await self.store.get_encounter(eid)
        if enc is None:
            raise web.HTTPNotFound(text=f"no encounter {eid}")
        segments = await self.store.segments(eid)
        await self.store.call(self.audit.record, request[PRINCIPAL].clinician_id, AuditAction.read, "transcript",
                              _audit_id(eid), Outcome.success, {"segments": len(segments)})
        transcript = Transcript(
            encounter_id=eid, language=enc.language, segments=segments, duration=enc.samples_received / SAMPLE_RATE
        )
        return web.json_response(text=transcript.model_dump_json())

    # -- websocket

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        cfg = self.settings.server
        if request.headers.get("Sec-WebSocket-Protocol"):
            # scribe uses no subprotocol. Clients that smuggle a bearer token in this header
            # would have it written to the log by aiohttp's handshake ("client protocols …
            # don't overlap"): refuse before the handshake, without echoing the value.
            log.warning("websocket refused", extra={"reason": "subprotocol"})
            return _json_error(400, "scribe uses no websocket subprotocol: send the token as "
                                    "'Authorization: Bearer <token>' and no Sec-WebSocket-Protocol header")
        ws = web.WebSocketResponse(max_msg_size=cfg.max_message_bytes, heartbeat=20.0)
        await ws.prepare(request)
        try:
            principal = await self.authenticate(request)
        except AuthError as exc:
            self.limiter.allow(self.client_address(request), cost=4.0)
            code = CloseCode.unauthorized if exc.code == "missing" else CloseCode.forbidden
            message = "missing bearer token" if exc.code == "missing" else f"invalid bearer token ({exc.code})"
            await self._send(ws, ErrorEvent(code=ErrorCode.unauthorized, message=message, fatal=True))
            await ws.close(code=code, message=message.encode())
            log.warning("websocket refused", extra={"reason": exc.code})
            return ws
        conn = Connection(self, ws, principal)
        watchdog = asyncio.get_running_loop().call_later(cfg.start_timeout_s, conn.expire_unstarted)
        try:
            await conn.run()
        except Exception:
            log.exception("session failed", extra={"encounter": conn.encounter_id})
            await self._send(ws, ErrorEvent(code=ErrorCode.internal, message="internal server error", fatal=True))
            await ws.close(code=CloseCode.internal_error)
        finally:
            watchdog.cancel()
            await conn.shutdown()
        return ws

    @staticmethod
    async def _send(ws: web.WebSocketResponse, event: Any) -> bool:
        if ws.closed:
            return False
        try:
            await ws.send_str(encode_event(event))
            return True
        except (ConnectionError, RuntimeError):
            return False

    def client_address(self, request: web.Request) -> str:
        """The client's address: the socket peer, or, behind a configured trusted proxy, the
        last address that proxy appended to ``X-Forwarded-For``."""
        remote = request.remote or "unknown"
        if remote in self.settings.server.trusted_proxies:
            forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
            if forwarded:
                return forwarded[-1]
        return remote

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS for ``wss://``/``https://`` when a certificate is configured (TLS 1.2+)."""
        cfg = self.settings.server
        if cfg.tls_cert_file is None:
            return None
        if cfg.tls_key_file is None:
            raise ValueError("server.tls_cert_file is set but server.tls_key_file is not")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(cfg.tls_cert_file), str(cfg.tls_key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the TLS certificate/key ({exc}); check server.tls_cert_file "
                             "and server.tls_key_file") from None
        return ctx

    def lock(self, encounter_id: str) -> asyncio.Lock:
        return self._locks.setdefault(encounter_id, asyncio.Lock())


class Connection:
    """The per-websocket shell around ``ServerProtocol``.

    The receive loop never waits on transcription: frames go to a bounded persist queue
    (disk writes are fast), ``stop`` only enqueues the end marker, so pings keep being
    answered while a long backlog is transcribed. The persister hands audio to the
    transcriber through a queue bounded in *seconds*; audio beyond that bound is not kept in
    memory: it is already in the store, and the transcriber reads it back from there when
    it catches up. Memory stays flat however far behind the transcriber falls.
    """

    def __init__(self, server: StreamServer, ws: web.WebSocketResponse, principal: Principal):
        self.server = server
        self.ws = ws
        self.principal = principal
        cfg = server.settings.server
        self.protocol = ServerProtocol(max_frame_seconds=cfg.max_frame_seconds, supported_rates=cfg.supported_rates)
        self.persist_q: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)
        self.audio_q: asyncio.Queue[Any] = asyncio.Queue()
        self.queued_samples = 0
        self.max_queued_samples = int(cfg.queue_seconds * SAMPLE_RATE)
        self.encounter_id: str | None = None
        self.session: Session | None = None
        self.resampler: Resampler | None = None
        self.transcriber: StreamingTranscriber | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.finished = asyncio.Event()
        self.last_acked = -1
        self.caught_up_from_store = 0
        """Audio samples the transcriber re-read from the store because the queue was full."""
        self.diarizer: Any | None = None
        self.channels = 1
        self.stereo: deque[tuple[int, np.ndarray]] = deque()
        """Two-channel input: the last ``_STEREO_KEEP_S`` of (start sample, (n, 2) float32) for
        the speaker labeller; the store and the recogniser get the mixdown."""
        self.draft: Any | None = None
        self.settling: SettledSegments | None = None
        """Segments wait here until their speaker labels are final, then go to the drafter."""
        self._last_draft_sent = 0.0
        self.start_received = False
        self._expiry: asyncio.Future[bool] | None = None

    async def send(self, event: Any) -> bool:
        return await StreamServer._send(self.ws, event)

    def expire_unstarted(self) -> None:
        """``server.start_timeout_s`` after the handshake: an authenticated socket that never
        sent ``start`` holds a connection and memory for nothing; close it."""
        if not self.start_received and not self.ws.closed:
            self._expiry = asyncio.ensure_future(self._refuse(
                ErrorCode.not_started,
                f"no 'start' message within {self.server.settings.server.start_timeout_s:g} s; reconnect and "
                "send 'start' first"))

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                actions = self.protocol.receive_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                actions = self.protocol.receive_bytes(msg.data)
            elif msg.type == WSMsgType.ERROR:
                exc = self.ws.exception()
                too_big = getattr(exc, "code", None) == CloseCode.message_too_big
                # aiohttp has already started closing the socket; the close code (1009 for an
                # oversized message) is what reaches the client, this event is best effort.
                await self.send(ErrorEvent(
                    code=ErrorCode.message_too_large if too_big else ErrorCode.bad_frame,
                    message=(f"message larger than {self.server.settings.server.max_message_bytes} bytes"
                             if too_big else "malformed websocket message"),
                    fatal=True,
                ))
                log.warning("websocket error", extra={"encounter": self.encounter_id,
                                                      "reason": "too_big" if too_big else type(exc).__name__})
                break
            else:
                break
            for action in actions:
                if not await self.act(action):
                    return

    async def act(self, action: Any) -> bool:
        """Carry out one protocol action; False ends the connection."""
        if isinstance(action, Audio):
            await self.persist_q.put(action)
        elif isinstance(action, Duplicate):
            # Re-ack only what is persisted: a resent frame may still be in the persist queue.
            if self.last_acked >= 0:
                await self.send(AckEvent(seq=self.last_acked))
        elif isinstance(action, Start):
            self.start_received = True
            return await self.start(action.message)
        elif isinstance(action, Stop):
            if self.session is not None:
                self.session.finishing = True
            self.server._finishing.add(self)
            await self.persist_q.put(_EOS)
        elif isinstance(action, Withdraw):
            await self.server.withdraw_consent(self.encounter_id or "", self.principal.clinician_id, via=self)
            return False
        elif isinstance(action, Reject):
            await self.send(action.error)
            if action.error.fatal:
                await self.ws.close(code=CloseCode.protocol_error, message=action.error.code.encode())
                return False
        return True

    async def _refuse(self, code: ErrorCode, message: str) -> bool:
        await self.send(ErrorEvent(code=code, message=message, fatal=True))
        await self.ws.close(code=CloseCode.protocol_error, message=code.value.encode())
        return False

    async def start(self, msg: StartMessage) -> bool:
        server = self.server
        principal = self.principal
        audit = server.audit
        if not principal.is_admin and msg.clinician_id != principal.clinician_id:
            await server.store.call(audit.record, principal.clinician_id, AuditAction.access_denied, "encounter",
                                    _audit_id(msg.encounter_id), Outcome.denied, {"attempted": "stream"})
            return await self._refuse(ErrorCode.forbidden,
                                      "this token belongs to another clinician: stream as yourself")
        try:
            # A new recording needs a complete, recent consent; a resume was checked when the
            # encounter was created (it may be resumed hours later).
            if await server.store.get_encounter(msg.encounter_id) is None:
                validate_consent(msg.consent, policy=server.consent_policy)
        except ConsentError as exc:
            await server.store.call(audit.record, principal.clinician_id, AuditAction.consent_refused, "encounter",
                                    _audit_id(msg.encounter_id), Outcome.denied, {"reason": exc.reason.value})
            return await self._refuse(ErrorCode.consent_required, f"{exc} ({exc.reason.value})")
        language = msg.language or server.settings.asr.language or "en"
        problem = server.engine.unsupported_language(language)
        if problem:
            return await self._refuse(ErrorCode.unsupported_language, problem)
        # A resumed connection may race the old one's teardown: supersede it and wait for its
        # pipeline to stop, so two transcribers never write the same encounter.
        async with server.lock(msg.encounter_id):
            # Ownership is decided before anything happens to a live session: naming another
            # clinician's encounter must not supersede (cut off) the owner's connection.
            existing = await server.store.get_encounter(msg.encounter_id)
            if existing is not None and not can_access(principal, existing):
                await server.store.call(audit.record, principal.clinician_id, AuditAction.access_denied,
                                        "encounter", _audit_id(msg.encounter_id), Outcome.denied,
                                        {"attempted": "stream"})
                return await self._refuse(ErrorCode.forbidden,
                                          f"encounter {msg.encounter_id} cannot be used with this token; "
                                          "start a new encounter with a new id")
            old = server.sessions.get(msg.encounter_id)
            if old is not None and old.finishing:
                return await self._refuse(
                    ErrorCode.encounter_closed,
                    f"encounter {msg.encounter_id} is being finalised after 'stop'; fetch the transcript from "
                    f"GET /v1/encounters/{msg.encounter_id}/transcript",
                )
            if old is not None:
                await StreamServer._send(old.ws, ErrorEvent(code=ErrorCode.superseded,
                                                            message="a newer connection resumed this encounter",
                                                            fatal=True))
                await old.ws.close(code=CloseCode.superseded, message=b"superseded")
                await old.done.wait()
            try:
                enc, created = await server.store.open_encounter(
                    msg.encounter_id,
                    clinician_id=msg.clinician_id,
                    patient_ref=msg.patient_ref,
                    language=language,
                    sample_rate=msg.sample_rate,
                    consent=msg.consent,
                )
            except EncounterConflict as exc:
                return await self._refuse(ErrorCode.encounter_conflict, str(exc))
            if not can_access(principal, enc):  # created by someone else between the check and here
                await server.store.call(audit.record, principal.clinician_id, AuditAction.access_denied,
                                        "encounter", _audit_id(enc.id), Outcome.denied, {"attempted": "stream"})
                return await self._refuse(ErrorCode.forbidden,
                                          f"encounter {enc.id} cannot be used with this token; "
                                          "start a new encounter with a new id")
            if not created and enc.status is not EncounterStatus.recording:
                await server.store.call(audit.record, principal.clinician_id, AuditAction.update, "encounter",
                                        _audit_id(enc.id), Outcome.denied,
                                        {"event": "recording_resumed", "status": enc.status.value})
                return await self._refuse(
                    ErrorCode.encounter_closed,
                    f"encounter {enc.id} is already {enc.status.value}; start a new one (its transcript is at "
                    f"GET /v1/encounters/{enc.id}/transcript)",
                )
            await server.store.call(
                audit.record, principal.clinician_id, AuditAction.create if created else AuditAction.update,
                "encounter", _audit_id(enc.id), Outcome.success,
                {"event": "recording_started" if created else "recording_resumed"},
            )
            if created:
                await server.store.call(audit.record, principal.clinician_id, AuditAction.consent_recorded,
                                        "encounter", _audit_id(enc.id), Outcome.success,
                                        {"method": msg.consent.method})
            self.encounter_id = enc.id
            self.session = Session(enc.id, self.ws, conn=self)
            server.sessions[enc.id] = self.session
        self.resampler = Resampler(msg.sample_rate) if msg.sample_rate != SAMPLE_RATE else None
        self.channels = msg.channels
        loop = asyncio.get_running_loop()
        self.transcriber = await loop.run_in_executor(
            server.engine.executor,
            lambda: server.engine.transcriber(origin=enc.committed_until, first_index=enc.segment_count,
                                              language=enc.language),
        )
        self.diarizer = await server.store.call(server.engine.diarizer, enc.clinician_id, server.store.store)
        if self.diarizer is not None and enc.segment_count:
            await self._warm_diarizer(enc)
        self.last_acked = enc.last_seq
        self.protocol.started(enc.last_seq + 1)
        await self.send(
            ReadyEvent(encounter_id=enc.id, next_seq=enc.last_seq + 1, segments=enc.segment_count, resumed=not created)
        )
        for seg in await server.store.segments(enc.id, since=msg.since_segment):
            await self.send(SegmentEvent(segment=seg))
        await self._start_draft(enc)
        # Persisted but untranscribed audio (a resume): an empty chunk at the persisted end
        # makes the transcriber read the gap from the store before anything new arrives.
        self.audio_q.put_nowait((enc.samples_received, _EMPTY))
        self.tasks = [
            asyncio.create_task(self.persist_loop(), name=f"persist-{enc.id}"),
            asyncio.create_task(self.transcribe_loop(enc.committed_until), name=f"transcribe-{enc.id}"),
        ]
        for task in self.tasks:
            task.add_done_callback(self._task_done)
        log.info("session started", extra={"encounter": enc.id, "resumed": not created,
                                           "next_seq": enc.last_seq + 1,
                                           "backlog_s": (enc.samples_received - enc.committed_until) / SAMPLE_RATE})
        return True

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A pipeline task died (store or model error): tell the client and close, so it
        reconnects and resumes from what was persisted instead of streaming into a void."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("session task failed", exc_info=task.exception(), extra={"encounter": self.encounter_id})
        asyncio.ensure_future(self._fail())

    async def _fail(self) -> None:
        if self.session is not None:
            self.session.finishing = False  # a resume may take over and retry
        await self.send(ErrorEvent(code=ErrorCode.internal,
                                   message="the server could not process this stream; reconnect to resume",
                                   fatal=True))
        await self.ws.close(code=CloseCode.internal_error, message=b"internal")

    def _enqueue_audio(self, start: int, pcm: bytes, *, keep: bool = False) -> None:
        """Hand persisted audio to the transcriber, unless more than ``queue_seconds`` is
        already waiting: then it is dropped here and re-read from the store later."""
        n = len(pcm) // 2
        if not n:
            return
        if not keep and self.queued_samples + n > self.max_queued_samples:
            return
        self.queued_samples += n
        self.audio_q.put_nowait((start, np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0))

    async def persist_loop(self) -> None:
        """Write frames in batches, ack them, pass the audio on to the transcriber."""
        store = self.server.store
        assert self.encounter_id is not None
        while True:
            batch = [await self.persist_q.get()]
            while not self.persist_q.empty() and len(batch) < 100:
                batch.append(self.persist_q.get_nowait())
            eos = batch[-1] is _EOS
            frames = [a for a in batch if isinstance(a, Audio)]
            if frames:
                stereo = [_deinterleave(a.pcm) for a in frames] if self.channels == 2 else None
                converted = [(a.seq, _mixdown(s) if stereo is not None else
                              (self.resampler.feed(a.pcm) if self.resampler else a.pcm))
                             for a, s in zip(frames, stereo or [None] * len(frames))]
                _, received = await store.append_frames(self.encounter_id, converted)
                if stereo is not None:
                    self._keep_stereo(received - sum(len(s) for s in stereo), stereo)
                self.last_acked = frames[-1].seq
                await self.send(AckEvent(seq=self.last_acked))
                pcm = b"".join(p for _, p in converted)
                self._enqueue_audio(received - len(pcm) // 2, pcm)
            if eos:
                enc = await store.get_encounter(self.encounter_id)
                assert enc is not None
                end = enc.samples_received
                if self.resampler is not None:
                    # The resampler's delay line: persisted as an extra, unacknowledged frame
                    # it would break numbering, so it is only transcribed (never dropped).
                    self._enqueue_audio(end, self.resampler.flush(), keep=True)
                self.audio_q.put_nowait((end, _EOS))
                return

    async def transcribe_loop(self, cursor: int) -> None:
        """Feed audio to the transcriber in encounter order from ``cursor`` (a sample index),
        reading any stretch missing from the queue back from the store."""
        server = self.server
        loop = asyncio.get_running_loop()
        assert self.transcriber is not None and self.encounter_id is not None
        transcriber = self.transcriber
        catch_up_chunk = 30 * SAMPLE_RATE
        while True:
            start, item = await self.audio_q.get()
            eos = item is _EOS
            if not eos:
                self.queued_samples -= len(item)
            while cursor < start:
                # Dropped from the queue (or a resume's backlog): it is in the store.
                upto = min(start, cursor + catch_up_chunk)
                missing = await server.store.audio_from(self.encounter_id, cursor, upto)
                if not len(missing):
                    raise RuntimeError(f"audio {cursor}..{upto} missing from the store")
                self.caught_up_from_store += len(missing)
                cursor += len(missing)
                events = await loop.run_in_executor(
                    server.engine.executor, lambda a=missing: transcriber.feed(a, allow_partial=False)
                )
                await self._emit(events)
            if eos:
                events = await loop.run_in_executor(server.engine.executor, transcriber.flush)
                await self._emit(events)
                await self._finish()
                return
            if start + len(item) <= cursor:
                continue
            chunks = [item[cursor - start:]]
            cursor = start + len(item)
            # Coalesce what is already queued and contiguous (up to ~2 s) into one call.
            while not self.audio_q.empty() and sum(len(c) for c in chunks) < 2 * SAMPLE_RATE:
                nxt_start, nxt = self.audio_q._queue[0]  # peek: a gap or the end stops coalescing
                if nxt is _EOS or nxt_start != cursor:
                    break
                self.audio_q.get_nowait()
                self.queued_samples -= len(nxt)
                chunks.append(nxt)
                cursor += len(nxt)
            samples = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
            if not len(samples):
                continue
            allow_partial = self.audio_q.empty()
            events = await loop.run_in_executor(
                server.engine.executor, lambda: transcriber.feed(samples, allow_partial=allow_partial)
            )
            await self._emit(events)

    async def _start_draft(self, enc: Any) -> None:
        """Draft while the visit is recorded, so only a short final pass remains after stop; a
        resumed stream re-reads the stored transcript into a new draft (cheap, no model)."""
        loop = asyncio.get_running_loop()
        executor = self.server.engine.notes_executor
        try:
            self.draft = await loop.run_in_executor(executor, self.server.engine.draft_session, enc.id, enc.language)
        except Exception as exc:  # a bad template or writer configuration must not stop recording
            log.error("drafting off for this encounter: %s", type(exc).__name__, extra={"encounter": enc.id})
            await self.send(ErrorEvent(code=ErrorCode.draft_failed, message=f"no draft will be written: {exc}"))
            self.draft = None
            return
        if self.draft is not None and enc.segment_count:
            await self._feed_draft(await self.server.store.segments(enc.id))
        # A segment's label may be revised until `revise_last` newer ones have been labelled;
        # the drafter decides question/answer and whose medicine from labels, so it waits.
        hold = self.diarizer.tracker.config.revise_last + 1 if self.diarizer is not None else 0
        self.settling = SettledSegments(hold)

    async def _feed_draft(self, segments: list[Segment]) -> Any:
        """Add segments to the drafting session on the notes thread; the draft after the last."""
        draft = self.draft
        if draft is None or not segments:
            return None
        return await asyncio.get_running_loop().run_in_executor(
            self.server.engine.notes_executor, lambda: [draft.add(s) for s in segments][-1])

    async def _draft_add(self, segments: list[Segment], revisions: dict[str, Speaker] | None = None) -> None:
        if self.draft is None:
            return
        if self.settling is not None:
            segments = self.settling.push(segments, revisions or {})
        if not segments:
            return
        partial = await self._feed_draft(segments)
        interval = self.server.settings.notes.live_draft_interval_s
        if interval > 0 and time.monotonic() - self._last_draft_sent >= interval:
            self._last_draft_sent = time.monotonic()
            await self.send(DraftEvent(note=partial))

    async def _finish_draft(self) -> None:
        """After ``done``: let the writer finish (an LM may take a while; the transcript is
        already stored and sent), store the draft and send it. On a writer failure the
        extractive draft is stored instead, so a clinician always has something to review."""
        from .notes.repo import NoteRepo
        from .notes.writers import ExtractiveWriter, write_note

        store = self.server.store
        eid = self.encounter_id
        assert eid is not None and self.draft is not None
        if self.settling is not None and len(self.settling):  # the visit is over: every label is final
            await self._feed_draft(self.settling.flush())
        await store.set_status(eid, EncounterStatus.drafting)
        t0 = time.monotonic()
        note = None
        try:
            async for note in self.draft.finish():
                await self.send(DraftEvent(note=note))
        except Exception as exc:  # noqa: BLE001 - any writer failure falls back to the extractive draft
            log.error("note writer failed; storing the extractive draft", extra={"encounter": eid,
                                                                                "error": type(exc).__name__})
            await self.send(ErrorEvent(code=ErrorCode.draft_failed,
                                       message=f"the note writer failed ({exc}); the extractive draft was stored"))
            from .notes import load_template

            notes = self.server.settings.notes
            enc = await store.get_encounter(eid)
            note, _ = await write_note(ExtractiveWriter(), await store.segments(eid), encounter_id=eid,
                                       template=load_template(notes.template, notes.templates_dir),
                                       language=enc.language if enc else "en")
        assert note is not None

        def save() -> int:
            with store.store.tx():
                version = NoteRepo(store.store).save_draft(note, actor="scribe")
                self.server.audit.record("scribe", AuditAction.create, "note", _audit_id(eid), Outcome.success,
                                         {"version": version, "writer": note.writer})
                store.store.set_status(eid, EncounterStatus.draft_ready)
            return version

        version = await store.call(save)
        await self.send(DraftEvent(note=note, final=True, version=version))
        log.info("draft stored", extra={"encounter": eid, "version": version,
                                        "stop_to_draft_s": round(time.monotonic() - t0, 2),
                                        "sentences": len(note.sentences()), "open_flags": len(note.open_flags)})

    async def _warm_diarizer(self, enc: Any) -> None:
        """A resumed stream: let the labeller hear the recent stored segments again so the
        voices it learned are not lost with the old connection (older labels stay final)."""
        store = self.server.store
        for seg in await store.segments(enc.id, since=max(0, enc.segment_count - 60)):
            await self._label(seg)

    def _keep_stereo(self, start: int, chunks: list[np.ndarray]) -> None:
        for chunk in chunks:
            self.stereo.append((start, chunk.astype(np.float32) / 32768.0))
            start += len(chunk)
        while self.stereo and self.stereo[-1][0] - self.stereo[0][0] > _STEREO_KEEP_S * SAMPLE_RATE:
            self.stereo.popleft()

    def _stereo_slice(self, a: int, b: int) -> np.ndarray | None:
        """Both channels of ``[a, b)`` if still held, else None (the labeller then uses the mix)."""
        if not self.stereo or self.stereo[0][0] > a:
            return None
        parts = [c[max(0, a - s):max(0, b - s)] for s, c in self.stereo if s < b and s + len(c) > a]
        return np.concatenate(parts) if parts else None

    async def _label(self, seg: Segment) -> tuple[Segment, dict[str, Speaker]]:
        """The segment with its speaker, and revisions of earlier labels. A labeller failure
        never stops transcription: the segment keeps ``unknown``."""
        if self.diarizer is None or self.encounter_id is None:
            return seg, {}
        a, b = int(seg.start * SAMPLE_RATE), int(seg.end * SAMPLE_RATE) + 1
        audio = self._stereo_slice(a, b) if self.channels == 2 else None
        if audio is None:
            audio = await self.server.store.audio_from(self.encounter_id, a, b)
        loop = asyncio.get_running_loop()
        try:
            update = await loop.run_in_executor(self.server.engine.executor, self.diarizer.add, seg, audio)
        except Exception:
            log.exception("speaker labelling failed", extra={"encounter": self.encounter_id})
            return seg, {}
        return seg.model_copy(update={"speaker": update.speaker}), {r.segment_id: r.speaker for r in update.revisions}

    async def _emit(self, events: list[Committed | PartialText]) -> None:
        assert self.encounter_id is not None
        for event in events:
            if isinstance(event, Committed):
                t0 = time.monotonic()
                segments: list[Segment] = []
                revisions: dict[str, Speaker] = {}
                for seg in event.segments:
                    labelled, revised = await self._label(seg)
                    segments.append(labelled)
                    revisions.update(revised)
                # Revisions of segments in this same batch are applied before they are stored.
                segments = [s.model_copy(update={"speaker": revisions.pop(s.id)}) if s.id in revisions else s
                            for s in segments]
                await self.server.store.commit_segments(self.encounter_id, segments, event.until)
                if revisions:
                    await self.server.store.relabel_segments(self.encounter_id, revisions)
                for seg in segments:
                    await self.send(SegmentEvent(segment=seg))
                await self._draft_add(segments, revisions)
                if revisions:
                    await self.send(SpeakersEvent(revisions=[SpeakerRevision(segment_id=k, speaker=v)
                                                             for k, v in revisions.items()]))
                if segments:
                    log.debug("segments committed", extra={"encounter": self.encounter_id,
                                                            "count": len(segments),
                                                            "store_ms": round((time.monotonic() - t0) * 1000, 1)})
            else:
                await self.send(PartialEvent(text=event.text, start=event.start, end=event.end))

    async def _finish(self) -> None:
        store = self.server.store
        assert self.encounter_id is not None
        await store.set_status(self.encounter_id, EncounterStatus.transcribed)
        await store.call(self.server.audit.record, self.principal.clinician_id, AuditAction.update, "encounter",
                         _audit_id(self.encounter_id), Outcome.success, {"event": "transcribed"})
        enc = await store.get_encounter(self.encounter_id)
        segments = await store.segments(self.encounter_id)
        assert enc is not None
        transcript = Transcript(encounter_id=enc.id, language=enc.language, segments=segments,
                                duration=enc.samples_received / SAMPLE_RATE)
        await self.send(DoneEvent(transcript=transcript))
        log.info("session finished", extra={"encounter": enc.id, "segments": len(segments),
                                            "audio_s": round(transcript.duration, 1),
                                            "caught_up_s": round(self.caught_up_from_store / SAMPLE_RATE, 1)})
        if self.draft is not None:
            await self._finish_draft()
        self.finished.set()
        await self.ws.close(code=CloseCode.normal)

    async def cancel_tasks(self) -> None:
        for task in self.tasks:
            if not task.done():
                task.cancel()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def shutdown(self) -> None:
        """Connection over (normally or not): release the session.

        After ``stop`` the pipeline runs to the end even when the client has gone: all audio
        is persisted, so the transcript is finished and stored, and the client (or the TUI)
        fetches it over HTTP. Otherwise the tasks are cancelled: audio that was acked but not
        yet transcribed stays in the store and a resume re-reads it. Segments are committed
        only from the event loop after a decode returns, so a cancelled decode leaves the
        store at the last whole commit and the resumed transcriber redoes that utterance.
        """
        if self.session is not None and self.session.finishing:
            for task in self.tasks:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        await self.cancel_tasks()
        self.server._finishing.discard(self)
        if self.session is not None:
            self.session.done.set()
            if self.server.sessions.get(self.session.encounter_id) is self.session:
                del self.server.sessions[self.session.encounter_id]
