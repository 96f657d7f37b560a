"""Access control and the audit trail on the live service: per-clinician tokens see only their
own encounters, consent is enforced for new recordings, and every refusal is audited."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiohttp
import pytest
import websockets

from scribe.audio import FileSource
from scribe.client import StreamClient
from scribe.models import Consent, utcnow
from scribe.protocol import ErrorCode, StartMessage, decode_event, encode_frame, encode_start
from scribe.trust.audit import AuditLog
from scribe.trust.tokens import TokenStore

from conftest import SAMPLES, TOKEN, RunningServer

JFK = SAMPLES / "general_jfk.flac"


def start(eid: str, clinician: str, consent: Consent | None = None) -> StartMessage:
    return StartMessage(encounter_id=eid, clinician_id=clinician, patient_ref="Patient/p1",
                        consent=consent or Consent.recorded_now(clinician))


async def first_event(url: str, token: str, msg: StartMessage):
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send(encode_start(msg))
        while True:
            event = decode_event(await asyncio.wait_for(ws.recv(), 30))
            if event is not None:
                return event


async def test_clinician_tokens_are_scoped_and_refusals_audited(live_server: RunningServer):
    raw = live_server.server.store.store
    tokens = TokenStore(raw)
    token_a, _ = await live_server.server.store.call(tokens.create, "dr-a")
    token_b, _ = await live_server.server.store.call(tokens.create, "dr-b")

    transcript = await StreamClient(live_server.url, start("enc-a", "dr-a"), token=token_a).run(
        FileSource(JFK, speed=0).chunks())
    assert transcript.segments

    # dr-b may not stream as dr-a, nor resume dr-a's encounter, nor read it
    refused = await first_event(live_server.url, token_b, start("enc-x", "dr-a"))
    assert refused.type == "error" and refused.code == ErrorCode.forbidden and refused.fatal
    async with aiohttp.ClientSession() as http:
        auth_b = {"Authorization": f"Bearer {token_b}"}
        for path in ("/v1/encounters/enc-a", "/v1/encounters/enc-a/transcript", "/v1/review/encounters/enc-a/draft"):
            async with http.get(live_server.http + path, headers=auth_b) as r:
                assert r.status == 404, path  # answered as if it did not exist: ids do not leak
                assert (await r.json())["error"] == "no encounter enc-a"
        async with http.get(live_server.http + "/v1/encounters", headers=auth_b) as r:
            assert await r.json() == []
        async with http.get(live_server.http + "/v1/review/encounters", headers=auth_b) as r:
            assert (await r.json())["encounters"] == []
        async with http.get(live_server.http + "/v1/encounters", headers={"Authorization": f"Bearer {token_a}"}) as r:
            assert [e["id"] for e in await r.json()] == ["enc-a"]
        async with http.get(live_server.http + "/v1/encounters",
                            headers={"Authorization": "Bearer scr_0123456789_" + "x" * 43}) as r:
            assert r.status == 403
        async with http.get(live_server.http + "/v1/encounters") as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"

    audit = AuditLog(raw)
    entries = await live_server.server.store.call(lambda: list(audit.entries()))
    kinds = [(e.actor, e.action, e.object_id, e.outcome) for e in entries]
    assert ("dr-a", "create", "enc-a", "success") in kinds
    assert ("dr-a", "consent_recorded", "enc-a", "success") in kinds
    assert ("dr-b", "access_denied", "enc-a", "denied") in kinds
    assert ("dr-b", "access_denied", "enc-x", "denied") in kinds
    assert any(a == "login_failed" for _, a, _, _ in kinds)
    assert (await live_server.server.store.call(audit.verify)).ok


async def test_new_recording_needs_a_complete_recent_consent(live_server: RunningServer):
    incomplete = await first_event(live_server.url, TOKEN, start("enc-c1", "dr-a", Consent(given=True)))
    assert incomplete.type == "error" and incomplete.code == ErrorCode.consent_required and incomplete.fatal
    assert "consent_incomplete" in incomplete.message
    old = Consent.recorded_now("dr-a").model_copy(update={"at": utcnow() - timedelta(days=3)})
    stale = await first_event(live_server.url, TOKEN, start("enc-c2", "dr-a", old))
    assert stale.code == ErrorCode.consent_required and "consent_stale" in stale.message
    assert await live_server.server.store.get_encounter("enc-c1") is None  # nothing was created


async def test_resume_is_not_refused_for_a_consent_recorded_earlier(live_server: RunningServer):
    msg = start("enc-r", "dr-a")
    async with websockets.connect(live_server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.send(encode_start(msg))
        assert decode_event(await ws.recv()).type == "ready"
        await ws.send(encode_frame(0, b"\x00\x00" * 1600))
    later = msg.model_copy(update={"consent": msg.consent.model_copy(update={"at": utcnow() - timedelta(days=2)})})
    event = await first_event(live_server.url, TOKEN, later)
    assert event.type == "ready" and event.resumed


async def test_consent_withdrawn_mid_visit_stops_recording_and_deletes_its_data(live_server: RunningServer):
    server = live_server.server
    async with websockets.connect(live_server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.send(encode_start(start("enc-w", "dr-a")))
        assert decode_event(await ws.recv()).type == "ready"
        for seq in range(20):
            await ws.send(encode_frame(seq, b"\x01\x00" * 1600))
        while True:  # wait until something is stored
            event = decode_event(await asyncio.wait_for(ws.recv(), 30))
            if event is not None and event.type == "ack" and event.seq >= 5:
                break
        await ws.send('{"type":"withdraw"}')
        while True:
            event = decode_event(await asyncio.wait_for(ws.recv(), 30))
            if event is not None and event.type == "withdrawn":
                break
        assert event.deleted.get("frames", 0) >= 6
    enc = await server.store.get_encounter("enc-w")
    assert enc.status.value == "withdrawn"
    assert len(await server.store.audio_from("enc-w", 0)) == 0 and await server.store.segments("enc-w") == []
    audit = AuditLog(server.store.store)
    actions = [e.action for e in await server.store.call(lambda: list(audit.entries())) if e.object_id == "enc-w"]
    assert "consent_withdrawn" in actions and "delete" in actions
    # a withdrawn encounter cannot be resumed
    refused = await first_event(live_server.url, TOKEN, start("enc-w", "dr-a"))
    assert refused.code == ErrorCode.encounter_closed


async def test_withdrawal_while_the_draft_is_written_leaves_no_note(live_server: RunningServer):
    """Consent withdrawn right after `done`, while the note may still be drafting: whichever
    comes first, no note of the encounter exists afterwards (the drafting is stopped, or the
    stored draft is deleted)."""
    from scribe.notes.repo import NoteRepo

    await StreamClient(live_server.url, start("enc-wd", "dr-a"), token=TOKEN).run(FileSource(JFK, speed=0).chunks())
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.post(f"{live_server.http}/v1/encounters/enc-wd/withdraw-consent") as r:
            assert r.status == 200
    await asyncio.sleep(1.0)  # time for a drafting task that was not stopped to store its note
    store = live_server.server.store
    assert (await store.get_encounter("enc-wd")).status.value == "withdrawn"
    assert await store.call(lambda: NoteRepo(store.store).latest("enc-wd")) is None


async def test_consent_withdrawal_over_http_for_a_finished_encounter(live_server: RunningServer):
    # wait for the stored draft (written after `done`), so the withdrawal has one to delete
    await StreamClient(live_server.url, start("enc-wh", "dr-a"), token=TOKEN,
                       wait_for_draft=True).run(FileSource(JFK, speed=0).chunks())
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.post(f"{live_server.http}/v1/encounters/enc-wh/withdraw-consent") as r:
            body = await r.json()
            assert r.status == 200 and body["status"] == "withdrawn" and body["deleted"]["segments"] >= 1
            assert body["deleted"]["note_versions"] >= 1  # the draft written after stop is gone too
        async with http.get(f"{live_server.http}/v1/encounters/enc-wh/transcript") as r:
            assert (await r.json())["segments"] == []
        async with http.post(f"{live_server.http}/v1/encounters/nope/withdraw-consent") as r:
            assert r.status == 404


async def test_rate_limit_answers_429_and_failed_logins_cost_more(settings, recognizer):
    from conftest import start_server

    settings.trust.rate_per_second, settings.trust.rate_burst = 0.5, 10.0
    running = await start_server(settings, recognizer)
    try:
        async with aiohttp.ClientSession() as http:
            bad = {"Authorization": "Bearer wrong"}
            statuses = [(await http.get(f"{running.http}/v1/encounters", headers=bad)).status for _ in range(4)]
            # 10 units of burst: each failed login costs 1 + 4, so the third is already refused
            assert statuses[:2] == [403, 403] and statuses[2:] == [429, 429]
            r = await http.get(f"{running.http}/v1/encounters", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            assert "too many requests" in (await r.json())["error"]
            assert (await http.get(f"{running.http}/healthz")).status == 200  # probes are never limited
    finally:
        await running.stop()


async def test_tls_serves_wss_with_the_configured_certificate(settings, recognizer, tmp_path):
    import datetime as dt
    import ssl

    from aiohttp import web
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from scribe.service import Engine, StreamServer

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    settings.server.tls_cert_file, settings.server.tls_key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    server = StreamServer(settings, engine=Engine(settings, recognizer=recognizer))
    runner = server.runner()
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.server.port, ssl_context=server.ssl_context()).start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        transcript = await StreamClient(f"wss://localhost:{settings.server.port}/v1/stream", start("enc-tls", "dr-a"),
                                        token=TOKEN, ssl=client_ctx).run(FileSource(JFK, speed=0).chunks())
        assert transcript.segments
        # a client that does not trust the certificate is refused by TLS itself
        with pytest.raises(ssl.SSLError):
            await websockets.connect(f"wss://localhost:{settings.server.port}/v1/stream",
                                     ssl=ssl.create_default_context())
    finally:
        await runner.cleanup()


async def test_every_read_and_change_through_the_api_is_audited(live_server: RunningServer):
    await StreamClient(live_server.url, start("enc-aud", "dr-a"), token=TOKEN, wait_for_draft=True).run(
        FileSource(JFK, speed=0).chunks())
    raw = live_server.server.store.store
    tokens = TokenStore(raw)
    token_a, _ = await live_server.server.store.call(tokens.create, "dr-a")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token_a}"}) as http:
        for path in ("/v1/encounters/enc-aud", "/v1/review/encounters/enc-aud/draft",
                     "/v1/review/encounters/enc-aud/transcript"):
            async with http.get(live_server.http + path) as r:
                assert r.status == 200, path
        async with http.post(live_server.http + "/v1/review/encounters/enc-aud/sign", json={}) as r:
            assert r.status in (400, 409)  # no confirmation / flags: refused, and audited as such
    audit = AuditLog(raw)
    entries = [e for e in await live_server.server.store.call(lambda: list(audit.entries()))
               if e.object_id == "enc-aud" and e.actor == "dr-a"]
    reads = [e.detail["resource"] for e in entries if e.action == "read"]
    assert reads == ["encounter", "draft", "transcript"]
    signs = [e for e in entries if e.action == "sign"]
    assert signs and signs[0].outcome in ("denied", "failed")
    assert (await live_server.server.store.call(audit.verify)).ok


async def test_the_service_applies_the_retention_policy(settings, recognizer):
    """Audio past its retention is purged by the running service (audited); the transcript stays."""
    from conftest import start_server

    settings.trust.audio_retention_days = 1e-9      # anything older than ~0.1 ms
    settings.trust.purge_interval_hours = 2 / 3600  # every 2 s
    running = await start_server(settings, recognizer)
    try:
        transcript = await StreamClient(running.url, start("enc-ret", "dr-a"), token=TOKEN).run(
            FileSource(JFK, speed=0).chunks())
        store = running.server.store
        for _ in range(100):
            if not len(await store.audio_from("enc-ret", 0)):
                break
            await asyncio.sleep(0.1)
        assert len(await store.audio_from("enc-ret", 0)) == 0
        assert [s.text for s in await store.transcript("enc-ret")] == [s.text for s in transcript.segments]
        audit = AuditLog(store.store)
        purges = [e for e in await store.call(lambda: list(audit.entries())) if e.action == "purge"]
        assert purges and purges[0].object_id == "enc-ret" and purges[0].object_type == "audio"
    finally:
        await running.stop()
