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
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from aiohttp import WSMsgType, web

from .asr.commit import SegmenterConfig
from .asr.streaming import AgreementTranscriber, Committed, PartialText, UtteranceTranscriber
from .audio import SAMPLE_RATE, Resampler
from .config import Settings
from .models import EncounterStatus, Transcript
from .protocol import (
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
    SegmentEvent,
    ServerProtocol,
    Start,
    StartMessage,
    Stop,
    encode_event,
)
from .store import AsyncStore, EncounterConflict, Store

log = logging.getLogger(__name__)

_EOS = object()


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
        self.executor = ThreadPoolExecutor(max_workers=max(1, asr.num_workers), thread_name_prefix="scribe-asr")

    @property
    def recognizer(self) -> Any:
        if self._recognizer is None:
            raise RuntimeError("engine not loaded")
        return self._recognizer

    def load(self) -> None:
        if self._recognizer is None:
            from .asr.whisper import WhisperRecognizer

            asr = self.settings.asr
            self._recognizer = WhisperRecognizer(
                asr.model,
                cache_dir=self.settings.model_cache_dir,
                device=asr.device,
                compute_type=asr.compute_type,
                cpu_threads=asr.cpu_threads,
                num_workers=asr.num_workers,
                beam_size=asr.beam_size,
                language=asr.language,
                hotwords=asr.hotwords,
                lexicon=asr.lexicon,
            )

    def policy(self) -> str:
        asr = self.settings.asr
        if asr.policy != "auto":
            return asr.policy
        device = getattr(self._recognizer, "device", "cpu")
        return "local_agreement" if device == "cuda" else "utterance"

    def transcriber(self, *, origin: int, first_index: int) -> StreamingTranscriber:
        asr = self.settings.asr
        if self.policy() == "local_agreement":
            return AgreementTranscriber(self.recognizer, origin=origin, first_index=first_index)
        from .asr.vad import StreamingVad

        config = SegmenterConfig.from_ms(
            threshold=asr.vad_threshold,
            min_silence_ms=asr.min_silence_ms,
            max_utterance_s=asr.max_utterance_s,
            speech_pad_ms=asr.speech_pad_ms,
        )
        return UtteranceTranscriber(
            self.recognizer,
            StreamingVad(),
            config,
            origin=origin,
            first_index=first_index,
            partial_interval_s=asr.partial_interval_s,
            context_s=asr.context_s,
        )


@dataclass
class Session:
    """One live connection's pipeline for one encounter."""

    encounter_id: str
    ws: web.WebSocketResponse
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class StreamServer:
    def __init__(self, settings: Settings, *, engine: Engine | None = None, store: Store | None = None):
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.store = AsyncStore(store or Store(settings.database_path))
        self.sessions: dict[str, Session] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        cfg = settings.server
        if not cfg.tokens and not cfg.allow_no_auth:
            raise ValueError(
                "no API token configured: set SCRIBE_SERVER__TOKENS='[\"<token>\"]' (or server.tokens in the "
                "TOML file); allow_no_auth=true disables authentication for local experiments only"
            )
        self._tokens = [t.get_secret_value().encode() for t in cfg.tokens]
        self.max_frame_bytes = int(cfg.max_frame_seconds * max(cfg.supported_rates)) * 2

    # -- app

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.server.max_message_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/v1/stream", self.stream)
        app.router.add_get("/v1/encounters", self.list_encounters)
        app.router.add_get("/v1/encounters/{id}/transcript", self.get_transcript)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.engine.executor, self.engine.load)

    async def _shutdown(self, app: web.Application) -> None:
        for session in list(self.sessions.values()):
            await session.ws.close(code=CloseCode.going_away, message=b"server shutting down")

    async def _cleanup(self, app: web.Application) -> None:
        self.store.close()
        self.engine.executor.shutdown(wait=False, cancel_futures=True)

    # -- auth

    def _authorized(self, request: web.Request) -> bool | None:
        """True: valid token; False: wrong token; None: no token sent."""
        if self.settings.server.allow_no_auth and not self._tokens:
            return True
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        given = header[7:].strip().encode()
        return any(hmac.compare_digest(given, t) for t in self._tokens)

    def _require_auth(self, request: web.Request) -> None:
        ok = self._authorized(request)
        if ok is None:
            raise web.HTTPUnauthorized(text="missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not ok:
            raise web.HTTPForbidden(text="invalid bearer token")

    # -- HTTP

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.sessions)})

    async def list_encounters(self, request: web.Request) -> web.Response:
        self._require_auth(request)
        encounters = await self.store.list_encounters()
        return web.json_response([e.model_dump(mode="json") for e in encounters])

    async def get_transcript(self, request: web.Request) -> web.Response:
        self._require_auth(request)
        eid = request.match_info["id"]
        enc = await self.store.get_encounter(eid)
        if enc is None:
            raise web.HTTPNotFound(text=f"no encounter {eid}")
        segments = await self.store.segments(eid)
        transcript = Transcript(
            encounter_id=eid, language=enc.language, segments=segments, duration=enc.samples_received / SAMPLE_RATE
        )
        return web.json_response(text=transcript.model_dump_json())

    # -- websocket

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        cfg = self.settings.server
        ws = web.WebSocketResponse(max_msg_size=cfg.max_message_bytes, heartbeat=20.0)
        await ws.prepare(request)
        auth = self._authorized(request)
        if not auth:
            code = CloseCode.unauthorized if auth is None else CloseCode.forbidden
            message = "missing bearer token" if auth is None else "invalid bearer token"
            await self._send(ws, ErrorEvent(code=ErrorCode.unauthorized, message=message, fatal=True))
            await ws.close(code=code, message=message.encode())
            log.warning("websocket refused", extra={"reason": message, "peer": request.remote})
            return ws
        conn = Connection(self, ws)
        try:
            await conn.run()
        except Exception:
            log.exception("session failed", extra={"encounter": conn.encounter_id})
            await self._send(ws, ErrorEvent(code=ErrorCode.internal, message="internal server error", fatal=True))
            await ws.close(code=CloseCode.internal_error)
        finally:
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

    def lock(self, encounter_id: str) -> asyncio.Lock:
        return self._locks.setdefault(encounter_id, asyncio.Lock())


