"""The service keeps its promises when the network or the client misbehaves around ``stop``,
when the transcriber falls behind, and with inputs from newer or sloppier clients."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import medwer
import websockets

from scribe.audio import FileSource
from scribe.client import StreamClient
from scribe.protocol import ErrorCode, decode_event, encode_frame, encode_start
from scribe.database import open_store

from conftest import SAMPLES, TOKEN, RunningServer, reference_text, start_server
from stream_support import DICTATION, assert_clean_sequence, start_msg

JFK = SAMPLES / "general_jfk.flac"


def wer(ref: str, hyp: str) -> float:
    return medwer.Scorer().corpus([ref], [hyp])["wer"]


async def _connect(url: str, token: str = TOKEN, scheme: str = "Bearer"):
    return await websockets.connect(url, additional_headers={"Authorization": f"{scheme} {token}"})


async def _next_event(ws, timeout: float = 60.0):
    while True:
        event = decode_event(await asyncio.wait_for(ws.recv(), timeout))
        if event is not None:
            return event


class DropsAfterStop(StreamClient):
    """A client whose connection dies right after it sent ``stop`` (a laptop lid closed)."""

    dropped = False

    async def _send_loop(self, ws, from_seq):
        await super()._send_loop(ws, from_seq)
        if not self.dropped:
            self.dropped = True
            ws.transport.abort()


async def test_connection_lost_after_stop_still_yields_the_whole_transcript(live_server: RunningServer, settings):
    source = FileSource(DICTATION, speed=0)
    client = DropsAfterStop(live_server.url, start_msg("enc-drop"), token=TOKEN)
    transcript = await asyncio.wait_for(client.run(source.chunks()), 300)
    assert client.dropped and client.stats.connects >= 2
    assert wer(reference_text(DICTATION), transcript.text) < 0.45, transcript.text
    assert_clean_sequence(transcript.segments, source.duration)
    store = open_store(settings)
    assert [s.id for s in store.transcript("enc-drop")] == [s.id for s in transcript.segments]
    assert store.get_encounter("enc-drop").status.value in ("transcribed", "drafting", "draft_ready")


async def test_server_keeps_reading_while_it_finishes_after_stop(live_server: RunningServer):
    """Pings and messages are answered while the backlog is transcribed, so a client's ping
    timeout cannot kill a connection that is waiting for ``done``."""
    source = FileSource(DICTATION, speed=0)
    ws = await _connect(live_server.url)
    await ws.send(encode_start(start_msg("enc-alive")))
    assert (await _next_event(ws)).type == "ready"
    seq = 0
    async for pcm in source.chunks():
        await ws.send(encode_frame(seq, pcm))
        seq += 1
    await ws.send('{"type":"stop"}')
    await ws.send('{"type":"hello"}')
    pong = await ws.ping()
    await asyncio.wait_for(pong, 10)
    seen = []
    while True:
        event = await _next_event(ws, 300)
        seen.append(event)
        if event.type == "done":
            break
    errors = [e for e in seen if e.type == "error"]
    assert [e.code for e in errors] == [ErrorCode.unknown_type]
    # the error was answered before the transcript was finished
    assert seen.index(errors[0]) < len(seen) - 1
    await ws.close()


async def test_transcriber_behind_the_queue_catches_up_from_the_store(settings, recognizer, caplog):
    settings.server.queue_seconds = 1.0  # far less than the file: most audio is re-read from disk
    running = await start_server(settings, recognizer)
    try:
        source = FileSource(DICTATION, speed=0)
        client = StreamClient(running.url, start_msg("enc-behind"), token=TOKEN)
        with caplog.at_level("INFO", logger="scribe.service.session"):
            transcript = await asyncio.wait_for(client.run(source.chunks()), 300)
    finally:
        await running.stop()
    finished = [r for r in caplog.records if r.getMessage() == "session finished"]
    assert finished and finished[0].caught_up_s > 5.0
    assert wer(reference_text(DICTATION), transcript.text) < 0.45, transcript.text
    assert_clean_sequence(transcript.segments, source.duration)


async def test_language_the_model_cannot_transcribe_is_refused(live_server: RunningServer):
    ws = await _connect(live_server.url)
    await ws.send(encode_start(start_msg("enc-de").model_copy(update={"language": "de"})))
    event = await _next_event(ws)
    assert event.type == "error" and event.code == ErrorCode.unsupported_language and event.fatal
    assert "English-only" in event.message
    await ws.close()


async def test_bearer_scheme_is_case_insensitive(live_server: RunningServer):
    ws = await _connect(live_server.url, scheme="bearer")
    await ws.send(encode_start(start_msg("enc-case")))
    assert (await _next_event(ws)).type == "ready"
    await ws.close()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{live_server.http}/v1/encounters", headers={"Authorization": f"BEARER {TOKEN}"}) as r:
            assert r.status == 200


async def test_resent_frame_before_any_ack_is_not_acked_as_minus_one(live_server: RunningServer):
    ws = await _connect(live_server.url)
    await ws.send(encode_start(start_msg("enc-dup")))
    assert (await _next_event(ws)).type == "ready"
    pcm = b"\x00\x01" * 1600
    for _ in range(3):
        await ws.send(encode_frame(0, pcm))
    await ws.send(encode_frame(1, pcm))
    acks = []
    while not acks or acks[-1] < 1:
        event = await _next_event(ws)
        if event.type == "ack":
            acks.append(event.seq)
    assert min(acks) >= 0 and acks == sorted(acks)
    await ws.close()


async def test_frame_limit_scales_with_the_sample_rate(live_server: RunningServer):
    """2 s of 48 kHz audio is a legal frame even though it is 6 s worth of 16 kHz bytes."""
    ws = await _connect(live_server.url)
    await ws.send(encode_start(start_msg("enc-48k", rate=48_000)))
    assert (await _next_event(ws)).type == "ready"
    await ws.send(encode_frame(0, b"\x00\x00" * 96_000))
    assert (await _next_event(ws)).type == "ack"
    await ws.send(encode_frame(1, b"\x00\x00" * 96_002))
    event = await _next_event(ws)
    assert event.type == "error" and event.code == ErrorCode.frame_too_large
    await ws.close()


def test_client_tolerates_events_and_codes_from_a_newer_server():
    assert decode_event('{"type":"speaker_revision","segment":"seg-00001"}') is None
    event = decode_event(json.dumps({"type": "error", "code": "brand_new", "message": "m", "fatal": False,
                                     "hint": "extra field"}))
    assert event.code == "brand_new"
    ack = decode_event('{"type":"ack","seq":4,"persisted_ms":3}')
    assert ack.seq == 4
