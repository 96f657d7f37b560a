"""The sans-I/O protocol state machine: every rule, without a socket."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from scribe.models import Consent
from scribe.protocol import (
    Audio,
    Duplicate,
    ErrorCode,
    Reject,
    ServerProtocol,
    Start,
    StartMessage,
    Stop,
    decode_event,
    encode_event,
    encode_frame,
    encode_start,
    AckEvent,
)

START = StartMessage(
    encounter_id="enc-1", clinician_id="dr-a", patient_ref="Patient/1", consent=Consent(given=True)
)


def proto() -> ServerProtocol:
    return ServerProtocol(max_frame_seconds=2.0, supported_rates=[16_000, 48_000])


def started() -> ServerProtocol:
    p = proto()
    [action] = p.receive_text(encode_start(START))
    assert isinstance(action, Start)
    p.started(0)
    return p


def code(actions) -> ErrorCode:
    [a] = actions
    assert isinstance(a, Reject), a
    return a.error.code


def test_start_then_frames_in_order():
    p = started()
    assert p.receive_bytes(encode_frame(0, b"\x01\x00" * 10)) == [Audio(0, b"\x01\x00" * 10)]
    assert p.receive_bytes(encode_frame(1, b"\x00\x00")) == [Audio(1, b"\x00\x00")]
    assert p.receive_text('{"type":"stop"}') == [Stop()]


def test_frame_before_start_is_refused():
    assert code(proto().receive_bytes(encode_frame(0, b"\x00\x00"))) is ErrorCode.not_started


def test_garbled_json_and_unknown_type():
    p = proto()
    assert code(p.receive_text("{nope")) is ErrorCode.bad_json
    assert code(p.receive_text("[1,2]")) is ErrorCode.invalid_message
    assert code(p.receive_text('{"type":"dance"}')) is ErrorCode.unknown_type
    assert code(p.receive_text('{"type":"start","encounter_id":"x"}')) is ErrorCode.invalid_message
    # the connection is still usable after each error
    assert isinstance(p.receive_text(encode_start(START))[0], Start)


def test_start_without_consent_is_fatal():
    msg = START.model_copy(update={"consent": Consent(given=False)})
    [a] = proto().receive_text(encode_start(msg))
    assert isinstance(a, Reject) and a.error.code is ErrorCode.consent_required and a.error.fatal


def test_unsupported_sample_rate_is_fatal_and_names_the_fix():
    msg = START.model_copy(update={"sample_rate": 12345})
    [a] = proto().receive_text(encode_start(msg))
    assert a.error.code is ErrorCode.unsupported_sample_rate and a.error.fatal
    assert "16000" in a.error.message


def test_bad_encounter_id_is_refused():
    raw = json.loads(encode_start(START))
    raw["encounter_id"] = "../../etc/passwd"
    assert code(proto().receive_text(json.dumps(raw))) is ErrorCode.invalid_message


def test_gap_duplicate_and_bad_frames():
    p = started()
    p.receive_bytes(encode_frame(0, b"\x00\x00"))
    [gap] = p.receive_bytes(encode_frame(5, b"\x00\x00"))
    assert gap.error.code is ErrorCode.frame_gap and gap.error.expected_seq == 1 and not gap.error.fatal
    assert p.receive_bytes(encode_frame(0, b"\x00\x00")) == [Duplicate(0)]
    assert code(p.receive_bytes(b"SA")) is ErrorCode.bad_frame
    assert code(p.receive_bytes(b"XX\x01\x00" + bytes(8) + b"\x00\x00")) is ErrorCode.bad_frame
    assert code(p.receive_bytes(encode_frame(1, b"\x00"))) is ErrorCode.bad_frame  # odd byte count
    assert code(p.receive_bytes(encode_frame(1, b""))) is ErrorCode.bad_frame
    assert code(p.receive_bytes(encode_frame(1, b"\x00" * 64_002))) is ErrorCode.frame_too_large
    # after all that, the next expected frame is still accepted
    assert p.receive_bytes(encode_frame(1, b"\x00\x00")) == [Audio(1, b"\x00\x00")]


def test_second_start_and_stop_before_start():
    p = started()
    assert code(p.receive_text(encode_start(START))) is ErrorCode.already_started
    assert code(proto().receive_text('{"type":"stop"}')) is ErrorCode.not_started


def test_resume_starts_at_server_position():
    p = proto()
    p.receive_text(encode_start(START))
    p.started(42)
    assert p.receive_bytes(encode_frame(41, b"\x00\x00")) == [Duplicate(41)]
    assert p.receive_bytes(encode_frame(42, b"\x00\x00")) == [Audio(42, b"\x00\x00")]


def test_events_round_trip():
    ev = AckEvent(seq=7)
    assert decode_event(encode_event(ev)) == ev


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_fuzz_never_raises(data):
    for p in (proto(), started()):
        actions = p.receive_bytes(data) if isinstance(data, bytes) else p.receive_text(data)
        for a in actions:
            assert isinstance(a, (Audio, Duplicate, Start, Stop, Reject))
            if isinstance(a, Reject):
                assert a.error.code in ErrorCode


def test_two_channel_frames_must_hold_whole_stereo_samples_at_16k():
    p = ServerProtocol(max_frame_seconds=2.0, supported_rates=[16_000, 48_000])
    [start] = p.receive_text(encode_start(START.model_copy(update={"channels": 2})))
    p.started(0)
    assert p.max_frame_bytes == 128_000  # 2 s × 16 kHz × 2 bytes × 2 channels
    assert code(p.receive_bytes(encode_frame(0, b"\x00" * 6))) is ErrorCode.bad_frame  # 1.5 stereo samples
    assert isinstance(p.receive_bytes(encode_frame(0, b"\x00" * 8))[0], Audio)
    q = ServerProtocol(max_frame_seconds=2.0, supported_rates=[16_000, 48_000])
    [reject] = q.receive_text(encode_start(START.model_copy(update={"channels": 2, "sample_rate": 48_000})))
    assert reject.error.code is ErrorCode.unsupported_sample_rate and reject.error.fatal
