"""The streaming protocol, sans I/O.

This module turns the bytes and strings a websocket delivers into typed actions for the
server shell, and typed events into what goes back on the wire. It owns no socket, no
thread and no clock, so every rule (frames before ``start``, gaps, duplicates, oversized
frames, garbled JSON) is unit-tested directly — the way ``h11`` keeps HTTP logic apart
from the network. The wire format is documented in ``docs/protocol.md``; bump
``PROTOCOL_VERSION`` on any incompatible change.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .models import Consent, Note, Segment, Speaker, Transcript

PROTOCOL_VERSION = 1

# Binary audio frame: magic "SA", version byte, flags byte, uint64 big-endian sequence
# number, then little-endian PCM16 mono samples.
FRAME_MAGIC = b"SA"
FRAME_HEADER = struct.Struct(">2sBBQ")
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 12 bytes


class ErrorCode(StrEnum):
    """Stable, machine-readable error codes. Never renamed; only added."""

    unauthorized = "unauthorized"
    bad_json = "bad_json"
    unknown_type = "unknown_type"
    invalid_message = "invalid_message"
    unsupported_protocol = "unsupported_protocol"
    not_started = "not_started"
    already_started = "already_started"
    consent_required = "consent_required"
    unsupported_sample_rate = "unsupported_sample_rate"
    bad_frame = "bad_frame"
    frame_too_large = "frame_too_large"
    frame_gap = "frame_gap"
    message_too_large = "message_too_large"
    encounter_conflict = "encounter_conflict"
    encounter_closed = "encounter_closed"
    superseded = "superseded"
    overloaded = "overloaded"
    unsupported_language = "unsupported_language"
    forbidden = "forbidden"
    draft_failed = "draft_failed"
    internal = "internal"


class CloseCode:
    """Websocket close codes (4000–4999 are application-defined)."""

    normal = 1000
    going_away = 1001
    message_too_big = 1009
    internal_error = 1011
    unauthorized = 4401
    forbidden = 4403
    protocol_error = 4400
    superseded = 4409


# --------------------------------------------------------------------------- client → server


ENCOUNTER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""An encounter id: 1–128 characters from ``A–Z a–z 0–9 . _ : -``, starting with a letter or
digit. The id names files (FHIR exports) and appears in URL paths, so ``.``/``..``, slashes,
spaces and leading dots or dashes are refused here, at the boundary, rather than escaped later."""

