"""The streaming client: sends numbered audio frames, survives dropped connections.

Every frame stays in the client's ``unacked`` buffer until the server acks it (acks mean
"persisted"). On a dropped connection the client reconnects with the same encounter id; the
server's ``ready`` says which frame it expects next, the client resends from there, and asks
only for segments it does not have yet — so nothing is lost and nothing is duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl as ssl_lib
from urllib.parse import urlsplit, urlunsplit
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .models import Note, Segment, Transcript
from .protocol import (
    AckEvent,
    CloseCode,
    DoneEvent,
    DraftEvent,
    ErrorCode,
    ErrorEvent,
    PartialEvent,
    ReadyEvent,
    SegmentEvent,
    RevisionEvent,
    SpeakersEvent,
    StartMessage,
    WithdrawnEvent,
    decode_event,
    encode_frame,
    encode_start,
)

log = logging.getLogger(__name__)

_FATAL_CLOSE = {CloseCode.unauthorized, CloseCode.forbidden, CloseCode.protocol_error}


class ClientError(Exception):
    """The server refused the stream for a reason retrying cannot fix."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class _Retry(Exception):
    """The server could not open the stream this time (e.g. its store was busy): reconnect."""


class _Finalising(Exception):
    """The server refused a resume because the encounter was stopped: fetch over HTTP."""


@dataclass
class ClientStats:
    connects: int = 0
    frames_sent: int = 0
    frames_resent: int = 0
    partials: int = 0
    errors: list[str] = field(default_factory=list)


