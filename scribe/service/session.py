"""One live recording: the per-websocket shell around the sans-I/O ``ServerProtocol``.

Per connection: the receive loop feeds ``ServerProtocol``; a persister writes frames to the
store in batches and acks them; a transcriber task feeds the audio, in order, to a streaming
transcriber running in the ASR thread pool, commits segments to the store and only then sends
them. Queues are bounded, so a slow transcriber slows reading from the socket (TCP
backpressure) instead of growing memory. Speaker labels (``labelling``) and the note draft
(``drafting``) follow each committed segment.

Resume and restart are the same path: on ``start`` for an existing encounter the session
re-reads the persisted audio after the last committed sample, restarts the transcriber there
with the next segment index, and tells the client the next frame it expects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from ..asr.streaming import Committed, PartialText
from ..audio import SAMPLE_RATE, Resampler, deinterleave, mixdown, pcm16_to_float
from ..models import Encounter, EncounterStatus, Segment, Speaker, Transcript
from ..protocol import (
    AckEvent,
    Audio,
    CloseCode,
    DoneEvent,
    DraftEvent,
    Duplicate,
    ErrorCode,
    ErrorEvent,
    PartialEvent,
    ReadyEvent,
    Reject,
    SegmentEvent,
    ServerProtocol,
    SpeakersEvent,
    Start,
    StartMessage,
    Stop,
    Withdraw,
    encode_event,
)
from ..store import EncounterConflict
from ..trust.audit import Action as AuditAction
from ..trust.audit import Outcome
from ..trust.consent import ConsentError, validate_consent
from ..trust.tokens import Principal, can_access
from .auth import audit_id
from .drafting import DraftRunner
from .engine import StreamingTranscriber
from .host import Host
from .labelling import Hindsight, Labeller
from .recording import RecordRunner

log = logging.getLogger(__name__)

_EOS = object()
_EMPTY = np.zeros(0, dtype=np.float32)


async def send_event(ws: web.WebSocketResponse, event: Any) -> bool:
    """Send one protocol event; False when the socket is gone (never raises for that)."""
    if ws.closed:
        return False
    try:
        await ws.send_str(encode_event(event))
        return True
    except (ConnectionError, RuntimeError):
        return False


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


class Connection:
    """The per-websocket shell around ``ServerProtocol``.

    The receive loop never waits on transcription: frames go to a bounded persist queue
    (disk writes are fast), ``stop`` only enqueues the end marker, so pings keep being
    answered while a long backlog is transcribed. The persister hands audio to the
    transcriber through a queue bounded in *seconds*; audio beyond that bound is not kept in
    memory: it is already in the store, and the transcriber reads it back from there when
    it catches up. Memory stays flat however far behind the transcriber falls.
    """

    def __init__(self, server: Host, ws: web.WebSocketResponse, principal: Principal):
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
        self.channels = 1
        self.labeller: Labeller | None = None
        """Speaker labels (None: labels off, or the voice model is missing)."""
        self.drafting: DraftRunner | None = None
        """The note in progress (None: drafting off, or the writer could not start)."""
        self.record: RecordRunner | None = None
        """The record pass (None: off, or its model is missing); the drafter reads its segments."""
        self._last_draft_sent = 0.0
        self.start_received = False
        self._expiry: asyncio.Future[bool] | None = None

    async def send(self, event: Any) -> bool:
        return await send_event(self.ws, event)

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
            self.server.finishing.add(self)
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
                                    audit_id(msg.encounter_id), Outcome.denied, {"attempted": "stream"})
            return await self._refuse(ErrorCode.forbidden,
                                      "this token belongs to another clinician: stream as yourself")
        try:
            # A new recording needs a complete, recent consent; a resume was checked when the
            # encounter was created (it may be resumed hours later).
            if await server.store.get_encounter(msg.encounter_id) is None:
                validate_consent(msg.consent, policy=server.consent_policy)
        except ConsentError as exc:
            await server.store.call(audit.record, principal.clinician_id, AuditAction.consent_refused, "encounter",
                                    audit_id(msg.encounter_id), Outcome.denied, {"reason": exc.reason.value})
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
                                        "encounter", audit_id(msg.encounter_id), Outcome.denied,
                                        {"attempted": "stream"})
                return await self._refuse(ErrorCode.forbidden,
                                          f"encounter {msg.encounter_id} cannot be used with this token; "
                                          "start a new encounter with a new id")
            old = server.sessions.get(msg.encounter_id)
            if old is not None and old.finishing:
                # audited like any refused resume (a loaded server is still finishing the
                # encounter when the clinician comes back; the refusal must not go unrecorded)
                await server.store.call(audit.record, principal.clinician_id, AuditAction.update, "encounter",
                                        audit_id(msg.encounter_id), Outcome.denied,
                                        {"event": "recording_resumed", "status": "finishing"})
                return await self._refuse(
                    ErrorCode.encounter_closed,
                    f"encounter {msg.encounter_id} is being finalised after 'stop'; fetch the transcript from "
                    f"GET /v1/encounters/{msg.encounter_id}/transcript",
                )
            if old is not None:
                await send_event(old.ws, ErrorEvent(code=ErrorCode.superseded,
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
                                        "encounter", audit_id(enc.id), Outcome.denied, {"attempted": "stream"})
                return await self._refuse(ErrorCode.forbidden,
                                          f"encounter {enc.id} cannot be used with this token; "
                                          "start a new encounter with a new id")
            if not created and enc.status is not EncounterStatus.recording:
                await server.store.call(audit.record, principal.clinician_id, AuditAction.update, "encounter",
                                        audit_id(enc.id), Outcome.denied,
                                        {"event": "recording_resumed", "status": enc.status.value})
                return await self._refuse(
                    ErrorCode.encounter_closed,
                    f"encounter {enc.id} is already {enc.status.value}; start a new one (its transcript is at "
                    f"GET /v1/encounters/{enc.id}/transcript)",
                )
            await server.store.call(
                audit.record, principal.clinician_id, AuditAction.create if created else AuditAction.update,
                "encounter", audit_id(enc.id), Outcome.success,
                {"event": "recording_started" if created else "recording_resumed"},
            )
            if created:
                await server.store.call(audit.record, principal.clinician_id, AuditAction.consent_recorded,
                                        "encounter", audit_id(enc.id), Outcome.success,
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
        diarizer = await server.store.call(server.engine.diarizer, enc.clinician_id, server.store.store)
        if diarizer is not None:
            self.labeller = Labeller(diarizer, server.store, server.engine.executor, enc.id, msg.channels)
            if enc.segment_count:
                await self.labeller.warm(enc)
        self.last_acked = enc.last_seq
        self.protocol.started(enc.last_seq + 1)
        await self.send(
            ReadyEvent(encounter_id=enc.id, next_seq=enc.last_seq + 1, segments=enc.segment_count, resumed=not created)
        )
        for seg in await server.store.segments(enc.id, since=msg.since_segment):
            await self.send(SegmentEvent(segment=seg))
        await self._start_record(enc)
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
        self.audio_q.put_nowait((start, pcm16_to_float(pcm)))

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
                stereo = [deinterleave(a.pcm) for a in frames] if self.channels == 2 else None
                converted = [(a.seq, mixdown(s) if stereo is not None else
                              (self.resampler.feed(a.pcm) if self.resampler else a.pcm))
                             for a, s in zip(frames, stereo or [None] * len(frames))]
                _, received = await store.append_frames(self.encounter_id, converted)
                if stereo is not None and self.labeller is not None:
                    self.labeller.keep_stereo(received - sum(len(s) for s in stereo), stereo)
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
                if self.labeller is not None:
                    self.labeller.keep(cursor, missing)
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
            if self.labeller is not None:
                self.labeller.keep(cursor - len(samples), samples)
            allow_partial = self.audio_q.empty()
            events = await loop.run_in_executor(
                server.engine.executor, lambda: transcriber.feed(samples, allow_partial=allow_partial)
            )
            await self._emit(events)

    async def _start_record(self, enc: Encounter) -> None:
        """The record pass behind the live edge (``recording.py``), resumed from the store."""
        if not self.server.settings.asr.record_pass:
            return
        runner = RecordRunner(self.server.engine, self.server.store, enc.id, enc.language, send=self.send,
                              feed=self._draft_add, hindsight=self._hindsight if self.labeller is not None else None)
        try:
            await runner.open(enc)
        except Exception as exc:  # a missing record model: the live pass is the record
            log.warning("record pass off for this encounter: %s", type(exc).__name__, extra={"encounter": enc.id})
            return
        self.record = runner

    async def _record_add(self, segments: list[Segment], until: int, revisions: dict[str, Speaker]) -> None:
        """Live segments go to the record pass, which feeds the drafter its own; without one
        (or once it has failed) the drafter reads the live segments."""
        record = self.record
        if record is None:
            await self._draft_add(segments, revisions)
            return
        await record.add_live(segments, until, revisions)
        if record.failed is not None:
            await self._record_failed()

    async def _record_failed(self) -> None:
        """The record pass stopped: the live segments it had not replaced are the transcript
        from there on, and go to the drafter."""
        record, self.record = self.record, None
        if record is not None and record.state is not None:
            await self._draft_add(list(record.state.live), {})

    async def _start_draft(self, enc: Encounter) -> None:
        """Draft while the visit is recorded, so only a short final pass remains after stop; a
        resumed stream re-reads the stored transcript into a new draft (cheap, no model)."""
        if not self.server.settings.notes.draft_on_stop:
            return
        runner = DraftRunner(self.server.engine, enc.id, enc.language)
        try:
            # A segment's label may be revised until `revise_last` newer ones have been labelled;
            # the drafter decides question/answer and whose medicine from labels, so it waits.
            await runner.open(hold=self.labeller.hold if self.labeller is not None else 0)
        except Exception as exc:  # a bad template or writer configuration must not stop recording
            log.error("drafting off for this encounter: %s", type(exc).__name__, extra={"encounter": enc.id})
            await self.send(ErrorEvent(code=ErrorCode.draft_failed, message=f"no draft will be written: {exc}"))
            return
        self.drafting = runner
        if self.record is not None:  # the record pass's segments so far; it feeds the rest
            await runner.feed(self.record.record_segments)
        elif enc.segment_count:
            await runner.feed(await self.server.store.segments(enc.id))

    async def _draft_add(self, segments: list[Segment], revisions: dict[str, Speaker] | None = None) -> None:
        if self.drafting is None:
            return
        partial = await self.drafting.add(segments, revisions)
        interval = self.server.settings.notes.live_draft_interval_s
        if partial is not None and interval > 0 and time.monotonic() - self._last_draft_sent >= interval:
            self._last_draft_sent = time.monotonic()
            await self.send(DraftEvent(note=partial))

    async def _finish_draft(self) -> None:
        """After ``done``: let the writer finish (an LM may take a while; the transcript is
        already stored and sent), store the draft and send it. On a writer failure the
        extractive draft is stored instead, so a clinician always has something to review."""
        store = self.server.store
        eid = self.encounter_id
        assert eid is not None and self.drafting is not None
        await store.set_status(eid, EncounterStatus.drafting)
        t0 = time.monotonic()

        async def failed(exc: Exception) -> None:
            await self.send(ErrorEvent(code=ErrorCode.draft_failed,
                                       message=f"the note writer failed ({exc}); the extractive draft was stored"))

        async def stored() -> list[Segment]:
            return await store.transcript(eid)

        note = None
        async for note in self.drafting.finish(stored, on_failure=failed):
            await self.send(DraftEvent(note=note))
        assert note is not None
        version = await store.call(self.server.save_live_draft, note)
        await self.send(DraftEvent(note=note, final=True, version=version))
        log.info("draft stored", extra={"encounter": eid, "version": version,
                                        "stop_to_draft_s": round(time.monotonic() - t0, 2),
                                        "sentences": len(note.sentences()), "open_flags": len(note.open_flags)})

    async def _hindsight(self) -> Hindsight:
        """Speaker labels re-decided with the whole visit so far (``Labeller.hindsight``); the
        live segments' changes stored and sent as revisions, like the labeller's own."""
        if self.labeller is None or self.encounter_id is None:
            return Hindsight({}, [])
        decided = await self.labeller.hindsight()
        if decided.revisions:
            await self.server.store.relabel_segments(self.encounter_id, decided.revisions)
            await self.send(SpeakersEvent.of(decided.revisions))
        return decided

    async def _label(self, seg: Segment) -> tuple[Segment, dict[str, Speaker]]:
        """The segment with its speaker, and revisions of earlier labels (none without a labeller)."""
        if self.labeller is None:
            return seg, {}
        return await self.labeller.label(seg)

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
                if revisions:
                    await self.send(SpeakersEvent.of(revisions))
                await self._record_add(segments, event.until, revisions)
                if segments:
                    log.debug("segments committed", extra={"encounter": self.encounter_id,
                                                            "count": len(segments),
                                                            "store_ms": round((time.monotonic() - t0) * 1000, 1)})
            else:
                await self.send(PartialEvent(text=event.text, start=event.start, end=event.end))

    async def _finish(self) -> None:
        store = self.server.store
        assert self.encounter_id is not None
        if self.record is not None:
            enc = await store.get_encounter(self.encounter_id)
            assert enc is not None
            await self.record.finish(max(enc.samples_received, enc.committed_until))
            if self.record.failed is not None:
                await self._record_failed()
            else:
                log.info("record pass finished", extra={"encounter": self.encounter_id,
                                                         "windows": self.record.state.number if self.record.state else 0,
                                                         "decode_s": round(self.record.decode_s, 1)})
        else:  # no record pass: the live segments are the record, re-decided once at the end
            await self._draft_add([], (await self._hindsight()).revisions)
        await store.set_status(self.encounter_id, EncounterStatus.transcribed)
        await store.call(self.server.audit.record, self.principal.clinician_id, AuditAction.update, "encounter",
                         audit_id(self.encounter_id), Outcome.success, {"event": "transcribed"})
        enc = await store.get_encounter(self.encounter_id)
        segments = await store.transcript(self.encounter_id)
        assert enc is not None
        transcript = Transcript(encounter_id=enc.id, language=enc.language, segments=segments,
                                duration=enc.samples_received / SAMPLE_RATE)
        await self.send(DoneEvent(transcript=transcript))
        log.info("session finished", extra={"encounter": enc.id, "segments": len(segments),
                                            "audio_s": round(transcript.duration, 1),
                                            "caught_up_s": round(self.caught_up_from_store / SAMPLE_RATE, 1)})
        if self.drafting is not None:
            await self._finish_draft()
        self.finished.set()
        await self.ws.close(code=CloseCode.normal)

    async def cancel_tasks(self) -> None:
        if self.record is not None:
            await self.record.cancel()
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
        self.server.finishing.discard(self)
        if self.session is not None:
            self.session.done.set()
            if self.server.sessions.get(self.session.encounter_id) is self.session:
                del self.server.sessions[self.session.encounter_id]
