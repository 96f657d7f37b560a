"""FHIR delivery end to end against the real local FHIR server (Medplum's engine, tests/fhir_server).

Sign → outbox → worker → aiohttp client → Medplum over loopback; assertions read what the
server actually stored. Faults (EHR down, lost answers, throttling, ignored conditional create,
expired tokens) are injected through the server's /admin hooks, not mocked.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scribe.fhir.client import BearerAuth, FhirClient
from scribe.fhir.document import note_identifier
from scribe.fhir.errors import FhirAuthError, FhirValidationError
from scribe.fhir.render import render_note
from scribe.fhir.smart import SmartBackendAuth
from scribe.fhir.targets import DocumentOptions
from scribe.models import DeliveryState

from fhir_support import T0, Clock, Env, FhirServer, free_port, make_note, run_fhir_server, server_docs

pytestmark = pytest.mark.slow


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture(scope="module")
def server() -> Iterator[FhirServer]:
    with run_fhir_server() as srv:
        yield srv


@pytest.fixture
def fhir(server: FhirServer) -> Iterator[FhirServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


@pytest.fixture
async def env(fhir: FhirServer, tmp_path: Path, clock: Clock):
    e = Env(tmp_path / "scribe.db", fhir.base_url, clock)
    yield e
    await e.close()


# --------------------------------------------------------------------------- happy path


async def test_valid_note_201_read_back_identical_and_findable(env: Env, fhir: FhirServer) -> None:
    note = make_note()
    signed = env.outbox.sign(note, "dr-lee")
    assert await env.worker.run_once() == 1
    [d] = env.outbox.deliveries()
    assert d.state == DeliveryState.delivered and d.resource_id and d.error is None
    posts = [r for r in fhir.requests() if r["method"] == "POST"]
    assert [p["status"] for p in posts] == [201]
    assert posts[0]["if_none_exist"].startswith("identifier=urn:scribe:note|")

    doc = (await env.client.read("DocumentReference", d.resource_id)).body
    data = base64.b64decode(doc["content"][0]["attachment"]["data"])
    assert data == render_note(signed.note).encode("utf-8")  # byte-identical text
    assert doc["content"][0]["attachment"]["contentType"] == "text/plain; charset=utf-8"
    assert doc["identifier"][0] == note_identifier("enc-1", 1)
    assert doc["docStatus"] == "final" and doc["status"] == "current"
    assert doc["subject"]["reference"] == "Patient/p1"
    assert doc["context"]["encounter"][0]["reference"] == "Encounter/e1"
    by_patient = await server_docs(env.client, "patient=Patient/p1")
    by_encounter = await server_docs(env.client, "encounter=Encounter/e1")
    by_type = await server_docs(env.client, "type=http://loinc.org|11506-3")
    assert [x["id"] for x in by_patient] == [x["id"] for x in by_encounter] == [x["id"] for x in by_type] == [d.resource_id]


async def test_markdown_attachment_format(fhir: FhirServer, tmp_path: Path, clock: Clock) -> None:
    e = Env(tmp_path / "db", fhir.base_url, clock, options=DocumentOptions(attachment_format="markdown"))
    try:
        signed = e.outbox.sign(make_note(), "dr-lee")
        await e.worker.run_once()
        doc = (await e.client.read("DocumentReference", e.outbox.deliveries()[0].resource_id)).body
        att = doc["content"][0]["attachment"]
        assert att["contentType"] == "text/markdown; charset=utf-8"
        assert base64.b64decode(att["data"]).decode() == render_note(signed.note, "markdown")
    finally:
        await e.close()


# --------------------------------------------------------------------------- invalid note


async def test_invalid_note_clear_error_parked_not_retried_nothing_lost(env: Env, fhir: FhirServer,
                                                                      clock: Clock) -> None:
    # A tab inside a code passes the local builder but not the server's validator.
    signed = env.outbox.sign(make_note(loinc="11506\t3"), "dr-lee")
    await env.worker.run_once()
    [d] = env.outbox.deliveries()
    assert d.state == DeliveryState.failed and d.attempts == 1
    assert "HTTP 400" in d.error and "DocumentReference.type.coding[0].code" in d.error
    assert "Invalid code format" in d.error
    clock.advance(24 * 3600)
    assert await env.worker.run_once() == 0  # parked: not retried by itself
    assert [r["method"] for r in fhir.requests()].count("POST") == 1
    assert env.outbox.signed("enc-1") == [signed]  # the signed note is still there, intact
    assert fhir.counts().get("DocumentReference", 0) == 0


async def test_validation_error_from_client_is_plain_words(fhir: FhirServer) -> None:
    async with FhirClient(fhir.base_url) as client:
        with pytest.raises(FhirValidationError) as exc:
            await client.create({"resourceType": "DocumentReference", "status": "bogus", "content": []})
    msg = str(exc.value)
    assert msg.startswith("the FHIR server rejected the request as invalid (HTTP 400) for the create DocumentReference")
    assert 'DocumentReference.status: Invalid code "bogus"' in msg and "Invalid empty array" in msg
    assert not exc.value.retryable


# --------------------------------------------------------------------------- exactly once


async def test_server_down_during_sign_then_delivered_exactly_once(tmp_path: Path, clock: Clock) -> None:
    port = free_port()
    e = Env(tmp_path / "db", f"http://127.0.0.1:{port}/fhir/R4", clock)
    try:
        e.outbox.sign(make_note(), "dr-lee")
        await e.worker.run_once()  # nothing listening
        [d] = e.outbox.deliveries()
        assert d.state == DeliveryState.queued and "unreachable" in d.error and d.attempts == 1
        with run_fhir_server(port=port) as srv:
            clock.advance(3600)
            await e.worker.run_once()
            [d] = e.outbox.deliveries()
            assert d.state == DeliveryState.delivered
            assert srv.counts()["DocumentReference"] == 1
            assert len(await server_docs(e.client, "identifier=" + "urn:scribe:note|" + note_identifier("enc-1", 1)["value"])) == 1
    finally:
        await e.close()


async def test_5xx_and_429_retried_by_the_worker_honouring_retry_after(env: Env, fhir: FhirServer,
                                                                       clock: Clock) -> None:
    """Retries live in one layer: each failed try is one request, and the outbox worker
    reschedules the delivery (persisted, so a restart keeps the wait), never sooner than the
    server's Retry-After. The second try searches by identifier first, since the first POST
    may have landed."""
    fhir.fail_next(1, status=429, retry_after=3, method="POST")
    fhir.fail_next(1, status=502, method="POST")
    env.outbox.sign(make_note(), "dr-lee")
    await env.worker.run_once()
    [d] = env.outbox.deliveries()
    assert d.state == DeliveryState.queued and d.attempts == 1
    assert d.next_attempt_at - clock.now >= timedelta(seconds=3)  # Retry-After: 3 honoured
    assert [r["status"] for r in fhir.requests() if r["method"] == "POST"] == [429]  # one request per try
    clock.advance(4)
    await env.worker.run_once()
    [d] = env.outbox.deliveries()
    assert d.state == DeliveryState.queued and d.attempts == 2
    clock.advance(3600)
    await env.worker.run_once()
    [d] = env.outbox.deliveries()
    assert d.state == DeliveryState.delivered and fhir.counts()["DocumentReference"] == 1
    statuses = [r["status"] for r in fhir.requests() if r["method"] == "POST"]
    assert statuses == [429, 502, 201]
    events = [e.event for e in env.outbox.ledger(d.id)]
    assert events.count("post_failed") == 2 and "searched" in events


async def test_long_retry_after_is_persisted_not_slept(env: Env, fhir: FhirServer, clock: Clock) -> None:
    fhir.fail_next(1, status=503, retry_after=3600, method="POST")
    env.outbox.sign(make_note(), "dr-lee")
    await env.worker.run_once()
    [d] = env.outbox.deliveries()
    assert d.state == DeliveryState.queued and d.next_attempt_at - clock.now >= timedelta(seconds=3600)
    assert "is unavailable (HTTP 503)" in d.error
    clock.advance(3601)
    await env.worker.run_once()
    assert env.outbox.deliveries()[0].state == DeliveryState.delivered


async def test_lost_answer_with_ignored_conditional_create_still_one_document(env: Env, fhir: FhirServer,
                                                                            clock: Clock) -> None:
    fhir.configure(ignore_if_none_exist=True)  # like EHRs that ignore If-None-Exist
    fhir.fail_next(1, status=503, when="after", method="POST")  # created, but the answer is lost
    env.outbox.sign(make_note(), "dr-lee")
    await env.worker.run_once()
    assert env.outbox.deliveries()[0].state == DeliveryState.queued  # the worker tries again later
    clock.advance(3600)
    await env.worker.run_once()
    [d] = env.outbox.deliveries()
    assert d.state == DeliveryState.delivered
    assert fhir.counts()["DocumentReference"] == 1
    events = [e.event for e in env.outbox.ledger(d.id)]
    assert "searched" in events and events.count("post_started") == 1


async def test_double_sign_one_document(env: Env, fhir: FhirServer) -> None:
    a = env.outbox.sign(make_note(), "dr-lee")
    b = env.outbox.sign(make_note(), "dr-lee")
    assert a == b
    await env.worker.run_once()
    await env.worker.run_once()
    assert fhir.counts()["DocumentReference"] == 1


class SimulatedCrash(BaseException):
    """Stands in for the process dying (BaseException: nothing in the worker catches it)."""


@pytest.mark.parametrize("ignore_conditional_create", [True, False])
async def test_crash_after_post_before_ledger_write_still_one_document(
    fhir: FhirServer, tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, ignore_conditional_create: bool
) -> None:
    fhir.configure(ignore_if_none_exist=ignore_conditional_create)
    e = Env(tmp_path / "db", fhir.base_url, clock)
    e.outbox.sign(make_note(), "dr-lee")

    def crash(*a: Any, **k: Any) -> None:
        raise SimulatedCrash()

    monkeypatch.setattr(e.outbox, "mark_delivered", crash)
    with pytest.raises(SimulatedCrash):
        await e.worker.run_once()
    assert fhir.counts()["DocumentReference"] == 1  # the POST landed …
    [d] = e.outbox.deliveries()
    assert d.state == DeliveryState.in_flight  # … but the result was never recorded
    await e.client.aclose()
    e.store.close()

    # restart: a new process opens the same database after the old worker's lease ran out
    clock.advance(61)
    e2 = Env(tmp_path / "db", fhir.base_url, clock)
    try:
        assert await e2.worker.run_once() == 1
        [d] = e2.outbox.deliveries()
        assert d.state == DeliveryState.delivered
        assert fhir.counts()["DocumentReference"] == 1
        events = [x.event for x in e2.outbox.ledger(d.id)]
        assert events[:4] == ["queued", "claimed", "resolved", "post_started"]
        assert "reclaimed_after_lease" in events and "searched" in events
        assert events.count("post_started") == 1  # found by identifier, not posted again
    finally:
        await e2.close()


# --------------------------------------------------------------------------- amendments


async def test_amendment_chain_and_entered_in_error(env: Env, fhir: FhirServer) -> None:
    v1 = env.outbox.sign(make_note(), "dr-lee")
    await env.worker.run_once()
    v2 = env.outbox.amend(make_note(text="Patient reports a wet cough for three days."), "dr-lee")
    await env.worker.run_once()
    d1, d2 = env.outbox.deliveries()
    assert d1.state == d2.state == DeliveryState.delivered
    old = (await env.client.read("DocumentReference", d1.resource_id)).body
    new = (await env.client.read("DocumentReference", d2.resource_id)).body
    assert old["status"] == "superseded" and old["meta"]["versionId"] != "1" or old["status"] == "superseded"
    assert new["status"] == "current" and new["docStatus"] == "amended"
    assert new["relatesTo"] == [{"code": "replaces", "target": {"reference": f"DocumentReference/{d1.resource_id}"}}]
    assert new["identifier"][0] == note_identifier("enc-1", 2)
    puts = [r for r in fhir.requests() if r["method"] == "PUT"]
    assert len(puts) == 1 and puts[0]["if_match"]  # optimistic locking on the update

    env.outbox.retract(v2.id, "dr-lee", reason="wrong patient")
    await env.worker.run_once()
    d3 = env.outbox.deliveries()[-1]
    assert d3.action == "retract" and d3.state == DeliveryState.delivered and d3.resource_id == d2.resource_id
    assert (await env.client.read("DocumentReference", d2.resource_id)).body["status"] == "entered-in-error"
    current = await server_docs(env.client, "patient=Patient/p1&status=current")
    assert current == []
    assert fhir.counts()["DocumentReference"] == 2
    assert v1.version == 1 and v2.replaces == v1.id


# --------------------------------------------------------------------------- patient & encounter


async def test_resolves_patient_by_mrn_and_encounter_by_date(fhir: FhirServer, tmp_path: Path, clock: Clock) -> None:
    async with FhirClient(fhir.base_url) as c:
        pat = (await c.create({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "12345"}]})).body
        await c.create({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "99999"}]})
        day = clock.now.date().isoformat()
        enc = (await c.create({"resourceType": "Encounter", "status": "in-progress",
                               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                               "subject": {"reference": f"Patient/{pat['id']}"},
                               "period": {"start": f"{day}T00:00:00Z"}})).body
    opts = DocumentOptions(patient_identifier_system="urn:mrn")
    e = Env(tmp_path / "db", fhir.base_url, clock, options=opts, patient="mrn:12345", encounter=None)
    e.outbox.set_context("enc-1", period_start=clock.now)
    try:
        e.outbox.sign(make_note(), "dr-lee")
        await e.worker.run_once()
        [d] = e.outbox.deliveries()
        assert d.state == DeliveryState.delivered, d.error
        doc = (await e.client.read("DocumentReference", d.resource_id)).body
        assert doc["subject"]["reference"] == f"Patient/{pat['id']}"
        assert doc["context"]["encounter"][0]["reference"] == f"Encounter/{enc['id']}"
    finally:
        await e.close()


@pytest.mark.parametrize("case", ["no_patient", "two_patients", "no_encounter"])
async def test_unresolvable_patient_or_encounter_is_a_clear_parked_error(
    fhir: FhirServer, tmp_path: Path, clock: Clock, case: str
) -> None:
    async with FhirClient(fhir.base_url) as c:
        for _ in range({"no_patient": 0, "two_patients": 2, "no_encounter": 1}[case]):
            await c.create({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "12345"}]})
    e = Env(tmp_path / "db", fhir.base_url, clock, options=DocumentOptions(patient_identifier_system="urn:mrn"),
            patient="mrn:12345", encounter=None)
    try:
        e.outbox.sign(make_note(), "dr-lee")
        await e.worker.run_once()
        [d] = e.outbox.deliveries()
        assert d.state == DeliveryState.failed
        expected = {"no_patient": "no Patient in the EHR has the identifier",
                    "two_patients": "2 Patients in the EHR share the identifier",
                    "no_encounter": "no Encounter in the EHR matches the visit's date"}[case]
        assert expected in d.error
        assert "12345" not in d.error  # the MRN is PHI: not repeated in errors
        assert fhir.counts().get("DocumentReference", 0) == 0
    finally:
        await e.close()


# --------------------------------------------------------------------------- auth


@pytest.fixture(scope="module")
def smart_keys() -> dict[str, Any]:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    ec_key = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_jwk.update(kid="ec-1", alg="ES384")
    rsa_jwk.update(kid="rsa-1", alg="RS384")
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return {"ec": ec_key, "rsa": rsa_key, "rsa_pem": pem, "other": ec.generate_private_key(ec.SECP384R1()),
            "jwks": {"keys": [ec_jwk, rsa_jwk]}}


async def test_smart_token_cached_refreshed_before_expiry_and_on_401(
    fhir: FhirServer, tmp_path: Path, clock: Clock, smart_keys: dict[str, Any]
) -> None:
    fhir.configure(smart_client_id="scribe", smart_jwks=smart_keys["jwks"], token_ttl=300)
    now = [1_000_000.0]
    auth = SmartBackendAuth(client_id="scribe", key=smart_keys["ec"], alg="ES384", kid="ec-1",
                            base_url=fhir.base_url, clock=lambda: now[0])  # token URL discovered
    e = Env(tmp_path / "db", fhir.base_url, clock, auth=auth)
    try:
        for i in range(2):
            eid = f"enc-s{i}"
            e.outbox.set_context(eid, patient="Patient/p1", encounter="Encounter/e1", practitioner="dr", period_start=T0)
            e.outbox.sign(make_note(eid), "dr-lee")
        await e.worker.run_once()
        assert auth.tokens_fetched == 1  # cached across requests
        assert auth.token_url == fhir.token_url

        fhir.expire_tokens()  # the server expires it early: 401 → refresh once → retry
        e.outbox.set_context("enc-s2", patient="Patient/p1", encounter="Encounter/e1", practitioner="dr", period_start=T0)
        e.outbox.sign(make_note("enc-s2"), "dr-lee")
        fhir.clear_requests()
        await e.worker.run_once()
        assert auth.tokens_fetched == 2
        assert [r["status"] for r in fhir.requests() if r["path"] != "/auth/token"][:1] == [401]

        now[0] += 300  # past expiry by our clock: refreshed proactively, no 401
        e.outbox.set_context("enc-s3", patient="Patient/p1", encounter="Encounter/e1", practitioner="dr", period_start=T0)
        e.outbox.sign(make_note("enc-s3"), "dr-lee")
        fhir.clear_requests()
        await e.worker.run_once()
        assert auth.tokens_fetched == 3
        assert 401 not in [r["status"] for r in fhir.requests()]
        assert all(d.state == DeliveryState.delivered for d in e.outbox.deliveries())
        assert fhir.counts()["DocumentReference"] == 4
    finally:
        await e.close()


async def test_smart_rs384_from_settings_key_file(fhir: FhirServer, tmp_path: Path,
                                                  smart_keys: dict[str, Any]) -> None:
    from scribe.config import FhirSettings

    fhir.configure(smart_client_id="scribe", smart_jwks=smart_keys["jwks"])
    key = tmp_path / "key.pem"
    key.write_bytes(smart_keys["rsa_pem"])
    settings = FhirSettings(base_url=fhir.base_url, auth="smart", smart_client_id="scribe", smart_key_file=key,
                            smart_alg="RS384", smart_kid="rsa-1", smart_token_url=fhir.token_url)
    async with FhirClient.from_settings(settings) as client:
        assert (await client.search("DocumentReference", "")) == []


async def test_wrong_smart_credentials_clear_error_parked(fhir: FhirServer, tmp_path: Path, clock: Clock,
                                                          smart_keys: dict[str, Any]) -> None:
    fhir.configure(smart_client_id="scribe", smart_jwks=smart_keys["jwks"])
    auth = SmartBackendAuth(client_id="scribe", key=smart_keys["other"], alg="ES384", kid="ec-1",
                            token_url=fhir.token_url)
    e = Env(tmp_path / "db", fhir.base_url, clock, auth=auth)
    try:
        e.outbox.sign(make_note(), "dr-lee")
        await e.worker.run_once()
        [d] = e.outbox.deliveries()
        assert d.state == DeliveryState.failed and d.attempts == 1
        assert "(HTTP 401)" in d.error and "invalid_client" in d.error
        assert "signature does not verify" in d.error and "fhir.smart_client_id" in d.error
    finally:
        await e.close()


async def test_wrong_static_token_clear_error(fhir: FhirServer) -> None:
    fhir.configure(token="right-token")
    async with FhirClient(fhir.base_url, auth=BearerAuth("wrong-token")) as client:
        with pytest.raises(FhirAuthError) as exc:
            await client.search("DocumentReference", "")
    assert "refused the credentials (HTTP 401)" in str(exc.value) and "Check fhir.token" in str(exc.value)
    assert "wrong-token" not in str(exc.value)
    async with FhirClient(fhir.base_url, auth=BearerAuth("right-token")) as client:
        assert await client.search("DocumentReference", "") == []
