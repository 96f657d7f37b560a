"""Failure drill: the EHR is unreachable for the whole drill, then comes back.

Real store, real outbox and worker, real aiohttp FHIR client; the EHR is the real local FHIR
server (Medplum's engine, tests/fhir_server) started only at the end, on the port the outbox
has been failing to reach. Four signed notes (three encounters, one amendment) are signed
while nothing listens; the worker keeps trying for hours of (injected) clock time and is
restarted once in the middle, as a service would be. Throughout: every note waits in the
outbox, intact, its state and last error visible (``scribe outbox list``). When the EHR
returns each note is delivered exactly once: one DocumentReference per note identifier on the
server, and further passes of the worker post nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribe.cli import main as scribe_main
from scribe.fhir.document import note_identifier
from scribe.fhir.outbox import OutboxWorker
from scribe.models import Consent, DeliveryState

from fhir_support import T0, Clock, Env, free_port, make_note, run_fhir_server, server_docs

pytestmark = pytest.mark.slow

ENCOUNTERS = ["enc-1", "enc-2", "enc-3"]


def _open_more(env: Env) -> None:
    for eid in ENCOUNTERS[1:]:
        if env.store.get_encounter(eid) is None:
            env.store.open_encounter(eid, clinician_id="dr-lee", patient_ref="Patient/p1", language="en",
                                     sample_rate=16000, consent=Consent(given=True, method="verbal"))
            env.outbox.set_context(eid, encounter="Encounter/e1")


def _assert_waiting(env: Env, signed: dict, min_attempts: int) -> None:
    rows = env.outbox.deliveries()
    assert len(rows) == 4
    for d in rows:
        assert d.state == DeliveryState.queued, (d.id, d.state, d.error)
        # tried and failed, or (the amendment) held back until the note it replaces is delivered
        assert "unreachable" in (d.error or "") if d.attempts else d.error is None, (d.attempts, d.error)
    assert sum(1 for d in rows if d.attempts) == 3
    assert max(d.attempts for d in rows) >= min_attempts
    for eid in ENCOUNTERS:  # the signed notes themselves are intact
        assert env.outbox.signed(eid) == signed[eid]


async def test_ehr_unreachable_for_hours_then_each_note_delivered_exactly_once(tmp_path: Path, capsys,
                                                                                 monkeypatch) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir/R4"
    db = tmp_path / "data" / "scribe.db"
    db.parent.mkdir()
    clock = Clock(T0)
    env = Env(db, base, clock)
    _open_more(env)
    signed = {}
    v1 = env.outbox.sign(make_note("enc-1"), "dr-lee")
    env.outbox.sign(make_note("enc-2", text="Patient reports a sore throat since Monday."), "dr-lee")
    await env.worker.run_once()  # the first attempt, right after signing, fails
    env.outbox.sign(make_note("enc-3", text="Patient reports knee pain after a fall."), "dr-lee")
    env.outbox.amend(make_note("enc-1", text="Patient reports a dry cough for four days."), "dr-lee",
                     replaces=v1.id)
    signed = {eid: env.outbox.signed(eid) for eid in ENCOUNTERS}
    assert sum(len(v) for v in signed.values()) == 4

    passes = 0
    try:
        for _ in range(12):  # 2 h of outage, a pass every 10 min
            clock.advance(600)
            await env.worker.run_once()
            passes += 1
        _assert_waiting(env, signed, min_attempts=5)
    finally:
        await env.close()

    # the service restarts while the EHR is still down: the outbox is read back from disk
    env = Env(db, base, clock)
    try:
        _open_more(env)
        for _ in range(12):  # 2 h more
            clock.advance(600)
            await env.worker.run_once()
            passes += 1
        _assert_waiting(env, signed, min_attempts=10)

        # what an operator sees meanwhile
        monkeypatch.setenv("SCRIBE_DATA_DIR", str(db.parent))
        monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
        monkeypatch.chdir(tmp_path)
        capsys.readouterr()
        assert scribe_main(["outbox", "list", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert len(listed) == 4 and {d["state"] for d in listed} == {"queued"}
        assert sum(1 for d in listed if "unreachable" in (d["error"] or "")) == 3

        # the EHR comes back on the same address
        with run_fhir_server(port=port) as srv:
            for _ in range(3):  # the amendment waits for the note it replaces
                clock.advance(600)
                await env.worker.run_once()
            rows = env.outbox.deliveries()
            assert {d.state for d in rows} == {DeliveryState.delivered}, [(d.id, d.state, d.error) for d in rows]
            posts = sum(1 for r in srv.requests() if r["method"] == "POST")
            for eid, version in [("enc-1", 1), ("enc-1", 2), ("enc-2", 1), ("enc-3", 1)]:
                ident = note_identifier(eid, version)
                found = await server_docs(env.client, f"identifier={ident['system']}|{ident['value']}")
                assert len(found) == 1, (eid, version, len(found))
            assert srv.counts()["DocumentReference"] == 4
            statuses = {d["identifier"][0]["value"]: d["status"] for d in await server_docs(env.client)}
            assert sorted(statuses.values()) == ["current", "current", "current", "superseded"]

            # more passes, a restart, a day later: nothing is posted again
            for _ in range(3):
                clock.advance(3600)
                await env.worker.run_once()
            again = OutboxWorker(env.outbox, {"fhir": env.target}, lease_s=60)
            clock.advance(86400)
            assert await again.run_once() == 0
            assert sum(1 for r in srv.requests() if r["method"] == "POST") == posts
            assert srv.counts()["DocumentReference"] == 4
        print(f"outbox drill: {passes} worker passes over {passes * 10} min of outage, 1 restart, "
              f"max attempts {max(d.attempts for d in rows)}, {posts} POSTs once back")
    finally:
        await env.close()


async def test_note_signed_before_a_weekend_outage_is_delivered_when_the_ehr_returns(tmp_path: Path) -> None:
    port = free_port()
    clock = Clock(T0)
    env = Env(tmp_path / "db", f"http://127.0.0.1:{port}/fhir/R4", clock)
    try:
        env.outbox.sign(make_note(), "dr-lee")
        for _ in range(6 * 48):  # 48 h, a pass every 10 min
            clock.advance(600)
            await env.worker.run_once()
        with run_fhir_server(port=port) as srv:
            clock.advance(600)
            await env.worker.run_once()
            [d] = env.outbox.deliveries()
            assert d.state == DeliveryState.delivered, (d.state, d.attempts, d.error)
            assert srv.counts()["DocumentReference"] == 1
    finally:
        await env.close()