class Connection:
    """The per-websocket shell around ``ServerProtocol``."""

    def __init__(self, server: StreamServer, ws: web.WebSocketResponse):
        self.server = server
        self.ws = ws
        cfg = server.settings.server
        self.protocol = ServerProtocol(max_frame_bytes=server.max_frame_bytes, supported_rates=cfg.supported_rates)
        frames_per_queue = max(8, int(cfg.queue_seconds * 10))
        self.persist_q: asyncio.Queue[Any] = asyncio.Queue(maxsize=frames_per_queue)
        self.audio_q: asyncio.Queue[Any] = asyncio.Queue(maxsize=frames_per_queue)
        self.encounter_id: str | None = None
        self.session: Session | None = None
        self.resampler: Resampler | None = None
        self.transcriber: StreamingTranscriber | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.finished = asyncio.Event()
        self.last_acked = -1

    async def send(self, event: Any) -> bool:
        return await StreamServer._send(self.ws, event)

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                actions = self.protocol.receive_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                actions = self.protocol.receive_bytes(msg.data)
            elif msg.type == WSMsgType.ERROR:
                # aiohttp reports an oversized message here and closes with 1009.
                await self.send(
                    ErrorEvent(code=ErrorCode.message_too_large, message=f"message rejected: {self.ws.exception()}",
                               fatal=True)
                )
                break
            else:
                break
            for action in actions:
                if not await self.act(action):
                    return
            if self.finished.is_set():
                return

    async def act(self, action: Any) -> bool:
        """Carry out one protocol action; False ends the connection."""
        if isinstance(action, Audio):
            await self.persist_q.put(action)
        elif isinstance(action, Duplicate):
            await self.send(AckEvent(seq=self.last_acked))
        elif isinstance(action, Start):
            return await self.start(action.message)
        elif isinstance(action, Stop):
            await self.persist_q.put(_EOS)
            waiter = asyncio.create_task(self.finished.wait())
            await asyncio.wait([waiter, *self.tasks], return_when=asyncio.FIRST_EXCEPTION)
            waiter.cancel()
            if self.finished.is_set():
                await self.ws.close(code=CloseCode.normal)
            return False
        elif isinstance(action, Reject):
            await self.send(action.error)
            if action.error.fatal:
                await self.ws.close(code=CloseCode.protocol_error, message=action.error.code.encode())
                return False
        return True

    async def start(self, msg: StartMessage) -> bool:
        server = self.server
        language = msg.language or server.settings.asr.language or "en"
        # A resumed connection may race the old one's teardown: supersede it and wait for its
        # pipeline to stop, so two transcribers never write the same encounter.
        async with server.lock(msg.encounter_id):
            old = server.sessions.get(msg.encounter_id)
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
                await self.send(ErrorEvent(code=ErrorCode.encounter_conflict, message=str(exc), fatal=True))
                await self.ws.close(code=CloseCode.protocol_error, message=b"encounter_conflict")
                return False
            if enc.status is not EncounterStatus.recording:
                await self.send(ErrorEvent(code=ErrorCode.encounter_closed,
                                           message=f"encounter {enc.id} is already {enc.status.value}; start a new one",
                                           fatal=True))
                await self.ws.close(code=CloseCode.protocol_error, message=b"encounter_closed")
                return False
            self.encounter_id = enc.id
            self.session = Session(enc.id, self.ws)
            server.sessions[enc.id] = self.session
        self.resampler = Resampler(msg.sample_rate) if msg.sample_rate != SAMPLE_RATE else None
        loop = asyncio.get_running_loop()
        self.transcriber = await loop.run_in_executor(
            server.engine.executor,
            lambda: server.engine.transcriber(origin=enc.committed_until, first_index=enc.segment_count),
        )
        backlog = await server.store.audio_from(enc.id, enc.committed_until)
        self.last_acked = enc.last_seq
        self.protocol.started(enc.last_seq + 1)
        await self.send(
            ReadyEvent(encounter_id=enc.id, next_seq=enc.last_seq + 1, segments=enc.segment_count, resumed=not created)
        )
        for seg in await server.store.segments(enc.id, since=msg.since_segment):
            await self.send(SegmentEvent(segment=seg))
        if backlog.size:
            await self.audio_q.put(backlog)
        self.tasks = [
            asyncio.create_task(self.persist_loop(), name=f"persist-{enc.id}"),
            asyncio.create_task(self.transcribe_loop(), name=f"transcribe-{enc.id}"),
        ]
        for task in self.tasks:
            task.add_done_callback(self._task_done)
        log.info("session started", extra={"encounter": enc.id, "resumed": not created,
                                           "next_seq": enc.last_seq + 1, "backlog_s": backlog.size / SAMPLE_RATE})
        return True

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A pipeline task died (store or model error): tell the client and close, so it
        reconnects and resumes from what was persisted instead of streaming into a void."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("session task failed", exc_info=task.exception(), extra={"encounter": self.encounter_id})
        asyncio.ensure_future(self._fail())

    async def _fail(self) -> None:
        await self.send(ErrorEvent(code=ErrorCode.internal,
                                   message="the server could not process this stream; reconnect to resume",
                                   fatal=True))
        await self.ws.close(code=CloseCode.internal_error, message=b"internal")

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
                converted = [(a.seq, self.resampler.feed(a.pcm) if self.resampler else a.pcm) for a in frames]
                await store.append_frames(self.encounter_id, converted)
                self.last_acked = frames[-1].seq
                await self.send(AckEvent(seq=self.last_acked))
                pcm = b"".join(p for _, p in converted)
                if pcm:
                    await self.audio_q.put(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0)
            if eos:
                if self.resampler is not None:
                    tail = self.resampler.flush()
                    if tail:
                        # The resampler's delay line: persisted as an extra, unacknowledged
                        # frame would break numbering, so it is only transcribed.
                        await self.audio_q.put(np.frombuffer(tail, dtype="<i2").astype(np.float32) / 32768.0)
                await self.audio_q.put(_EOS)
                return

    async def transcribe_loop(self) -> None:
        server = self.server
        loop = asyncio.get_running_loop()
        assert self.transcriber is not None and self.encounter_id is not None
        transcriber = self.transcriber
        while True:
            item = await self.audio_q.get()
            if item is _EOS:
                events = await loop.run_in_executor(server.engine.executor, transcriber.flush)
                await self._emit(events)
                await self._finish()
                return
            chunks = [item]
            eos = False
            # Coalesce what is already queued (up to ~2 s) into one call: fewer thread hops.
            while not self.audio_q.empty() and sum(len(c) for c in chunks) < 2 * SAMPLE_RATE:
                nxt = self.audio_q.get_nowait()
                if nxt is _EOS:
                    eos = True
                    break
                chunks.append(nxt)
            samples = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
            allow_partial = self.audio_q.empty() and not eos
            events = await loop.run_in_executor(
                server.engine.executor, lambda: transcriber.feed(samples, allow_partial=allow_partial)
            )
            await self._emit(events)
            if eos:
                self.audio_q.put_nowait(_EOS)

    async def _emit(self, events: list[Committed | PartialText]) -> None:
        assert self.encounter_id is not None
        for event in events:
            if isinstance(event, Committed):
                t0 = time.monotonic()
                await self.server.store.commit_segments(self.encounter_id, list(event.segments), event.until)
                for seg in event.segments:
                    await self.send(SegmentEvent(segment=seg))
                if event.segments:
                    log.debug("segments committed", extra={"encounter": self.encounter_id,
                                                            "count": len(event.segments),
                                                            "store_ms": round((time.monotonic() - t0) * 1000, 1)})
            else:
                await self.send(PartialEvent(text=event.text, start=event.start, end=event.end))

    async def _finish(self) -> None:
        store = self.server.store
        assert self.encounter_id is not None
        await store.set_status(self.encounter_id, EncounterStatus.transcribed)
        enc = await store.get_encounter(self.encounter_id)
        segments = await store.segments(self.encounter_id)
        assert enc is not None
        transcript = Transcript(encounter_id=enc.id, language=enc.language, segments=segments,
                                duration=enc.samples_received / SAMPLE_RATE)
        await self.send(DoneEvent(transcript=transcript))
        self.finished.set()
        log.info("session finished", extra={"encounter": enc.id, "segments": len(segments),
                                            "audio_s": round(transcript.duration, 1)})

    async def shutdown(self) -> None:
        """Connection over (normally or not): stop this session's tasks and release it.

        Audio that was acked but not yet transcribed stays in the store; a resume re-reads
        it. Segments are committed to the store only from the event loop, after a decode
        returns, so a cancelled decode leaves the store at the last whole commit and the
        resumed transcriber redoes that utterance.
        """
        for task in self.tasks:
            if not task.done():
                task.cancel()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self.session is not None:
            self.session.done.set()
            if self.server.sessions.get(self.session.encounter_id) is self.session:
                del self.server.sessions[self.session.encounter_id]