MAX_INDEX = 2**31 - 1
"""The largest segment index or sequence number a client may name (a 32-bit signed integer, as
stored): larger values are refused as invalid rather than overflowing the store."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartMessage(_Msg):
    type: Literal["start"] = "start"
    protocol: int = PROTOCOL_VERSION
    encounter_id: str = Field(min_length=1, max_length=128, pattern=ENCOUNTER_ID_PATTERN)
    clinician_id: str = Field(min_length=1, max_length=128)
    patient_ref: str = Field(min_length=1, max_length=256)
    sample_rate: int = Field(default=16_000, gt=0)
    channels: int = Field(default=1, ge=1, le=2)
    """2: interleaved PCM16 stereo with one speaker per channel (e.g. a microphone per person);
    the server transcribes the mixdown and uses the channels for speaker labels. 16 kHz only."""
    language: str | None = Field(default=None, max_length=16)
    consent: Consent
    since_segment: int = Field(default=0, ge=0, le=MAX_INDEX)
    """Segments the client already holds; on resume the server replays only later ones."""


class StopMessage(_Msg):
    type: Literal["stop"] = "stop"


class WithdrawMessage(_Msg):
    """The patient withdrew consent: stop recording and delete this encounter's audio,
    transcript and drafts (only an audit record remains)."""

    type: Literal["withdraw"] = "withdraw"


ClientMessage = Annotated[Union[StartMessage, StopMessage, WithdrawMessage], Field(discriminator="type")]
_client_adapter: TypeAdapter[StartMessage | StopMessage | WithdrawMessage] = TypeAdapter(ClientMessage)


# --------------------------------------------------------------------------- server → client


class _Event(BaseModel):
    """Server events ignore unknown fields when parsed, so a newer server (which may add
    fields, never remove or rename them) does not break an older client."""

    model_config = ConfigDict(extra="ignore")


class ReadyEvent(_Event):
    type: Literal["ready"] = "ready"
    protocol: int = PROTOCOL_VERSION
    encounter_id: str
    next_seq: int
    """The sequence number the server expects next (resume point)."""
    segments: int
    """Committed segments the encounter has so far."""
    resumed: bool


class PartialEvent(_Event):
    type: Literal["partial"] = "partial"
    text: str
    start: float
    end: float


class SegmentEvent(_Event):
    type: Literal["segment"] = "segment"
    segment: Segment


class AckEvent(_Event):
    type: Literal["ack"] = "ack"
    seq: int


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    code: ErrorCode | str
    """One of ``ErrorCode``; a code this client does not know yet stays a plain string."""
    message: str
    fatal: bool = False
    expected_seq: int | None = None


class SpeakerRevision(BaseModel):
    segment_id: str
    speaker: Speaker


class SpeakersEvent(_Event):
    """Speaker labels of earlier segments changed (the labeller learned the voices better).
    Apply them to the segments you hold; the stored transcript already has them."""

    type: Literal["speakers"] = "speakers"
    revisions: list[SpeakerRevision]

    @classmethod
    def of(cls, revisions: Mapping[str, Speaker]) -> SpeakersEvent:
        """The event for segment id → new speaker."""
        return cls(revisions=[SpeakerRevision(segment_id=k, speaker=v) for k, v in revisions.items()])


class RevisionEvent(_Event):
    """The record pass re-transcribed finished audio behind the live edge, the way offline
    transcription does (long windows, the previous text as context, a model chosen for
    accuracy): ``segments`` replace the segments ``replaces`` for ``[start, end)``. Revisions
    arrive in order (``number`` 0, 1, 2, …, each ``start`` the previous ``end``), cover the
    whole visit by ``done``, and are already stored. Replace the segments in place; their
    speakers are the live ones, carried over by time."""

    type: Literal["revision"] = "revision"
    number: int
    start: float
    end: float
    replaces: list[str]
    segments: list[Segment]


class DraftEvent(_Event):
    """The note draft as it grows: during the visit (every ``notes.live_draft_interval_s``)
    and after ``done`` while the writer finishes; ``final`` marks the stored draft."""

    type: Literal["draft"] = "draft"
    note: Note
    final: bool = False
    version: int | None = None
    """The stored draft version (final drafts only)."""


class WithdrawnEvent(_Event):
    """Consent was withdrawn: recording stopped, the encounter's data deleted (rows per table)."""

    type: Literal["withdrawn"] = "withdrawn"
    encounter_id: str
    deleted: dict[str, int]


class DoneEvent(_Event):
    type: Literal["done"] = "done"
    transcript: Transcript


ServerEvent = Annotated[
    Union[ReadyEvent, PartialEvent, SegmentEvent, AckEvent, ErrorEvent, SpeakersEvent, RevisionEvent, DraftEvent,
          WithdrawnEvent, DoneEvent],
    Field(discriminator="type"),
]
_server_adapter: TypeAdapter[
    ReadyEvent | PartialEvent | SegmentEvent | AckEvent | ErrorEvent | SpeakersEvent | RevisionEvent | DraftEvent
    | WithdrawnEvent | DoneEvent
] = TypeAdapter(ServerEvent)


def encode_event(event: BaseModel) -> str:
    return event.model_dump_json(exclude_none=True)


_EVENT_TYPES = {"ready", "partial", "segment", "ack", "error", "speakers", "revision", "draft", "withdrawn", "done"}