class StreamClient:
    """Stream one encounter to a scribe server.

    ``on_event`` receives every server event (for live display). ``run`` returns the final
    transcript once the server has sent ``done``.
    """

    def __init__(
        self,
        url: str,
        start: StartMessage,
        *,
        token: str | None = None,
        on_event: Callable[[object], None] | None = None,
        max_reconnects: int = 20,
        wait_for_draft: bool = False,
        ssl: ssl_lib.SSLContext | None = None,
        max_unacked_frames: int = 36_000,
        open_timeout: float = 10.0,
    ):
        self.url = url
        self.start = start
        self.token = token
        self.on_event = on_event or (lambda e: None)
        self.max_reconnects = max_reconnects
        self.wait_for_draft = wait_for_draft
        self.ssl = ssl
        """TLS context for ``wss://`` (None: the system's trusted CAs)."""
        """Keep the connection after ``done`` until the server sends the final note draft."""
        self.draft: Note | None = None
        self.draft_version: int | None = None
        self.max_unacked = max_unacked_frames
        self.open_timeout = open_timeout
        self.unacked: deque[tuple[int, bytes]] = deque()
        self.next_seq = 0
        self.source_done = False
        self.segments: dict[int, Segment] = {}
        self.revisions: list[RevisionEvent] = []
        """The record pass's revisions as they arrived (the final transcript has them applied)."""
        self.stats = ClientStats()
        self._new_frame = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._transcript: Transcript | None = None
        self._stop_sent = False
        self._highest_ack = -1

    # -- source side

    async def _pump(self, chunks: AsyncIterator[bytes]) -> None:
        async for pcm in chunks:
            while len(self.unacked) >= self.max_unacked:
                self._room.clear()
                await self._room.wait()
            self.unacked.append((self.next_seq, pcm))
            self.next_seq += 1
            self._new_frame.set()
        self.source_done = True
        self._new_frame.set()

    def _acked(self, seq: int) -> None:
        self._highest_ack = max(self._highest_ack, seq)
        while self.unacked and self.unacked[0][0] <= seq:
            self.unacked.popleft()
        self._room.set()

    # -- connection side

    async def run(self, chunks: AsyncIterator[bytes]) -> Transcript:
        pump = asyncio.create_task(self._pump(chunks))
        attempt = 0
        try:
            while True:
                progress_before = self._progress()
                try:
                    transcript = await self._connection()
                    if transcript is not None:
                        return transcript
                except _Finalising:
                    return await self._fetch_transcript()
                except (OSError, ConnectionClosed, InvalidStatus, asyncio.TimeoutError, _Retry) as exc:
                    if isinstance(exc, ConnectionClosed) and exc.rcvd and exc.rcvd.code in _FATAL_CLOSE:
                        raise ClientError(f"server closed the stream: {exc.rcvd.reason or exc.rcvd.code}") from None
                    if isinstance(exc, InvalidStatus) and exc.response.status_code in (401, 403):
                        # A reverse proxy in front of scribe may refuse the upgrade itself.
                        raise ClientError("the server refused the token") from None
                    self.stats.errors.append(type(exc).__name__)
                if pump.done() and pump.exception():
                    raise pump.exception()  # type: ignore[misc]
                # Back off on connections that achieved nothing (no ack, no segment), even if
                # they reached 'ready': a server failing the same way every time is not retried
                # forever; any progress resets the count.
                attempt = 1 if self._progress() != progress_before else attempt + 1
                if attempt > self.max_reconnects:
                    raise ClientError(f"gave up after {self.max_reconnects} reconnection attempts without progress")
                delay = min(10.0, 0.2 * 2 ** min(attempt, 6)) * (0.5 + random.random() / 2)
                log.info("reconnecting", extra={"attempt": attempt, "delay_s": round(delay, 2)})
                await asyncio.sleep(delay)
        finally:
            pump.cancel()

    def _apply_speakers(self, event: SpeakersEvent) -> None:
        by_id = {r.segment_id: r.speaker for r in event.revisions}
        for index, seg in list(self.segments.items()):
            if seg.id in by_id:
                self.segments[index] = seg.model_copy(update={"speaker": by_id[seg.id]})

    def _progress(self) -> tuple[int, int]:
        return (self._highest_ack, len(self.segments))

    def _http_base(self) -> str:
        parts = urlsplit(self.url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return urlunsplit((scheme, parts.netloc, "", "", ""))

    async def _fetch_transcript(self, timeout: float = 900.0) -> Transcript:
        """The server finished (or is finishing) this encounter after our ``stop``, but the
        ``done`` event was lost with a connection: wait for it to finish, then read the
        stored transcript over HTTP."""
        import aiohttp

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        base = f"{self._http_base()}/v1/encounters/{self.start.encounter_id}"
        deadline = asyncio.get_running_loop().time() + timeout
        connector = aiohttp.TCPConnector(ssl=self.ssl) if self.ssl is not None else None
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30),
                                         connector=connector) as http:
            while True:
                async with http.get(base) as resp:
                    if resp.status != 200:
                        raise ClientError(f"cannot read encounter status: HTTP {resp.status}")
                    status = (await resp.json())["status"]
                if status != "recording":
                    break
                if asyncio.get_running_loop().time() > deadline:
                    raise ClientError("the server did not finish the encounter in time; fetch it later")
                await asyncio.sleep(1.0)
            async with http.get(f"{base}/transcript") as resp:
                if resp.status != 200:
                    raise ClientError(f"cannot read the transcript: HTTP {resp.status}")
                transcript = Transcript.model_validate_json(await resp.text())
        for seg in transcript.segments:
            if seg.index not in self.segments:
                self.segments[seg.index] = seg
                self.on_event(SegmentEvent(segment=seg))
        self._transcript = transcript
        return transcript

    async def _connection(self) -> Transcript | None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        tls = {"ssl": self.ssl} if self.ssl is not None and self.url.startswith("wss:") else {}
        async with websockets.connect(
            self.url, additional_headers=headers, max_size=None, open_timeout=self.open_timeout,
            ping_interval=20, ping_timeout=20, **tls,
        ) as ws:
            self.stats.connects += 1
            since = len(self.segments)
            await ws.send(encode_start(self.start.model_copy(update={"since_segment": since})))
            ready = await self._first_event(ws)
            self._acked(ready.next_seq - 1)
            resend_from = ready.next_seq
            if self.stats.connects > 1:
                self.stats.frames_resent += sum(1 for s, _ in self.unacked if s >= resend_from)
            sender = asyncio.create_task(self._send_loop(ws, resend_from))
            gap_restart: int | None = None
            try:
                async for raw in ws:
                    if isinstance(raw, bytes):
                        continue
                    try:
                        event = decode_event(raw)
                    except ValueError:
                        self.stats.errors.append("bad_event")  # a garbled event is skipped, not fatal
                        continue
                    if event is None:
                        continue  # an event type from a newer server
                    self.on_event(event)
                    if isinstance(event, AckEvent):
                        self._acked(event.seq)
                    elif isinstance(event, SegmentEvent):
                        self.segments.setdefault(event.segment.index, event.segment)
                    elif isinstance(event, SpeakersEvent):
                        self._apply_speakers(event)
                    elif isinstance(event, RevisionEvent):
                        self.revisions.append(event)
                    elif isinstance(event, PartialEvent):
                        self.stats.partials += 1
                    elif isinstance(event, ErrorEvent):
                        self.stats.errors.append(str(event.code))
                        if event.code == ErrorCode.frame_gap and event.expected_seq is not None:
                            # Every frame already in flight after the missing one reports the
                            # same gap: restart the sender once per distinct resume point.
                            if event.expected_seq != gap_restart:
                                gap_restart = event.expected_seq
                                sender.cancel()
                                sender = asyncio.create_task(self._send_loop(ws, event.expected_seq))
                        elif event.code in (ErrorCode.bad_frame, ErrorCode.frame_too_large):
                            raise ClientError(f"{event.code}: {event.message}", str(event.code))
                        elif event.fatal and event.code not in (ErrorCode.internal, ErrorCode.superseded):
                            raise ClientError(f"{event.code}: {event.message}", str(event.code))
                    elif isinstance(event, WithdrawnEvent):
                        raise ClientError("consent was withdrawn: recording stopped and its data deleted", "withdrawn")
                    elif isinstance(event, DraftEvent):
                        self.draft = event.note
                        if event.final:
                            self.draft_version = event.version
                            if self._transcript is not None:
                                return self._transcript
                    elif isinstance(event, DoneEvent):
                        self._transcript = event.transcript
                        if not self.wait_for_draft:
                            return event.transcript
                if self._transcript is not None:
                    return self._transcript  # closed after done without a draft (drafting off)
            finally:
                sender.cancel()
        return None

    async def _first_event(self, ws: websockets.ClientConnection) -> ReadyEvent:
        while True:
            raw = await asyncio.wait_for(ws.recv(), timeout=self.open_timeout + 60)
            if isinstance(raw, bytes):
                continue
            try:
                event = decode_event(raw)
            except ValueError:
                self.stats.errors.append("bad_event")
                continue
            if event is None:
                continue
            self.on_event(event)
            if isinstance(event, ReadyEvent):
                return event
            if isinstance(event, ErrorEvent) and not event.fatal:
                self.stats.errors.append(str(event.code))
                continue
            if isinstance(event, ErrorEvent):
                if event.code == ErrorCode.internal:
                    raise _Retry()  # the documented meaning: reconnect with backoff and resume
                if event.code == ErrorCode.encounter_closed and self._stop_sent:
                    # We already sent 'stop' on an earlier connection: the server finished
                    # (or is finishing) the encounter; the transcript is over HTTP.
                    raise _Finalising()
                raise ClientError(f"{event.code}: {event.message}", str(event.code))

    async def _send_loop(self, ws: websockets.ClientConnection, from_seq: int) -> None:
        seq = from_seq
        stop_sent = False
        while True:
            # Frames still buffered (unacked) from seq on, in order.
            pending = [(s, pcm) for s, pcm in list(self.unacked) if s >= seq]
            for s, pcm in pending:
                await ws.send(encode_frame(s, pcm))
                self.stats.frames_sent += 1
                seq = s + 1
            if self.source_done and seq >= self.next_seq:
                if not stop_sent:
                    await ws.send('{"type":"stop"}')
                    stop_sent = True
                    self._stop_sent = True
                return
            self._new_frame.clear()
            if seq >= self.next_seq and not self.source_done:
                await self._new_frame.wait()
