"""The adversarial probe of issue 12, as tests against the real service on loopback.

Three clinicians' tokens, the raw websocket protocol and the review API: one clinician must
never cut off, read, retry, subscribe to or overwrite another's visit, and every attempt is
audited. Each case here failed before its fix (see docs/reliability.md, "Security").
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
import pytest
import websockets

from scribe.models import Consent, EncounterStatus
from scribe.protocol import (
    CloseCode,
    ErrorCode,
    StartMessage,
    decode_event,
    encode_frame,
    encode_start,
)
from scribe.store import Store
from scribe.trust.audit import AuditLog
from scribe.trust.tokens import TokenStore

from conftest import RunningServer
from review_support import CLINICIAN, make_settings, review_server, sample_segments, seed_encounter, seed_standard

pytestmark = pytest.mark.timeout(180)

API = "/v1/review"


def start(eid: str, clinician: str) -> StartMessage:
    return StartMessage(encounter_id=eid, clinician_id=clinician, patient_ref="Patient/p1",
                        consent=Consent.recorded_now(clinician))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def next_event(ws, timeout: float = 30.0):
    while True:
        event = decode_event(await asyncio.wait_for(ws.recv(), timeout))
        if event is not None:
            return event


def audit_rows(store: Store) -> list[tuple[str, str, str, str, dict]]:
    return [(e.actor, e.action, e.object_id, e.outcome, e.detail) for e in AuditLog(store).entries()]


def audit_by_type(store: Store, object_type: str) -> list[tuple[str, str, str, str]]:
    return [(e.actor, e.action, e.object_id, e.outcome) for e in AuditLog(store).entries()
            if e.object_type == object_type]


# ---------------------------------------------------------------------- 1. the websocket


async def test_another_clinician_cannot_cut_off_a_live_recording(live_server: RunningServer):
    server = live_server.server
    tokens = TokenStore(server.store.store)
    token_a, _ = await server.store.call(tokens.create, "dr-a")
    token_b, _ = await server.store.call(tokens.create, "dr-b")
    async with websockets.connect(live_server.url, additional_headers=auth(token_a)) as owner:
        await owner.send(encode_start(start("enc-live", "dr-a")))
        assert (await next_event(owner)).type == "ready"
        # dr-b, with dr-b's own token, names dr-a's live encounter
        async with websockets.connect(live_server.url, additional_headers=auth(token_b)) as intruder:
            await intruder.send(encode_start(start("enc-live", "dr-b")))
            refused = await next_event(intruder)
            assert refused.type == "error" and refused.code == ErrorCode.forbidden and refused.fatal
            assert "dr-a" not in refused.message
        # the owner's recording goes on: the socket is open and frames are acknowledged
        await owner.send(encode_frame(0, b"\x00\x00" * 1600))
        ack = await next_event(owner)
        assert ack.type == "ack" and ack.seq == 0
        assert server.sessions["enc-live"].conn.principal.clinician_id == "dr-a"
    rows = await server.store.call(audit_rows, server.store.store)
    assert ("dr-b", "access_denied", "enc-live", "denied", {"attempted": "stream"}) in rows


async def test_a_refused_resume_is_audited_as_refused(live_server: RunningServer):
    server = live_server.server
    async with websockets.connect(live_server.url, additional_headers=auth("test-token-0123456789")) as ws:
        await ws.send(encode_start(start("enc-closed", "dr-a")))
        assert (await next_event(ws)).type == "ready"
        await ws.send('{"type":"stop"}')
        while (await next_event(ws)).type != "done":
            pass
    await server.store.call(server.store.store.set_status, "enc-closed", EncounterStatus.signed)
    async with websockets.connect(live_server.url, additional_headers=auth("test-token-0123456789")) as ws:
        await ws.send(encode_start(start("enc-closed", "dr-a")))
        refused = await next_event(ws)
        assert refused.code == ErrorCode.encounter_closed
    rows = await server.store.call(audit_rows, server.store.store)
    resumes = [r for r in rows if r[2] == "enc-closed" and r[4].get("event") == "recording_resumed"]
    assert resumes and all(r[3] == "denied" for r in resumes), resumes


async def test_a_resume_refused_while_the_encounter_is_finishing_is_audited(live_server: RunningServer):
    """Under load the first CI run found it: a clinician coming back while the server is still
    finishing the encounter after 'stop' was refused without an audit row."""
    from types import SimpleNamespace

    server = live_server.server
    server.sessions["enc-finishing"] = SimpleNamespace(finishing=True)  # the stop being finalised
    try:
        async with websockets.connect(live_server.url, additional_headers=auth("test-token-0123456789")) as ws:
            await ws.send(encode_start(start("enc-finishing", "dr-a")))
            assert (await next_event(ws)).code == ErrorCode.encounter_closed
    finally:
        del server.sessions["enc-finishing"]
    rows = await server.store.call(audit_rows, server.store.store)
    assert [r[1:] for r in rows if r[2] == "enc-finishing"] == [
        ("update", "enc-finishing", "denied", {"event": "recording_resumed", "status": "finishing"})]


async def test_a_token_sent_as_a_subprotocol_is_refused_and_never_logged(live_server: RunningServer, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "scr_leakcheck_" + "z" * 40
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(live_server.url, subprotocols=[secret]):
            pass
    assert info.value.response.status_code == 400
    assert b"Authorization" in info.value.response.body
    server_side = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets")]  # not the client
    assert server_side and not any(secret in m for m in server_side)


async def test_an_authenticated_socket_that_never_starts_is_closed(live_server: RunningServer):
    live_server.server.settings.server.start_timeout_s = 1.0
    async with websockets.connect(live_server.url, additional_headers=auth("test-token-0123456789")) as ws:
        event = await next_event(ws, timeout=15)
        assert event.type == "error" and event.code == ErrorCode.not_started and event.fatal
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 15)
        assert ws.close_code == CloseCode.protocol_error


async def test_out_of_range_numbers_are_a_clear_refusal(live_server: RunningServer):
    raw = json.loads(encode_start(start("enc-big", "dr-a")))
    raw["since_segment"] = 10 ** 30
    async with websockets.connect(live_server.url, additional_headers=auth("test-token-0123456789")) as ws:
        await ws.send(json.dumps(raw))
        event = await next_event(ws)
        assert event.type == "error" and event.code == ErrorCode.invalid_message
    assert await live_server.server.store.get_encounter("enc-big") is None


@pytest.mark.parametrize("eid", [".", "..", "-x", ".hidden", "a/b", "x" * 129, "visit 1"])
def test_encounter_ids_are_validated_at_the_protocol_boundary(eid: str):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        start(eid, "dr-a")


def test_documented_encounter_ids_are_accepted():
    for eid in ("enc-1", "visit:42", "visit_42", "2026.12.04-A", "a" * 128):
        assert start(eid, "dr-a").encounter_id == eid


# ---------------------------------------------------------------------- HTTP: review API and events


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The review service with dr-lee's seeded encounters and tokens for dr-lee and dr-b."""
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = make_settings(tmp_path, out_dir=tmp_path / "ehr-out")
    ids = seed_standard(settings)
    store = Store(settings.database_path)
    try:
        tokens = TokenStore(store)
        lee, _ = tokens.create(CLINICIAN)
        other, _ = tokens.create("dr-b")
    finally:
        store.close()
    async with review_server(settings) as running, aiohttp.ClientSession(base_url=running.http) as http:
        yield http, running, {"lee": lee, "b": other}, tmp_path


