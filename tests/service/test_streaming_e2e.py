"""End to end: real websocket, real server, real faster-whisper on real audio."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import websockets

from scribe.audio import FileSource, float_to_pcm16, load_audio
from scribe.client import ClientError, StreamClient
from scribe.protocol import CloseCode, encode_frame, encode_start
from scribe.database import open_store

from conftest import SAMPLES, TOKEN, RunningServer, reference_text, start_server
from stream_support import DICTATION, as_pcm, assert_clean_sequence, start_msg, wer

JFK = SAMPLES / "general_jfk.flac"


async def test_stream_dictation_end_to_end(live_server: RunningServer, settings):
    source = FileSource(DICTATION, speed=0)
    events = []
    client = StreamClient(live_server.url, start_msg(), token=TOKEN, on_event=events.append)
    transcript = await client.run(source.chunks())
    # Bound: tiny.en scores 0.26 offline on this robotic-voice dictation (drug names are
    # mangled: docs/benchmarks.md); streaming measured 0.39. 0.45 fails if a third of it is lost.
    assert wer(reference_text(DICTATION), transcript.text) < 0.45, transcript.text
    assert_clean_sequence(transcript.segments, source.duration)
    acks = [e.seq for e in events if getattr(e, "type", "") == "ack"]
    assert acks[-1] == client.next_seq - 1 and acks == sorted(acks)
    # persisted: the store holds the same transcript (the record pass's, which replaced the live
    # pass's: scribe.asr.record) and every sample of the audio
    store = open_store(settings)
    assert [s.text for s in store.transcript("enc-test")] == [s.text for s in transcript.segments]
    audio = store.audio_from("enc-test", 0)
    assert as_pcm(audio) == float_to_pcm16(source.samples)
    # after done the service goes on to draft the note
    assert store.get_encounter("enc-test").status.value in ("transcribed", "drafting", "draft_ready")


async def test_real_speech_is_transcribed_accurately(live_server: RunningServer):
    client = StreamClient(live_server.url, start_msg("enc-jfk"), token=TOKEN)
    transcript = await client.run(FileSource(JFK, speed=0).chunks())
    # Measured 0.05 ("sold" for "so"); offline scores 0.0. With a 2 s encoder window it was
    # 0.36 (dropped and repeated phrases): 0.2 fails if that regression comes back.
    assert wer(reference_text(JFK), transcript.text) < 0.2, transcript.text


async def _raw(url: str, token: str | None = TOKEN, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await websockets.connect(url, additional_headers=headers, **kw)


@pytest.mark.parametrize("token,close_code", [(None, CloseCode.unauthorized), ("wrong", CloseCode.forbidden)])
async def test_auth_is_required(live_server: RunningServer, token, close_code):
    ws = await _raw(live_server.url, token)
    event = json.loads(await ws.recv())
    assert event["type"] == "error" and event["code"] == "unauthorized"
    with pytest.raises(websockets.ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd.code == close_code


async def test_client_reports_refused_token(live_server: RunningServer):
    client = StreamClient(live_server.url, start_msg(), token="wrong")
    with pytest.raises(ClientError):
        await client.run(FileSource(JFK, speed=0).chunks())


async def test_bad_input_over_the_wire(live_server: RunningServer):
    ws = await _raw(live_server.url)
    await ws.send(encode_frame(0, b"\x00\x00"))
    assert json.loads(await ws.recv())["code"] == "not_started"
    await ws.send("{garbled")
    assert json.loads(await ws.recv())["code"] == "bad_json"
    await ws.send('{"type":"rewind"}')
    assert json.loads(await ws.recv())["code"] == "unknown_type"
    await ws.send(encode_start(start_msg("enc-bad")))
    assert json.loads(await ws.recv())["type"] == "ready"
    await ws.send(encode_frame(0, b"\x00\x00" * 160))
    await ws.send(encode_frame(3, b"\x00\x00" * 160))
    seen = [json.loads(await ws.recv()) for _ in range(2)]
    gap = next(e for e in seen if e["type"] == "error")
    assert gap["code"] == "frame_gap" and gap["expected_seq"] == 1
    await ws.close()


async def test_oversized_message_closes_with_1009(live_server: RunningServer, settings):
    ws = await _raw(live_server.url, max_size=None)
    await ws.send(encode_start(start_msg("enc-big")))
    await ws.recv()
    await ws.send(b"SA\x01\x00" + bytes(8) + bytes(settings.server.max_message_bytes + 2))
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await ws.recv()
    assert info.value.rcvd.code == CloseCode.message_too_big


async def test_wrong_sample_rate_is_refused_and_48k_is_resampled(live_server: RunningServer):
    ws = await _raw(live_server.url)
    await ws.send(encode_start(start_msg("enc-rate", rate=12_345)))
    event = json.loads(await ws.recv())
    assert event["code"] == "unsupported_sample_rate" and event["fatal"]
    # 48 kHz audio is resampled by the server and still transcribed correctly
    samples16 = load_audio(JFK)
    import av

    r = av.AudioResampler(format="s16", layout="mono", rate=48_000)
    frame = av.AudioFrame.from_ndarray(np.frombuffer(float_to_pcm16(samples16), "<i2").reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = 16_000
    pcm48 = b"".join(o.to_ndarray().astype("<i2").tobytes() for o in list(r.resample(frame)) + list(r.resample(None)))

    async def chunks():
        step = 4800 * 2
        for i in range(0, len(pcm48), step):
            yield pcm48[i:i + step]

    client = StreamClient(live_server.url, start_msg("enc-48k", rate=48_000), token=TOKEN)
    transcript = await client.run(chunks())
    assert wer(reference_text(JFK), transcript.text) < 0.4, transcript.text


async def test_abrupt_disconnect_then_resume_loses_and_duplicates_nothing(live_server: RunningServer, settings):
    samples = load_audio(DICTATION)
    pcm = float_to_pcm16(samples)
    frames = [pcm[i:i + 3200] for i in range(0, len(pcm), 3200)]
    half = len(frames) // 2
    ws = await _raw(live_server.url)
    await ws.send(encode_start(start_msg("enc-resume")))
    assert json.loads(await ws.recv())["type"] == "ready"
    for seq in range(half + 5):
        await ws.send(encode_frame(seq, frames[seq]))
    last_ack = -1
    while last_ack < half:
        e = json.loads(await ws.recv())
        if e["type"] == "ack":
            last_ack = e["seq"]
    ws.transport.abort()  # no close handshake: a dropped network
    await asyncio.sleep(0.2)
    # the client keeps frames until acked; it reconnects and the server says where to resume
    client = StreamClient(live_server.url, start_msg("enc-resume"), token=TOKEN)
    client.unacked.extend((s, frames[s]) for s in range(last_ack + 1, half + 5))
    client.next_seq = half + 5

    async def rest():
        for s in range(half + 5, len(frames)):
            yield frames[s]

    # the pump numbers new frames from next_seq on
    transcript = await client.run(rest())
    assert_clean_sequence(transcript.segments, len(samples) / 16_000)
    assert wer(reference_text(DICTATION), transcript.text) < 0.45, transcript.text
    store = open_store(settings)
    assert as_pcm(store.audio_from("enc-resume", 0)) == pcm


async def test_server_restart_mid_stream_resumes(settings, recognizer):
    server = await start_server(settings, recognizer)
    source = FileSource(DICTATION, speed=8)
    acks: list[int] = []
    client = StreamClient(server.url, start_msg("enc-restart"), token=TOKEN,
                          on_event=lambda e: acks.append(e.seq) if getattr(e, "type", "") == "ack" else None)
    task = asyncio.create_task(client.run(source.chunks()))
    while not acks or acks[-1] < 60:
        await asyncio.sleep(0.05)
    await server.stop()  # the server goes away mid-encounter
    await asyncio.sleep(0.5)
    server = await start_server(settings, recognizer)  # same port, same database
    try:
        transcript = await asyncio.wait_for(task, timeout=300)
    finally:
        await server.stop()
    assert client.stats.connects >= 2
    assert_clean_sequence(transcript.segments, source.duration)
    assert wer(reference_text(DICTATION), transcript.text) < 0.45, transcript.text
    store = open_store(settings)
    assert as_pcm(store.audio_from("enc-restart", 0)) == float_to_pcm16(source.samples)


async def test_http_api_requires_auth_and_serves_transcripts(live_server: RunningServer):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{live_server.http}/v1/encounters") as r:
            assert r.status == 401
        async with http.get(f"{live_server.http}/v1/encounters", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 403
        async with http.get(f"{live_server.http}/v1/encounters/none/transcript",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 404
        async with http.get(f"{live_server.http}/healthz") as r:
            assert (await r.json())["status"] == "ok"
