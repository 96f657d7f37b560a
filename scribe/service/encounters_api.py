"""The encounter HTTP API's handlers: list, read, transcript, consent withdrawal, health.

Each handler runs after the ``Gate`` has authenticated the caller and scoped the encounter
(another clinician's is a 404 before it gets here); reads of patient data are audited.
"""

from __future__ import annotations

from aiohttp import web

from ..audio import SAMPLE_RATE
from ..models import Transcript
from ..trust.audit import Action as AuditAction
from ..trust.audit import Outcome
from ..trust.consent import ConsentError
from .auth import PRINCIPAL, audit_id, json_error
from .host import Host


class EncountersApi:
    def __init__(self, service: Host):
        self.service = service

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/v1/encounters", self.list_encounters)
        r.add_get("/v1/encounters/{id}", self.get_encounter)
        r.add_get("/v1/encounters/{id}/transcript", self.get_transcript)
        r.add_post("/v1/encounters/{id}/withdraw-consent", self.post_withdraw_consent)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.service.sessions)})

    async def list_encounters(self, request: web.Request) -> web.Response:
        principal = request[PRINCIPAL]
        encounters = await self.service.store.list_encounters(None if principal.is_admin else principal.clinician_id)
        return web.json_response([e.model_dump(mode="json") for e in encounters])

    async def post_withdraw_consent(self, request: web.Request) -> web.Response:
        eid = request.match_info["id"]
        if await self.service.store.get_encounter(eid) is None:
            return json_error(404, f"no encounter {eid}")
        try:
            deleted = await self.service.withdraw_consent(eid, request[PRINCIPAL].clinician_id)
        except ConsentError as exc:
            return json_error(409, str(exc))
        return web.json_response({"encounter_id": eid, "status": "withdrawn", "deleted": deleted})

    async def get_encounter(self, request: web.Request) -> web.Response:
        eid = request.match_info["id"]
        enc = await self.service.store.get_encounter(eid)
        if enc is None:
            raise web.HTTPNotFound(text=f"no encounter {eid}")
        return web.json_response(text=enc.model_dump_json())

    async def get_transcript(self, request: web.Request) -> web.Response:
        store = self.service.store
        eid = request.match_info["id"]
        enc = await store.get_encounter(eid)
        if enc is None:
            raise web.HTTPNotFound(text=f"no encounter {eid}")
        segments = await store.transcript(eid)  # the record pass where it has run, then the live pass
        await store.call(self.service.audit.record, request[PRINCIPAL].clinician_id, AuditAction.read, "transcript",
                         audit_id(eid), Outcome.success, {"segments": len(segments)})
        transcript = Transcript(
            encounter_id=eid, language=enc.language, segments=segments, duration=enc.samples_received / SAMPLE_RATE
        )
        return web.json_response(text=transcript.model_dump_json())