async def call(http, method: str, path: str, token: str, **kw) -> tuple[int, object]:
    async with http.request(method, path, headers=auth(token), **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def test_another_clinicians_encounter_is_not_found_and_the_attempt_audited(env):
    http, running, tok, _ = env
    for method, path in [("GET", "/v1/encounters/enc-ready"), ("GET", "/v1/encounters/enc-ready/transcript"),
                         ("GET", f"{API}/encounters/enc-ready/draft"), ("GET", f"{API}/encounters/enc-ready"),
                         ("POST", f"{API}/encounters/enc-ready/sign"), ("GET", f"{API}/encounters/enc-ready/audit")]:
        status, body = await call(http, method, path, tok["b"])
        assert status == 404, (method, path, status, body)
        assert body == {"error": "no encounter enc-ready"}  # the same words as for an id that does not exist
        missing_status, missing = await call(http, method, path.replace("enc-ready", "enc-nope"), tok["b"])
        assert missing_status == 404
    rows = await running.server.store.call(audit_rows, running.server.store.store)
    assert ("dr-b", "access_denied", "enc-ready", "denied", {"method": "POST"}) in rows


async def test_list_reads_are_audited(env):
    http, running, tok, _ = env
    for path in ("/v1/encounters", f"{API}/encounters"):
        status, _ = await call(http, "GET", path, tok["b"])
        assert status == 200
    rows = await running.server.store.call(audit_by_type, running.server.store.store, "encounter_list")
    assert {r[2] for r in rows if r[:2] == ("dr-b", "read")} == {"encounters", "review_encounters"}


async def _events(http, token: str, path: str = f"{API}/events"):
    resp = await http.get(path, headers=auth(token))
    return resp


async def _read_events(resp, until: float) -> list[dict]:
    got = []
    loop = asyncio.get_running_loop()
    end = loop.time() + until
    while loop.time() < end:
        try:
            line = await asyncio.wait_for(resp.content.readline(), max(0.05, end - loop.time()))
        except TimeoutError:
            break
        if line.startswith(b"data: "):
            got.append(json.loads(line[6:]))
    return got


async def test_the_event_stream_is_scoped_to_the_caller_and_subscriptions_audited(env):
    http, running, tok, _ = env
    mine = await _events(http, tok["lee"])
    theirs = await _events(http, tok["b"])
    site = await _events(http, "review-test-token-0123456789")
    try:
        assert mine.status == theirs.status == site.status == 200
        await asyncio.sleep(1.2)  # the poller takes its first snapshot
        # dr-lee's encounter changes (a new draft version), and a new encounter of dr-b's appears
        status, d = await call(http, "GET", f"{API}/encounters/enc-clean/draft", tok["lee"])
        status, _ = await call(http, "PUT", f"{API}/encounters/enc-clean/draft", tok["lee"],
                               json={"base_version": d["version"], "note": d["note"]})
        assert status == 200

        def seed_b() -> None:
            store = running.server.store.store
            store.open_encounter("enc-b1", clinician_id="dr-b", patient_ref="Patient/b", language="en",
                                 sample_rate=16_000, consent=Consent(given=True, method="verbal", recorded_by="dr-b"))

        await running.server.store.call(seed_b)
        lee_events, b_events, site_events = await asyncio.gather(
            _read_events(mine, 3.0), _read_events(theirs, 3.0), _read_events(site, 3.0))
    finally:
        for r in (mine, theirs, site):
            r.close()
    ids = lambda evs: {e["encounter_id"] for e in evs if e["type"] != "hello"}  # noqa: E731
    assert "enc-clean" in ids(lee_events) and "enc-b1" not in ids(lee_events)
    assert ids(b_events) == {"enc-b1"}
    assert {"enc-clean", "enc-b1"} <= ids(site_events)
    # asking for another clinician's encounter's events is refused like any of its routes
    status, body = await call(http, "GET", f"{API}/events?encounter=enc-ready", tok["b"])
    assert status == 404
    subs = await running.server.store.call(audit_by_type, running.server.store.store, "event_stream")
    assert {(CLINICIAN, "read", "all", "success"), ("dr-b", "read", "all", "success"),
            ("site", "read", "all", "success")} <= set(subs)
    rows = await running.server.store.call(audit_rows, running.server.store.store)
    assert ("dr-b", "access_denied", "enc-ready", "denied", {"method": "GET"}) in rows


async def test_delivery_retry_is_the_owners_only(env):
    http, running, tok, tmp = env
    (tmp / "ehr-out").write_text("not a directory")  # every delivery to it fails
    status, d = await call(http, "GET", f"{API}/encounters/enc-clean/draft", tok["lee"])
    status, signed = await call(http, "POST", f"{API}/encounters/enc-clean/sign", tok["lee"],
                                json={"version": d["version"], "confirm": True})
    assert status == 200, signed
    did = signed["deliveries"][0]["id"]
    from scribe.fhir.outbox import Outbox

    outbox = Outbox(running.server.store.store)

    async def delivery():
        return await running.server.store.call(outbox.delivery, did)

    async def retries() -> int:
        ledger = await running.server.store.call(outbox.ledger, did)
        return sum(1 for e in ledger if e.event == "retry_requested")

    for _ in range(300):
        if ((await delivery()).attempts or 0) >= 1:
            break
        await asyncio.sleep(0.1)
    assert (await delivery()).attempts >= 1
    status, body = await call(http, "POST", f"{API}/deliveries/{did}/retry", tok["b"])
    assert status == 404 and body == {"error": f"no delivery {did}"}
    assert await retries() == 0  # the attempt budget was not reset
    status, body = await call(http, "POST", f"{API}/deliveries/{did}/retry", tok["lee"])
    assert status in (200, 409), body
    if status == 200:
        assert await retries() == 1
    rows = await running.server.store.call(audit_rows, running.server.store.store)
    assert ("dr-b", "access_denied", "enc-clean", "denied", {"method": "POST"}) in rows
    assert any(r[0] == CLINICIAN and r[1] == "deliver" and r[2] == "enc-clean" and r[4].get("resource") == "retry"
               for r in rows)


@pytest.mark.parametrize("query", ["since=1e22", f"since={10 ** 30}", "since=-5", "limit=99999999999999999999999"])
async def test_out_of_range_query_numbers_are_400_not_500(env, query: str):
    http, _, tok, _ = env
    path = f"{API}/encounters/enc-ready/transcript?{query}" if "since" in query else f"{API}/encounters?{query}"
    status, body = await call(http, "GET", path, tok["lee"])
    assert status == 400, body
    assert "whole number" in body["error"]


async def test_half_open_http_connections_are_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    settings = make_settings(tmp_path)
    settings.server.idle_timeout_s = 1.0
    async with review_server(settings) as running:
        for payload in (b"", b"GET /v1/encounters HTTP/1.1\r\nHost: x\r\n"):  # silent; never finished
            reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
            try:
                writer.write(payload)
                await writer.drain()
                assert await asyncio.wait_for(reader.read(), 20) == b""  # closed by the server
            finally:
                writer.close()


# ---------------------------------------------------------------------- 2. the FHIR directory target


async def test_encounter_files_cannot_collide_or_escape(env):
    http, running, tok, tmp = env
    out = tmp / "ehr-out"
    segs = sample_segments()
    from scribe.notes import draft

    def seed() -> None:
        store = running.server.store.store
        for eid in ("visit:42", "visit_42", "."):  # ids written before the protocol validated them
            seed_encounter(store, eid, status=EncounterStatus.draft_ready, note=draft(segs, encounter_id=eid))

    await running.server.store.call(seed)
    for eid in ("visit_42", "visit:42"):
        status, d = await call(http, "GET", f"{API}/encounters/{eid}/draft", tok["lee"])
        status, signed = await call(http, "POST", f"{API}/encounters/{eid}/sign", tok["lee"],
                                    json={"version": d["version"], "confirm": True})
        assert status == 200, signed
    for eid in ("visit_42", "visit:42"):
        for _ in range(200):
            status, s = await call(http, "GET", f"{API}/encounters/{eid}", tok["lee"])
            if s["state"] == "delivered":
                break
            await asyncio.sleep(0.1)
        assert s["state"] == "delivered", s
    from scribe.fhir.document import note_identifier

    files = sorted(out.rglob("*.DocumentReference.json"))
    assert len(files) == 2 and len({f.parent for f in files}) == 2
    found = {json.loads(f.read_text())["identifier"][0]["value"] for f in files}
    assert found == {note_identifier(eid, 1)["value"] for eid in ("visit:42", "visit_42")}
    assert all(f.resolve().is_relative_to(out.resolve()) for f in files)
    # an id that is only dots is not a route, and nothing is ever written outside the target
    for path in (f"{API}/encounters/%2E%2E/sign", f"{API}/encounters/%2E/sign"):
        status, body = await call(http, "POST", path, tok["lee"], json={"version": 1, "confirm": True})
        assert status in (404, 405), (path, body)  # aiohttp folds the dots away: no route, nothing signed
    assert not list(tmp.glob("*.DocumentReference.json"))
    assert not list((tmp / "data").glob("*.DocumentReference.json"))


def test_directory_names_are_injective_and_contained(tmp_path: Path):
    from scribe.fhir.targets import DirectoryTarget

    target = DirectoryTarget(tmp_path / "fhir")
    ids = ["visit:42", "visit_42", "visit%3A42", ".", "..", "...", "a" * 128, "a" * 127 + "b", "A", "a",
           "x/../../etc", "%2E%2E", "café"]
    paths = [target.path_for(eid, 1) for eid in ids]
    assert len({p.parent for p in paths}) == len(ids)
    for p in paths:
        assert p.resolve().parent.parent == (tmp_path / "fhir").resolve()
        assert len(p.parent.name) <= 200
    # case-insensitive filesystems: names differing only in case must not meet either
    assert len({p.parent.name.lower() for p in paths}) == len(ids)


def test_a_directory_owned_by_another_note_is_never_replaced(tmp_path: Path):
    from scribe.fhir.targets import DirectoryTarget, FolderOwned, claim_directory

    target = DirectoryTarget(tmp_path / "fhir")
    folder = target.path_for("enc-1", 1).parent
    claim_directory(folder, "enc-1")
    claim_directory(folder, "enc-1")  # idempotent for its owner
    with pytest.raises(FolderOwned):
        claim_directory(folder, "enc-2")


# ---------------------------------------------------------------------- the second probe: every route


async def test_no_http_route_reaches_another_clinicians_encounter(env):
    """Every route the application has (enumerated from its router, so a route added later is
    probed too), called by dr-b on dr-lee's encounter and delivery with every method it
    accepts: each answers 404 with the same words as for an id that does not exist, and dr-lee's
    data is unchanged afterwards."""
    http, running, tok, tmp = env
    status, d = await call(http, "GET", f"{API}/encounters/enc-clean/draft", tok["lee"])
    status, signed = await call(http, "POST", f"{API}/encounters/enc-clean/sign", tok["lee"],
                                json={"version": d["version"], "confirm": True})
    assert status == 200, signed
    did = signed["deliveries"][0]["id"]
    before = {eid: (await call(http, "GET", f"{API}/encounters/{eid}", tok["lee"]))[1]
              for eid in ("enc-ready", "enc-clean")}
    routes = [(r.method, r.resource.canonical) for r in running.runner.app.router.routes()
              if r.method != "HEAD" and r.resource is not None]
    probed = 0
    for method, canonical in routes:
        if "{id}" not in canonical:
            continue
        target = did if "/deliveries/" in canonical else "enc-ready"
        path = canonical.replace("{id}", target)
        body = {"version": 1, "base_version": 1, "confirm": True, "reason": "x", "note": {}}
        status, answer = await call(http, method, path, tok["b"], json=body)
        what = "delivery" if "/deliveries/" in canonical else "encounter"
        assert status == 404 and answer == {"error": f"no {what} {target}"}, (method, path, status, answer)
        probed += 1
    assert probed >= 14  # the routes that name an encounter or a delivery today
    after = {eid: (await call(http, "GET", f"{API}/encounters/{eid}", tok["lee"]))[1]
             for eid in ("enc-ready", "enc-clean")}
    for eid in before:  # nothing changed but the delivery's own progress
        for key in ("state", "draft_version", "open_flags", "segment_count", "status"):
            if key in before[eid] and not (eid == "enc-clean" and key == "state"):
                assert after[eid][key] == before[eid][key], (eid, key)
    assert (await running.server.store.get_encounter("enc-ready")).status is EncounterStatus.draft_ready
