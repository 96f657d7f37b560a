"""The review HTTP API's handlers (aiohttp), mounted by the composition root (``service.app``).

    GET  /v1/review/encounters?state=draft_ready&q=text     list with state, counts, filter
    GET  /v1/review/encounters/{id}                         one summary
    GET  /v1/review/encounters/{id}/transcript?since=N      segments (speaker, times)
    GET  /v1/review/encounters/{id}/draft                   latest draft version
    POST /v1/review/encounters/{id}/draft                   write a draft now (202; progress as events)
    PUT  /v1/review/encounters/{id}/draft                   save an edited note {base_version, note}
    POST /v1/review/encounters/{id}/flags/resolve           {base_version, sentence_id, flag, resolution, ...}
    POST /v1/review/encounters/{id}/sign                    {version, confirm} → 409 while flags are open
    POST /v1/review/encounters/{id}/amend                   {reason} → a new draft from the signed note
    GET  /v1/review/encounters/{id}/deliveries              signatures and deliveries
    POST /v1/review/deliveries/{id}/retry
    GET  /v1/review/encounters/{id}/audit                   review events (who, when, before/after)
    GET  /v1/review/events?encounter=ID                     server-sent events (what changed)

Auth is the websocket's: ``Authorization: Bearer <token>`` (401 without, 403 with a wrong one);
the host's ``Gate`` has authenticated the caller and scoped every encounter and delivery route
before a handler here runs. Errors are JSON ``{"error": "<plain words>"}``. Who acts is the ``actor`` of the request body
(or the ``X-Scribe-Actor`` header); it is recorded with every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..models import Encounter, EncounterStatus, Note, Segment
from ..protocol import MAX_INDEX
from ..review.edits import EditError
from ..review.events import EventHub
from ..review.models import (
    AmendRequest,
    DraftProgress,
    DraftUpdate,
    FlagResolution,
    LiveEvent,
    ReviewState,
    SignRequest,
)
from ..review.service import ReviewService
from ..store import AsyncStore

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
PREFIX = "/v1/review"


NoteWriter = Callable[[Encounter, list[Segment], Callable[[int, int], None]], Awaitable[Note]]
"""Writes a whole stored transcript into a note, reporting ``(done, total)`` as it goes."""


@dataclass
class ReviewContext:
    """What the review API's handlers need, built by the composition root."""

    astore: AsyncStore
    service: ReviewService
    authorize: Callable[[web.Request], str | None]
    """Raises ``HTTPUnauthorized``; returns the caller's clinician id (None: a site token)."""
    write_note: NoteWriter
    """The service's one draft runner (the configured writer and the site's templates)."""
    wake_outbox: Callable[[], None] = lambda: None
    hub: EventHub = field(init=False)
    drafting: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hub = EventHub(self._snapshot)

    def listen_outbox(self, loop: asyncio.AbstractEventLoop) -> None:
        """Delivery state changes reach clients at once (the poller is the fallback)."""

        def changed(d: Any) -> None:
            ev = LiveEvent(type="delivery", encounter_id=d.encounter_id,
                           data={"id": d.id, "state": d.state.value, "attempts": d.attempts})
            loop.call_soon_threadsafe(self.hub.publish, ev)

        self.service.outbox.add_listener(changed)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.astore.call(fn, *args)

    async def _snapshot(self):
        def snap():
            store = self.service.store
            windows = dict(store.db.execute("SELECT encounter_id, windows FROM record_pass").fetchall())
            encs = {e.id: (e.status.value, e.segment_count, windows.get(e.id, 0)) for e in store.list_encounters()}
            dels = {d.id: (d.encounter_id, d.state.value, d.attempts, d.error)
                    for d in self.service.outbox.deliveries()}
            return encs, dels

        return await self.call(snap)

    async def close(self) -> None:
        """Server shutdown: end the event streams and cancel drafts in progress."""
        await self.hub.close()
        for task in list(self.drafting.values()):
            task.cancel()


# ---------------------------------------------------------------------- plumbing


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _json(model: BaseModel | list[BaseModel], status: int = 200) -> web.Response:
    if isinstance(model, list):
        body = "[" + ",".join(m.model_dump_json() for m in model) + "]"
    else:
        body = model.model_dump_json()
    return web.Response(text=body, status=status, content_type="application/json")


