"""Who may call what, decided in one place: authentication, rate limits, per-encounter scoping
and the request audit for every ``/v1`` HTTP route (the websocket authenticates with the same
``Gate`` and answers with close codes), and TLS.

Scoping is here, not in handlers: a route that names an encounter — directly, through one of
its deliveries, or as the filter of the event stream — is checked before its handler runs, so
a handler added later cannot forget it (``tests/trust/test_security_probe.py`` probes every route).
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import ssl
from typing import Any

from aiohttp import web

from ..config import Settings
from ..protocol import ENCOUNTER_ID_PATTERN
from ..store import AsyncStore, DatabaseLocked, Store, StoreError, StoreFull, StoreIOError
from ..trust.audit import Action as AuditAction
from ..trust.audit import AuditLog, Outcome, as_code
from ..trust.ratelimit import RateLimiter
from ..trust.tokens import AuthError, Principal, Role, TokenStore, can_access

log = logging.getLogger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)
"""Where the auth middleware leaves the caller's ``Principal`` on each ``/v1`` request."""


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


_LIST_ROUTES = {"/v1/encounters": "encounters", "/v1/review/encounters": "review_encounters"}
"""List reads, audited as ``read`` of an ``encounter_list`` (who looked at which list)."""


def _delivery_encounter(store: Store, delivery_id: str) -> str | None:
    """The encounter a delivery belongs to (None: no such delivery). The outbox's table exists:
    the composition root builds the outbox before the service takes requests."""
    row = store.db.execute("SELECT encounter_id FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    return row[0] if row else None


def audit_id(value: str) -> str:
    """Encounter ids are client-chosen; the audit log accepts only plain codes."""
    return as_code(value, "invalid-id")


class Gate:
    """Authentication, rate limits, scoping and request audit over the service's store."""

    def __init__(self, settings: Settings, store: AsyncStore, audit: AuditLog, tokens: TokenStore):
        cfg = settings.server
        if not cfg.tokens and not cfg.allow_no_auth:
            raise ValueError(
                "no API token configured: set SCRIBE_SERVER__TOKENS='[\"<token>\"]' (or server.tokens in the "
                "TOML file); allow_no_auth=true disables authentication for local experiments only"
            )
        self.settings = settings
        self.store = store
        self.audit = audit
        self.tokens = tokens
        self._tokens = [t.get_secret_value().encode() for t in cfg.tokens]
        self.limiter = RateLimiter(settings.trust.rate_per_second, settings.trust.rate_burst)

    async def authenticate(self, request: web.Request) -> Principal:
        """Who is calling. Site tokens (``server.tokens``) act as admins; per-clinician tokens
        (``scribe tokens create``, stored hashed) see only their own encounters. Raises
        ``AuthError`` (code ``missing``, ``malformed``, ``unknown``, ``revoked``); failures are
        audited by the token store."""
        if self.settings.server.allow_no_auth and not self._tokens:
            return Principal(clinician_id="local", role=Role.admin)
        scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
        given = credentials.strip() if scheme.lower() == "bearer" else ""
        if given and any(hmac.compare_digest(given.encode(), t) for t in self._tokens):
            return Principal(clinician_id="site", role=Role.admin)
        source = request.remote or None
        return await self.store.call(self.tokens.authenticate, given or None, source=source)

    async def _principal_or_error(self, request: web.Request) -> Principal | web.Response:
        try:
            return await self.authenticate(request)
        except AuthError as exc:
            if exc.code == "missing":
                return json_error(401, "missing bearer token: send 'Authorization: Bearer <token>'",
                                  headers={"WWW-Authenticate": "Bearer"})
            return json_error(403, f"invalid bearer token ({exc.code})")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every ``/v1`` HTTP route: authenticate, then scope ``…/encounters/{id}…`` to the
        encounter's clinician (admins see all). Refusals are audited. The websocket does its
        own check so that it can answer with close codes."""
        if not request.path.startswith("/v1/"):
            return await handler(request)
        address = self.client_address(request)
        decision = self.limiter.allow(address)
        if not decision.allowed:
            return json_error(429, "too many requests; slow down",
                              headers={"Retry-After": str(max(1, math.ceil(decision.retry_after)))})
        if request.path == "/v1/stream":
            return await handler(request)
        principal = await self._principal_or_error(request)
        if isinstance(principal, web.Response):
            self.limiter.allow(address, cost=4.0)  # failed authentication: brute force gets slow fast
            return principal
        request[PRINCIPAL] = principal
        try:
            return await self._scoped(request, principal, handler)
        except StoreError as exc:
            # Named, never quoted: store errors say which record and what failed, not its content.
            log.error("store error serving %s: %s", request.method, type(exc).__name__)
            return json_error(503 if isinstance(exc, (DatabaseLocked, StoreFull, StoreIOError)) else 500,
                              f"stored data could not be served ({type(exc).__name__}): {exc}")

    async def _scoped(self, request: web.Request, principal: Principal, handler: Any) -> web.StreamResponse:
        """Every route that names an encounter — directly, through a delivery, or as the filter
        of the event stream — is checked here, in one place, before its handler runs. Another
        clinician's encounter is answered exactly like one that does not exist (404), so ids do
        not leak; the attempt is audited. List reads and event subscriptions are audited too."""
        info = request.match_info
        canonical = getattr(getattr(info.route, "resource", None), "canonical", "") or ""
        if "/encounters/{id}" in canonical:
            eid = info["id"]
            refused = await self._refuse_encounter(request, principal, eid, f"no encounter {eid}")
            if refused is not None:
                return refused
            response = await handler(request)
            await self._audit_request(request, principal, canonical, eid, response.status)
            return response
        if "/deliveries/{id}" in canonical:
            did = info["id"]
            owner = await self.store.call(_delivery_encounter, self.store.store, did)
            refused = await self._refuse_encounter(request, principal, owner, f"no delivery {did}")
            if refused is not None:
                return refused
            response = await handler(request)
            await self._audit_request(request, principal, canonical, owner or "", response.status)
            return response
        if canonical == "/v1/review/events":
            eid = request.query.get("encounter") or None
            if eid is not None:
                refused = await self._refuse_encounter(request, principal, eid, f"no encounter {eid}")
                if refused is not None:
                    return refused
            await self.store.call(self.audit.record, audit_id(principal.clinician_id), AuditAction.read,
                                  "event_stream", audit_id(eid) if eid else "all", Outcome.success, {})
            return await handler(request)
        response = await handler(request)
        if request.method == "GET" and canonical in _LIST_ROUTES:
            await self.store.call(self.audit.record, audit_id(principal.clinician_id), AuditAction.read,
                                  "encounter_list", _LIST_ROUTES[canonical],
                                  Outcome.success if response.status < 400 else Outcome.failed,
                                  {"status": response.status})
        return response

    async def _refuse_encounter(self, request: web.Request, principal: Principal, eid: str | None,
                                not_found: str) -> web.Response | None:
        """None when ``principal`` may act on encounter ``eid``; else the 404 to answer, audited
        when the encounter is someone else's. Every route that names an encounter needs it to
        exist (a recording is created over the websocket). An id outside the protocol's character set (``.``,
        ``..``: written before ids were validated, or made up) is not a route at all."""
        if eid is None or not re.fullmatch(ENCOUNTER_ID_PATTERN, eid):
            return json_error(404, not_found)
        enc = await self.store.get_encounter(eid)
        if enc is None:  # answered here too, so that no handler's own checks tell the two apart
            return json_error(404, not_found)
        if not can_access(principal, enc):
            return await self._deny(request, principal, eid, not_found)
        return None

    async def _deny(self, request: web.Request, principal: Principal, eid: str, not_found: str) -> web.Response:
        await self.store.call(self.audit.record, principal.clinician_id, AuditAction.access_denied,
                              "encounter", audit_id(eid), Outcome.denied, {"method": request.method})
        return json_error(404, not_found)

    _AUDITED_POSTS = {"sign": AuditAction.sign, "amend": AuditAction.update, "draft": AuditAction.create,
                      "resolve": AuditAction.update, "retry": AuditAction.deliver}

    async def _audit_request(self, request: web.Request, principal: Principal, route: str, eid: str,
                             status: int) -> None:
        """One audit entry per request that reads or changes an encounter's data (transcript,
        draft, signature, deliveries): who, what, which encounter, outcome. Routes that audit
        themselves in their own transaction (transcript reads, consent withdrawal) are skipped."""
        if route.endswith("/withdraw-consent") or route == "/v1/encounters/{id}/transcript":
            return
        last = route.rstrip("/").rsplit("/", 1)[-1]
        if request.method in ("GET", "HEAD"):
            action = AuditAction.read
        elif request.method in ("PUT", "PATCH"):
            action = AuditAction.update
        elif request.method == "DELETE":
            action = AuditAction.delete
        else:
            action = self._AUDITED_POSTS.get(last, AuditAction.update)
        outcome = Outcome.success if status < 400 else (Outcome.denied if status in (401, 403, 409) else Outcome.failed)
        resource = last if last != "{id}" else "encounter"
        await self.store.call(self.audit.record, audit_id(principal.clinician_id), action, "encounter",
                              audit_id(eid), outcome, {"resource": audit_id(resource), "status": status})

    def client_address(self, request: web.Request) -> str:
        """The client's address: the socket peer, or, behind a configured trusted proxy, the
        last address that proxy appended to ``X-Forwarded-For``."""
        remote = request.remote or "unknown"
        if remote in self.settings.server.trusted_proxies:
            forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
            if forwarded:
                return forwarded[-1]
        return remote


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for ``wss://``/``https://`` when a certificate is configured (TLS 1.2+)."""
    cfg = settings.server
    if cfg.tls_cert_file is None:
        return None
    if cfg.tls_key_file is None:
        raise ValueError("server.tls_cert_file is set but server.tls_key_file is not")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cfg.tls_cert_file), str(cfg.tls_key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the TLS certificate/key ({exc}); check server.tls_cert_file "
                         "and server.tls_key_file") from None
    return ctx
