"""The review HTTP API against the real service on a free port: auth, bad input, edits with an
audit trail, flag resolution, sign refusal and sign, delivery, amendment, drafting with progress."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from review_support import CLINICIAN, TOKEN, make_settings, review_server, seed_standard

pytestmark = pytest.mark.timeout(120)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
API = "/v1/review"


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = make_settings(tmp_path, out_dir=tmp_path / "ehr-out")
    ids = seed_standard(settings)
    async with review_server(settings) as running, aiohttp.ClientSession(base_url=running.http) as http:
        yield http, ids, tmp_path


async def call(http: aiohttp.ClientSession, method: str, path: str, *, headers=AUTH, **kw) -> tuple[int, object]:
    async with http.request(method, API + path, headers=headers, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


# ---------------------------------------------------------------------- auth


@pytest.mark.parametrize("method, path", [
    ("GET", "/encounters"),
    ("GET", "/encounters/enc-ready/draft"),
    ("PUT", "/encounters/enc-ready/draft"),
    ("POST", "/encounters/enc-ready/sign"),
    ("POST", "/encounters/enc-ready/flags/resolve"),
    ("GET", "/events"),
])
async def test_unauthorised_requests_are_refused(env, method: str, path: str) -> None:
    http, ids, _ = env
    status, body = await call(http, method, path, headers={})
    assert status == 401
    assert "missing bearer token" in body["error"]
    status, body = await call(http, method, path, headers={"Authorization": "Bearer wrong-token"})
    assert status == 403
    assert "invalid bearer token" in body["error"]
    # nothing changed
    status, draft = await call(http, "GET", "/encounters/enc-ready/draft")
    assert status == 200 and draft["version"] == 1


# ---------------------------------------------------------------------- reads


async def test_list_has_states_counts_and_filters(env) -> None:
    http, ids, _ = env
    status, body = await call(http, "GET", "/encounters")
    assert status == 200
    states = {e["id"]: e["state"] for e in body["encounters"]}
    assert states == {"enc-ready": "draft_ready", "enc-clean": "draft_ready", "enc-rec": "recording",
                      "enc-new": "drafting"}
    assert body["counts"] == {"recording": 1, "drafting": 1, "draft_ready": 2, "signed": 0, "delivered": 0,
                              "failed": 0}
    ready = next(e for e in body["encounters"] if e["id"] == "enc-ready")
    assert ready["open_flags"] == 7 and ready["draft_version"] == 1
    status, body = await call(http, "GET", "/encounters", params={"state": "draft_ready"})
    assert {e["id"] for e in body["encounters"]} == {"enc-ready", "enc-clean"}
    assert body["counts"]["recording"] == 1  # counts stay over everything
    status, body = await call(http, "GET", "/encounters", params={"q": "CLEAN"})
    assert [e["id"] for e in body["encounters"]] == ["enc-clean"]
    status, body = await call(http, "GET", "/encounters", params={"state": "lost"})
    assert status == 400 and "unknown state 'lost'" in body["error"]


async def test_transcript_with_speakers_and_since(env) -> None:
    http, ids, _ = env
    status, body = await call(http, "GET", "/encounters/enc-ready/transcript")
    assert status == 200 and len(body["segments"]) == 17
    assert body["segments"][0]["speaker"] == "clinician" and body["segments"][1]["speaker"] == "patient"
    status, body = await call(http, "GET", "/encounters/enc-ready/transcript", params={"since": "15"})
    assert [s["index"] for s in body["segments"]] == [15, 16]
    status, body = await call(http, "GET", "/encounters/enc-ready/transcript", params={"since": "x"})
    assert status == 400 and "since" in body["error"]
    status, body = await call(http, "GET", "/encounters/nope/transcript")
    assert status == 404 and "no encounter nope" in body["error"]


async def test_draft_missing_is_a_clear_404(env) -> None:
    http, ids, _ = env
    status, body = await call(http, "GET", "/encounters/enc-new/draft")
    assert status == 404 and "no draft yet" in body["error"]


# ---------------------------------------------------------------------- edits


async def _draft(http) -> dict:
    status, body = await call(http, "GET", "/encounters/enc-ready/draft")
    assert status == 200
    return body


def _set_text(note: dict, sid: str, text: str | None) -> dict:
    for sec in note["sections"]:
        sec["sentences"] = [dict(s, text=text) if s["id"] == sid else s for s in sec["sentences"]
                            if not (s["id"] == sid and text is None)]
    return note


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"", 400, "needs a JSON body"),
    (json.dumps({"note": {}}).encode(), 400, "base_version"),
    (json.dumps({"base_version": 1, "note": {"encounter_id": "enc-ready"}, "colour": "red"}).encode(), 400,
     "colour"),
])
async def test_bad_draft_payloads_are_refused_and_lose_nothing(env, body: bytes, status: int, message: str) -> None:
    http, ids, _ = env
    before = await _draft(http)
    got, answer = await call(http, "PUT", "/encounters/enc-ready/draft", data=body,
                             headers={**AUTH, "Content-Type": "application/json"})
    assert got == status
    assert message in answer["error"]
    assert await _draft(http) == before


async def test_edit_keeps_evidence_marks_authored_and_is_audited(env) -> None:
    http, ids, _ = env
    d = await _draft(http)
    first = d["note"]["sections"][0]["sentences"][0]
    new_text = first["text"].replace("three days", "3 days")
    note = _set_text(d["note"], first["id"], new_text)
    status, body = await call(http, "PUT", "/encounters/enc-ready/draft",
                              json={"base_version": d["version"], "note": note, "actor": CLINICIAN})
    assert status == 200, body
    assert body["version"] == 2
    s = body["note"]["sections"][0]["sentences"][0]
    assert s["text"] == new_text and s["clinician_authored"] and s["evidence"] == first["evidence"]
    # an edit on a stale version is refused and says why
    status, stale = await call(http, "PUT", "/encounters/enc-ready/draft",
                               json={"base_version": 1, "note": note, "actor": CLINICIAN})
    assert status == 409 and "changed since you opened it" in stale["error"]
    # who, when, before/after
    status, audit = await call(http, "GET", "/encounters/enc-ready/audit")
    edit = [e for e in audit if e["action"] == "edit"]
    assert len(edit) == 1
    assert edit[0]["actor"] == CLINICIAN and edit[0]["before"] == first["text"] and edit[0]["after"] == new_text
    assert edit[0]["draft_version"] == 2 and edit[0]["at"]


async def test_actor_is_required(env) -> None:
    http, ids, _ = env
    d = await _draft(http)
    status, body = await call(http, "PUT", "/encounters/enc-ready/draft",
                              json={"base_version": d["version"], "note": _set_text(d["note"], "objective.x0", "T 37")})
    assert status == 400 and "who is acting" in body["error"]


async def test_resolve_each_kind_then_sign_and_deliver(env) -> None:
    http, ids, tmp = env
    d = await _draft(http)
    # signing with open flags is refused in words
    status, body = await call(http, "POST", "/encounters/enc-ready/sign",
                              json={"version": d["version"], "confirm": True, "actor": CLINICIAN})
    assert status == 409
    assert "7 flags still open" in body["error"]
    status, body = await call(http, "POST", "/encounters/enc-ready/sign",
                              json={"version": d["version"], "confirm": False, "actor": CLINICIAN})
    assert status == 400 and "confirm" in body["error"]

    async def resolve(**kw) -> tuple[int, dict]:
        current = await _draft(http)
        return await call(http, "POST", "/encounters/enc-ready/flags/resolve",
                          json={"base_version": current["version"], "actor": CLINICIAN, **kw})

    status, body = await resolve(sentence_id="objective.x0", flag=0, resolution="accepted")
    assert status == 400 and "needs a reason" in body["error"]
    status, body = await resolve(sentence_id="objective.x0", flag=0, resolution="maybe", reason="x")
    assert status == 400 and "resolution" in body["error"]
    status, body = await resolve(sentence_id="objective.x0", flag=9, resolution="deleted")
    assert status == 404
    for i in range(2):
        status, body = await resolve(sentence_id="objective.x0", flag=i, resolution="accepted",
                                     reason="measured at triage, not said aloud")
        assert status == 200, body
    status, body = await resolve(sentence_id="assessment.x0", flag=0, resolution="edited",
                                 text="Reports lower abdominal pain on the left.")
    assert status == 200, body
    status, body = await resolve(sentence_id="plan.x0", flag=2, resolution="deleted")
    assert status == 200 and body["open_flags"] == 0
    assert "plan.x0" not in {s["id"] for sec in body["note"]["sections"] for s in sec["sentences"]}

    status, audit = await call(http, "GET", "/encounters/enc-ready/audit")
    resolutions = {(e["sentence_id"], e["resolution"]) for e in audit if e["action"] == "resolve"}
    assert ("objective.x0", "accepted") in resolutions
    assert ("assessment.x0", "edited") in resolutions
    assert ("plan.x0", "deleted") in resolutions
    assert all(e["actor"] == CLINICIAN for e in audit)

    status, signed = await call(http, "POST", "/encounters/enc-ready/sign",
                                json={"version": body["version"], "confirm": True, "actor": CLINICIAN})
    assert status == 200, signed
    assert signed["signed"]["signed_by"] == CLINICIAN and signed["signed"]["version"] == 1
    assert signed["deliveries"] and signed["deliveries"][0]["target"] == "directory"
    # signing again is idempotent (no second signature)
    status, again = await call(http, "POST", "/encounters/enc-ready/sign",
                               json={"version": body["version"], "confirm": True, "actor": CLINICIAN})
    assert status == 200 and again["signed"]["id"] == signed["signed"]["id"]
    # a signed note cannot be edited in place
    status, refused = await resolve(sentence_id="assessment.x0", flag=0, resolution="deleted")
    assert status == 409 and "amend" in refused["error"]

    state = await _wait_state(http, "enc-ready", "delivered")
    assert state["delivery"]["state"] == "delivered"
    assert list((tmp / "ehr-out").rglob("*.json"))
    # the signature and the delivery are in the hash-chained audit log
    from scribe.store import Store
    from scribe.trust.audit import AuditLog

    audit = AuditLog(Store(tmp / "data" / "scribe.db"))
    actions = {(e.action, e.outcome) for e in audit.entries() if e.object_id == "enc-ready"}
    assert ("sign", "success") in actions and ("deliver", "success") in actions
    assert audit.verify().ok


async def _wait_state(http, eid: str, state: str, tries: int = 200) -> dict:
    for _ in range(tries):
        status, body = await call(http, "GET", f"/encounters/{eid}")
        if body["state"] == state:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{eid} never reached {state}: {body}")


async def test_amend_a_signed_note(env) -> None:
    http, ids, _ = env
    status, d = await call(http, "GET", "/encounters/enc-clean/draft")
    status, body = await call(http, "POST", "/encounters/enc-clean/amend", json={"reason": "typo", "actor": CLINICIAN})
    assert status == 409 and "only a signed note" in body["error"]
    status, signed = await call(http, "POST", "/encounters/enc-clean/sign",
                                json={"version": d["version"], "confirm": True, "actor": CLINICIAN})
    assert status == 200, signed
    await _wait_state(http, "enc-clean", "delivered")
    status, body = await call(http, "POST", "/encounters/enc-clean/amend", json={"reason": " ", "actor": CLINICIAN})
    assert status == 400 and "reason" in body["error"]
    status, amended = await call(http, "POST", "/encounters/enc-clean/amend",
                                 json={"reason": "wrong duration", "actor": CLINICIAN})
    assert status == 200, amended
    assert amended["version"] == d["version"] + 1 and amended["state"] == "draft_ready"
    first = amended["note"]["sections"][0]["sentences"][0]
    note = _set_text(amended["note"], first["id"], first["text"].replace("three days", "four days"))
    status, edited = await call(http, "PUT", "/encounters/enc-clean/draft",
                                json={"base_version": amended["version"], "note": note, "actor": CLINICIAN})
    assert status == 200, edited
    status, v2 = await call(http, "POST", "/encounters/enc-clean/sign",
                            json={"version": edited["version"], "confirm": True, "actor": CLINICIAN})
    assert status == 200, v2
    assert v2["signed"]["version"] == 2 and v2["signed"]["replaces"] == signed["signed"]["id"]
    await _wait_state(http, "enc-clean", "delivered")
    status, view = await call(http, "GET", "/encounters/enc-clean/deliveries")
    assert [s["version"] for s in view["signed"]] == [1, 2]
    status, audit = await call(http, "GET", "/encounters/enc-clean/audit")
    assert [e["action"] for e in audit if e["action"] in ("sign", "amend")] == ["sign", "amend", "sign"]
    assert next(e for e in audit if e["action"] == "amend")["reason"] == "wrong duration"


async def test_write_a_draft_with_progress_events(env) -> None:
    http, ids, _ = env
    status, body = await call(http, "POST", "/encounters/enc-rec/draft")
    assert status == 409 and "still recording" in body["error"]
    seen: list[dict] = []

    async def follow() -> None:
        async with http.get(API + "/events", params={"encounter": "enc-new"}, headers=AUTH) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    ev = json.loads(line[5:])
                    seen.append(ev)
                    if ev["type"] == "draft":
                        return

    listener = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    status, progress = await call(http, "POST", "/encounters/enc-new/draft")
    assert status == 202 and progress["total"] == 17
    await asyncio.wait_for(listener, 60)
    kinds = [e["type"] for e in seen]
    assert kinds[0] == "hello" and "draft_progress" in kinds and kinds[-1] == "draft"
    steps = [e["data"]["done"] for e in seen if e["type"] == "draft_progress"]
    assert steps == sorted(steps) and steps[-1] == 17
    assert all(e["encounter_id"] in (None, "enc-new") for e in seen)
    status, d = await call(http, "GET", "/encounters/enc-new/draft")
    assert status == 200 and d["state"] == "draft_ready" and d["note"]["sections"]
    status, body = await call(http, "POST", "/encounters/enc-new/draft")
    assert status == 409 and "draft exists" in body["error"]


async def test_draft_on_request_uses_the_sites_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``POST …/draft`` and the live path are one draft runner: a site template in
    ``notes.templates_dir`` that replaces the built-in ``soap`` shapes the requested draft too
    (before the runner was shared, this route loaded the built-in template)."""
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    site = tmp_path / "site-templates"
    site.mkdir()
    builtin = (Path(__file__).resolve().parents[2] / "prompts" / "templates" / "progress.toml").read_text()
    (site / "soap.toml").write_text(builtin.replace('name = "progress"', 'name = "soap"')
                                    .replace('title = "Progress note"', 'title = "Clinic SOAP"'))
    settings = make_settings(tmp_path, out_dir=tmp_path / "ehr-out")
    settings.notes.templates_dir = site
    seed_standard(settings)
    async with review_server(settings) as running, aiohttp.ClientSession(base_url=running.http) as http:
        status, _ = await call(http, "POST", "/encounters/enc-new/draft")
        assert status == 202
        for _ in range(300):
            status, d = await call(http, "GET", "/encounters/enc-new/draft")
            if status == 200:
                break
            await asyncio.sleep(0.1)
    assert status == 200, d
    keys = [s["key"] for s in d["note"]["sections"]]
    assert "interval_history" in keys and "subjective" not in keys