def decode_event(
    text: str,
) -> (ReadyEvent | PartialEvent | SegmentEvent | AckEvent | ErrorEvent | SpeakersEvent | RevisionEvent | DraftEvent
      | WithdrawnEvent | DoneEvent | None):
    """Client side: parse one server event. An event type this client does not know (added
    by a newer server) gives None, to be skipped; a malformed known event raises ``ValueError``."""
    try:
        raw = json.loads(text)
    except RecursionError:
        raise ValueError("server event is nested too deeply") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or raw["type"] not in _EVENT_TYPES:
        return None
    return _server_adapter.validate_python(raw)


def encode_frame(seq: int, pcm: bytes) -> bytes:
    return FRAME_HEADER.pack(FRAME_MAGIC, PROTOCOL_VERSION, 0, seq) + pcm


def encode_start(msg: StartMessage) -> str:
    return msg.model_dump_json(exclude_none=True)


# --------------------------------------------------------------------------- state machine


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str, *, fatal: bool = False, expected_seq: int | None = None):
        super().__init__(message)
        self.event = ErrorEvent(code=code, message=message, fatal=fatal, expected_seq=expected_seq)


@dataclass(frozen=True)
class Start:
    """Action: the client asked to start or resume; the shell looks up the store."""

    message: StartMessage


@dataclass(frozen=True)
class Audio:
    """Action: a new, in-order audio frame (PCM16 at the client's sample rate)."""

    seq: int
    pcm: bytes


@dataclass(frozen=True)
class Duplicate:
    """Action: a frame the server already has (client resent after resume): re-ack only."""

    seq: int


@dataclass(frozen=True)
class Stop:
    """Action: the client finished; flush the transcriber and send ``done``."""


@dataclass(frozen=True)
class Withdraw:
    """Action: consent withdrawn; stop and delete the encounter's data."""


@dataclass(frozen=True)
class Reject:
    """Action: send this error; close the connection when it is fatal."""

    error: ErrorEvent


Action = Start | Audio | Duplicate | Stop | Withdraw | Reject


class State(StrEnum):
    awaiting_start = "awaiting_start"
    starting = "starting"
    streaming = "streaming"
    stopped = "stopped"
    closed = "closed"