def _plain(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(x) for x in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


async def _body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    if not raw:
        raise EditError(f"the request needs a JSON body ({model.__name__})")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise EditError("the request body is not valid JSON (or is nested too deeply)") from None
    if not isinstance(data, dict):
        raise EditError(f"the request body must be a JSON object ({model.__name__})")
    return model.model_validate(data)


def _whole(request: web.Request, name: str, default: int, lo: int, hi: int, *, what: str = "") -> int:
    """A whole-number query parameter within ``lo…hi`` (out of range is a 400, never an
    overflow in the store)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    raw = raw.strip()
    value = int(raw) if raw.lstrip("-").isdigit() and len(raw) <= 20 else None
    if value is None or not lo <= value <= hi:
        extra = f" ({what})" if what else ""
        raise EditError(f"{name} must be a whole number from {lo} to {hi}{extra}")
    return value


def _actor(request: web.Request, principal: str | None, given: str | None) -> str:
    actor = principal or (given or "").strip() or request.headers.get("X-Scribe-Actor", "").strip()
    if not actor:
        raise EditError("say who is acting: set 'actor' in the body (or the X-Scribe-Actor header)")
    if len(actor) > 200:
        raise EditError("actor is too long (200 characters at most)")
    return actor


Handler = Callable[[web.Request, ReviewContext, str | None], Awaitable[web.StreamResponse]]


def _route(ctx: ReviewContext, fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            principal = ctx.authorize(request)
        except web.HTTPException as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return web.json_response({"error": exc.text or exc.reason}, status=exc.status, headers=headers)
        try:
            return await fn(request, ctx, principal)
        except EditError as exc:
            return _error(exc.status, str(exc))
        except ValidationError as exc:
            return _error(400, _plain(exc))

    return handle


# ---------------------------------------------------------------------- handlers


async def list_encounters(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    state = request.query.get("state") or None
    if state is not None and state not in ReviewState.__members__:
        raise EditError(f"unknown state {state!r}: use one of {', '.join(s.value for s in ReviewState)}")
    limit = _whole(request, "limit", 200, 1, 1000)
    result = await ctx.call(ctx.service.list, ReviewState(state) if state else None, request.query.get("q"),
                            limit, principal)
    return _json(result)


async def get_encounter(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    return _json(await ctx.call(ctx.service.summary, request.match_info["id"]))


async def get_transcript(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    since = _whole(request, "since", 0, 0, MAX_INDEX, what="a segment index")
    return _json(await ctx.call(ctx.service.transcript, request.match_info["id"], since))


async def get_draft(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    return _json(await ctx.call(ctx.service.draft, request.match_info["id"]))


async def _new_draft_version(request: web.Request, ctx: ReviewContext, principal: str | None,
                             model: type[M], change: Callable[..., Any]) -> web.Response:
    """A request that writes a new draft version (an edit, a resolved flag, an amendment):
    validate the body, name the actor, apply it, tell the live clients."""
    eid = request.match_info["id"]
    req = await _body(request, model)
    view = await ctx.call(change, eid, req, _actor(request, principal, getattr(req, "actor", None)))
    ctx.hub.publish(LiveEvent(type="draft", encounter_id=eid, data={"version": view.version}))
    return _json(view)


async def put_draft(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    return await _new_draft_version(request, ctx, principal, DraftUpdate, ctx.service.update_draft)


async def resolve_flag(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    return await _new_draft_version(request, ctx, principal, FlagResolution, ctx.service.resolve)


async def sign(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    eid = request.match_info["id"]
    req = await _body(request, SignRequest)
    actor = _actor(request, principal, req.actor)
    result = await ctx.call(ctx.service.sign, eid, req, actor)
    ctx.hub.publish(LiveEvent(type="encounter", encounter_id=eid, data={"status": EncounterStatus.signed.value}))
    ctx.wake_outbox()
    return _json(result)


async def amend(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    return await _new_draft_version(request, ctx, principal, AmendRequest, ctx.service.amend)


async def deliveries(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    return _json(await ctx.call(ctx.service.deliveries, request.match_info["id"]))


async def retry(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    did = request.match_info["id"]
    delivery = await ctx.call(ctx.service.retry, did)
    ctx.wake_outbox()
    return _json(delivery)


async def audit(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    return _json(await ctx.call(ctx.service.events, request.match_info["id"]))


async def start_draft(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.Response:
    """Write the draft now with the service's writer, reporting progress as ``draft_progress``
    events."""
    eid = request.match_info["id"]
    force = request.query.get("force", "") in ("1", "true", "yes")
    running = ctx.drafting.get(eid)
    if running is not None and not running.done():
        return _json(ctx.service.progress[eid], status=202)
    summary = await ctx.call(ctx.service.summary, eid)
    if summary.status == EncounterStatus.recording.value:
        raise EditError("the encounter is still recording; stop the recording before drafting", status=409)
    if summary.state in (ReviewState.signed, ReviewState.delivered, ReviewState.failed):
        raise EditError("this note is signed; start an amendment to change it", status=409)
    if summary.draft_version is not None and not force:
        raise EditError("a draft exists already; add ?force=1 to write a new one from the transcript", status=409)
    progress = DraftProgress(encounter_id=eid, done=0, total=summary.segment_count)
    ctx.service.progress[eid] = progress
    ctx.drafting[eid] = asyncio.create_task(_write_draft(ctx, eid), name=f"draft-{eid}")
    return _json(progress, status=202)


async def _write_draft(ctx: ReviewContext, eid: str) -> None:
    from ..notes import UnsupportedLanguage

    store = ctx.service.store
    progress = ctx.service.progress[eid]

    def report(done: int, total: int) -> None:
        nonlocal progress
        progress = progress.model_copy(update={"done": done, "total": total})
        ctx.service.progress[eid] = progress
        ctx.hub.publish(LiveEvent(type="draft_progress", encounter_id=eid, data=progress.model_dump()))

    try:
        enc = await ctx.call(store.get_encounter, eid)
        segments = await ctx.call(store.segments, eid)
        if enc.status is EncounterStatus.transcribed:
            await ctx.call(store.set_status, eid, EncounterStatus.drafting)
        note = await ctx.write_note(enc, segments, report)
        view = await ctx.call(ctx.service.save_generated, eid, note)
        progress = progress.model_copy(update={"finished": True, "done": len(segments)})
        ctx.hub.publish(LiveEvent(type="draft", encounter_id=eid, data={"version": view.version}))
    except UnsupportedLanguage as exc:
        progress = progress.model_copy(update={"finished": True, "error": str(exc)})
    except Exception:
        log.exception("draft failed", extra={"encounter": eid})
        progress = progress.model_copy(update={"finished": True, "error": "the draft could not be written "
                                                                          "(see the server log)"})
    finally:
        if progress.error:
            with contextlib.suppress(Exception):
                enc = await ctx.call(store.get_encounter, eid)
                if enc is not None and enc.status is EncounterStatus.drafting:
                    await ctx.call(store.set_status, eid, EncounterStatus.transcribed)
        ctx.service.progress[eid] = progress
        ctx.hub.publish(LiveEvent(type="draft_progress", encounter_id=eid, data=progress.model_dump()))
        ctx.drafting.pop(eid, None)


async def events(request: web.Request, ctx: ReviewContext, principal: str | None) -> web.StreamResponse:
    """Server-sent events, scoped to the caller: a per-clinician token hears only about its own
    encounters (ids, states and counts of others' visits are patient data too); a site token
    hears everything. The host's middleware has checked ``?encounter=`` and audited the
    subscription."""
    encounter = request.query.get("encounter") or None
    owners: dict[str, str | None] = {}

    async def visible(ev: LiveEvent) -> bool:
        if principal is None:
            return True
        if ev.encounter_id is None:
            return False
        if ev.encounter_id not in owners:
            enc = await ctx.call(ctx.service.store.get_encounter, ev.encounter_id)
            owners[ev.encounter_id] = enc.clinician_id if enc is not None else None
        return owners[ev.encounter_id] == principal

    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)

    async def send(ev: LiveEvent) -> None:
        await resp.write(f"event: {ev.type}\ndata: {ev.model_dump_json()}\n\n".encode())

    async with ctx.hub.subscribe() as q:
        await send(LiveEvent(type="hello", encounter_id=encounter))
        while True:
            try:
                ev = await asyncio.wait_for(q.get(), timeout=15.0)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            except asyncio.CancelledError:
                break
            if ev is None:
                break
            if encounter and ev.encounter_id not in (None, encounter):
                continue
            if not await visible(ev):
                continue
            try:
                await send(ev)
            except (ConnectionError, RuntimeError):
                break
    return resp


# ---------------------------------------------------------------------- routes


def add_routes(app: web.Application, context: Callable[[], ReviewContext | None]) -> None:
    """The review routes on ``app``; ``context()`` is the host's context (None until it has
    started: the routes then answer 503)."""

    def bind(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            c = context()
            if c is None:
                return _error(503, "the review API is starting")
            return await _route(c, fn)(request)

        return handler

    r = app.router
    r.add_get(f"{PREFIX}/encounters", bind(list_encounters))
    r.add_get(f"{PREFIX}/encounters/{{id}}", bind(get_encounter))
    r.add_get(f"{PREFIX}/encounters/{{id}}/transcript", bind(get_transcript))
    r.add_get(f"{PREFIX}/encounters/{{id}}/draft", bind(get_draft))
    r.add_post(f"{PREFIX}/encounters/{{id}}/draft", bind(start_draft))
    r.add_put(f"{PREFIX}/encounters/{{id}}/draft", bind(put_draft))
    r.add_post(f"{PREFIX}/encounters/{{id}}/flags/resolve", bind(resolve_flag))
    r.add_post(f"{PREFIX}/encounters/{{id}}/sign", bind(sign))
    r.add_post(f"{PREFIX}/encounters/{{id}}/amend", bind(amend))
    r.add_get(f"{PREFIX}/encounters/{{id}}/deliveries", bind(deliveries))
    r.add_get(f"{PREFIX}/encounters/{{id}}/audit", bind(audit))
    r.add_post(f"{PREFIX}/deliveries/{{id}}/retry", bind(retry))
    r.add_get(f"{PREFIX}/events", bind(events))