class ServerProtocol:
    """Validates one connection's inbound traffic and tracks where the stream is.

    The shell feeds it ``receive_text``/``receive_bytes`` and acts on the returned actions;
    after it has looked up (or created) the encounter it calls ``started(next_seq)``.
    Nothing here raises on bad input: every problem becomes a ``Reject`` with a stable code.
    """

    def __init__(self, *, max_frame_seconds: float, supported_rates: list[int]):
        self.max_frame_seconds = max_frame_seconds
        self.max_frame_bytes = 0
        """Set at ``start`` from the client's sample rate: the limit is in seconds of audio."""
        self.channels = 1
        self.supported_rates = sorted(supported_rates)
        self.state = State.awaiting_start
        self.expected_seq = 0
        self.start: StartMessage | None = None

    # -- inbound

    def receive_text(self, text: str) -> list[Action]:
        try:
            return self._text(text)
        except ProtocolError as exc:
            return [Reject(exc.event)]

    def receive_bytes(self, data: bytes) -> list[Action]:
        try:
            return self._bytes(data)
        except ProtocolError as exc:
            return [Reject(exc.event)]

    def _text(self, text: str) -> list[Action]:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError(ErrorCode.bad_json, f"message is not valid JSON ({exc.msg})") from None
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.bad_json, f"message is not valid JSON ({exc.reason})") from None
        except RecursionError:
            raise ProtocolError(ErrorCode.bad_json, "message is nested too deeply") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise ProtocolError(ErrorCode.invalid_message, "a message must be a JSON object with a string 'type'")
        if raw["type"] not in ("start", "stop", "withdraw"):
            raise ProtocolError(
                ErrorCode.unknown_type,
                f"unknown message type {raw['type'][:40]!r}; expected 'start', 'stop' or 'withdraw'",
            )
        try:
            msg = _client_adapter.validate_python(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise ProtocolError(ErrorCode.invalid_message, f"invalid {raw['type']!r} message: {problems}") from None
        if isinstance(msg, StartMessage):
            return self._on_start(msg)
        if isinstance(msg, WithdrawMessage):
            if self.state not in (State.streaming, State.stopped):
                raise ProtocolError(ErrorCode.not_started, "'withdraw' before 'start': nothing is recording")
            self.state = State.stopped
            return [Withdraw()]
        return self._on_stop()

    def _on_start(self, msg: StartMessage) -> list[Action]:
        if self.state is not State.awaiting_start:
            raise ProtocolError(ErrorCode.already_started, "this connection already has a started encounter")
        if msg.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.unsupported_protocol,
                f"protocol version {msg.protocol} is not supported; this server speaks {PROTOCOL_VERSION}",
                fatal=True,
            )
        if not msg.consent.given:
            raise ProtocolError(
                ErrorCode.consent_required,
                "recording needs the patient's recorded consent: send consent.given=true once it is obtained",
                fatal=True,
            )
        if msg.sample_rate not in self.supported_rates:
            raise ProtocolError(
                ErrorCode.unsupported_sample_rate,
                f"sample rate {msg.sample_rate} Hz is not supported; send 16000 Hz PCM16 mono "
                f"(or one of {', '.join(str(r) for r in self.supported_rates)}, which are resampled)",
                fatal=True,
            )
        self.state = State.starting
        self.start = msg
        if msg.channels == 2 and msg.sample_rate != 16_000:
            self.state = State.awaiting_start
            self.start = None
            raise ProtocolError(
                ErrorCode.unsupported_sample_rate,
                "two-channel audio must be sent at 16000 Hz (resample it on the client)",
                fatal=True,
            )
        self.channels = msg.channels
        self.max_frame_bytes = int(self.max_frame_seconds * msg.sample_rate) * 2 * msg.channels
        return [Start(msg)]

    def started(self, next_seq: int) -> None:
        """The shell accepted the start; frames from ``next_seq`` on are expected."""
        self.state = State.streaming
        self.expected_seq = next_seq

    def _on_stop(self) -> list[Action]:
        if self.state is State.stopped:
            return []
        if self.state is not State.streaming:
            raise ProtocolError(ErrorCode.not_started, "'stop' before 'start': nothing is recording")
        self.state = State.stopped
        return [Stop()]

    def _bytes(self, data: bytes) -> list[Action]:
        if self.state in (State.awaiting_start, State.starting):
            raise ProtocolError(ErrorCode.not_started, "audio frame before the encounter was started; send 'start' first")
        if self.state is State.stopped:
            raise ProtocolError(ErrorCode.encounter_closed, "audio frame after 'stop'")
        if len(data) < FRAME_HEADER_SIZE:
            raise ProtocolError(ErrorCode.bad_frame, f"audio frame shorter than its {FRAME_HEADER_SIZE}-byte header")
        magic, version, _flags, seq = FRAME_HEADER.unpack_from(data)
        if magic != FRAME_MAGIC or version != PROTOCOL_VERSION:
            raise ProtocolError(ErrorCode.bad_frame, "audio frame header is not 'SA' version 1")
        pcm = data[FRAME_HEADER_SIZE:]
        if not pcm or len(pcm) % (2 * self.channels):
            raise ProtocolError(
                ErrorCode.bad_frame,
                "audio payload must be a non-empty whole number of PCM16 samples"
                + (" (both channels, interleaved)" if self.channels == 2 else ""),
            )
        if len(pcm) > self.max_frame_bytes:
            raise ProtocolError(
                ErrorCode.frame_too_large,
                f"audio frame of {len(pcm)} bytes exceeds the {self.max_frame_bytes}-byte limit; send shorter frames",
            )
        if seq < self.expected_seq:
            return [Duplicate(seq)]
        if seq > self.expected_seq:
            raise ProtocolError(
                ErrorCode.frame_gap,
                f"frame {seq} arrived but {self.expected_seq} was expected; resend from {self.expected_seq}",
                expected_seq=self.expected_seq,
            )
        self.expected_seq += 1
        return [Audio(seq, pcm)]
