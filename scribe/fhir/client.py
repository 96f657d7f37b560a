"""A small async FHIR R4 REST client (aiohttp) for delivering notes.

What it adds over a bare HTTP session, and why:

- **auth**: a static bearer token or SMART Backend Services (``scribe.fhir.smart``); a 401 with
  SMART drops the cached token and retries once with a fresh one (servers revoke early).
- **no retries**: one request is one attempt. A 429/5xx/connection failure is reported as a
  retryable ``FhirError`` carrying the server's ``Retry-After``; the delivery worker
  (``scribe.fhir.outbox.OutboxWorker``) owns the retry policy — backoff, ``Retry-After``,
  persistence across restarts — in one layer, and the delivery target checks by identifier
  before any POST that may repeat an earlier one, so an EHR that ignores ``If-None-Exist``
  still gets exactly one copy.
- **errors in plain words**: a failed answer becomes a ``FhirError`` subclass whose message is
  the OperationOutcome's issues (``DocumentReference.status: Invalid code …``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urljoin

import aiohttp

from scribe.fhir.errors import (
    FhirAuthError,
    FhirConflict,
    FhirError,
    FhirNotFound,
    FhirUnavailable,
    FhirValidationError,
)
from scribe.fhir.outcome import RETRYABLE_STATUS, describe_http_error, parse_retry_after
from scribe.fhir.smart import SmartAuthError, SmartBackendAuth

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


@dataclass
class FhirResponse:
    status: int
    headers: Mapping[str, str]
    body: Any
    elapsed_s: float = 0.0

    @property
    def etag(self) -> str | None:
        return self.headers.get("ETag")

    @property
    def location(self) -> str | None:
        return self.headers.get("Location") or self.headers.get("Content-Location")

    def resource_id(self) -> str | None:
        """The id of the created/returned resource (body, else the Location header)."""
        if isinstance(self.body, Mapping) and self.body.get("id"):
            return str(self.body["id"])
        loc = self.location
        if loc:
            parts = loc.rstrip("/").split("/")
            if "_history" in parts:
                parts = parts[: parts.index("_history")]
            return parts[-1]
        return None


@dataclass
class BearerAuth:
    """A static bearer token (a site-issued API key); a 401 means it is wrong or revoked."""

    token: str = field(repr=False)


Auth = BearerAuth | SmartBackendAuth | None


class FhirClient:
    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"FHIR base URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self.auth = auth
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._session = session
        self._own_session = session is None

    @classmethod
    def from_settings(cls, fhir: Any, **overrides: Any) -> FhirClient:
        """Build from ``Settings.fhir`` (``scribe.config.FhirSettings``)."""
        if not fhir.base_url:
            raise ValueError("fhir.base_url is not set")
        auth: Auth = None
        if fhir.auth == "bearer":
            if fhir.token is None or not fhir.token.get_secret_value():
                raise ValueError("fhir.auth is 'bearer' but fhir.token is empty")
            auth = BearerAuth(fhir.token.get_secret_value())
        elif fhir.auth == "smart":
            from scribe.fhir.smart import load_private_key

            if not fhir.smart_client_id or not fhir.smart_key_file:
                raise ValueError("fhir.auth is 'smart': set fhir.smart_client_id and fhir.smart_key_file")
            auth = SmartBackendAuth(
                client_id=fhir.smart_client_id,
                key=load_private_key(fhir.smart_key_file, fhir.smart_alg),
                alg=fhir.smart_alg,
                kid=fhir.smart_kid,
                scope=fhir.smart_scope,
                token_url=fhir.smart_token_url,
                base_url=fhir.base_url,
            )
        kwargs: dict[str, Any] = {
            "auth": auth,
            "timeout_s": fhir.timeout_s,
            "connect_timeout_s": fhir.connect_timeout_s,
        }
        kwargs.update(overrides)
        return cls(fhir.base_url, **kwargs)

    # -- lifecycle

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def aclose(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- core

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url, path.lstrip("/"))

    async def _auth_header(self) -> dict[str, str]:
        if isinstance(self.auth, BearerAuth):
            return {"Authorization": f"Bearer {self.auth.token}"}
        if isinstance(self.auth, SmartBackendAuth):
            try:
                return {"Authorization": f"Bearer {await self.auth.token(self.session, self.timeout)}"}
            except SmartAuthError as exc:
                raise FhirAuthError(str(exc), status=401) from None
            except ConnectionError as exc:
                raise FhirUnavailable(str(exc)) from None
        return {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        action: str | None = None,
    ) -> FhirResponse:
        """One FHIR interaction with auth and error mapping; returns the 2xx response or raises a
        ``FhirError`` (``retryable`` and ``retry_after`` say what the caller's policy may do)."""
        action = action or f"{method} {path.split('?')[0]}"
        url = self.url(path)
        refreshed = False
        while True:
            hdrs = {"Accept": FHIR_JSON, **(headers or {})}
            if json is not None:
                hdrs["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
            try:
                hdrs.update(await self._auth_header())
                started = time.perf_counter()
                async with self.session.request(method, url, json=json, headers=hdrs, timeout=self.timeout) as resp:
                    raw = await resp.read()
                    status = resp.status
                    resp_headers = dict(resp.headers)
                elapsed = time.perf_counter() - started
            except FhirUnavailable as exc:
                error: FhirError = exc
            except (TimeoutError, aiohttp.ClientError, ConnectionError, OSError) as exc:
                kind = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"failed ({type(exc).__name__})"
                error = FhirUnavailable(f"the FHIR server at {self.base_url} is unreachable: {action} {kind}")
            else:
                body = _decode(raw)
                if status < 400:
                    log.debug("fhir %s -> %s in %.0f ms", action, status, elapsed * 1000)
                    return FhirResponse(status, resp_headers, body, elapsed)
                log.info("fhir %s -> HTTP %s", action, status)
                if status == 401 and isinstance(self.auth, SmartBackendAuth) and not refreshed:
                    # Token expired or revoked early: fetch a new one, once.
                    refreshed = True
                    self.auth.invalidate(hdrs.get("Authorization", "")[7:])
                    continue
                error = _http_error(status, body, resp_headers, action)
                if isinstance(error, FhirAuthError) and isinstance(self.auth, BearerAuth):
                    error = FhirAuthError(f"{error.message}. Check fhir.token", status=status, outcome=body)
            raise error

    # -- interactions

    async def create(
        self, resource: Mapping[str, Any], *, if_none_exist: str | None = None
    ) -> FhirResponse:
        """POST ``resource``; ``if_none_exist`` (``identifier=system|value``) makes it conditional."""
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else {}
        rtype = resource["resourceType"]
        return await self.request("POST", rtype, json=resource, headers=headers, action=f"create {rtype}")

    async def read(self, rtype: str, rid: str) -> FhirResponse:
        return await self.request("GET", f"{rtype}/{rid}", action=f"read {rtype}")

    async def update(self, resource: Mapping[str, Any], *, if_match: str | None = None) -> FhirResponse:
        """PUT with ``If-Match`` (the ETag read before) so a concurrent change is not overwritten."""
        headers = {"If-Match": if_match} if if_match else {}
        rtype, rid = resource["resourceType"], resource["id"]
        return await self.request("PUT", f"{rtype}/{rid}", json=resource, headers=headers, action=f"update {rtype}")

    async def search(self, rtype: str, query: str, *, max_pages: int = 10) -> list[dict[str, Any]]:
        """Matching resources of a search (follows ``next`` links up to ``max_pages``)."""
        path: str | None = f"{rtype}?{query}" if query else rtype
        out: list[dict[str, Any]] = []
        pages = 0
        while path and pages < max_pages:
            resp = await self.request("GET", path, action=f"search {rtype}")
            pages += 1
            bundle = resp.body if isinstance(resp.body, Mapping) else {}
            for entry in bundle.get("entry") or []:
                res = entry.get("resource")
                mode = (entry.get("search") or {}).get("mode", "match")
                if isinstance(res, dict) and mode == "match" and res.get("resourceType") == rtype:
                    out.append(res)
            path = next((link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"), None)
        return out


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    import json

    try:
        return json.loads(raw)
    except ValueError:
        return raw[:500].decode("utf-8", "replace")


def _http_error(status: int, body: Any, headers: Mapping[str, str], action: str) -> FhirError:
    message = describe_http_error(status, body, action=action)
    if status in RETRYABLE_STATUS:
        return FhirUnavailable(
            message, status=status, outcome=body, retry_after=parse_retry_after(headers.get("Retry-After"))
        )
    if status in (401, 403):
        return FhirAuthError(message, status=status, outcome=body)
    if status in (404, 410):
        return FhirNotFound(message, status=status, outcome=body)
    if status in (409, 412):
        return FhirConflict(message, status=status, outcome=body)
    return FhirValidationError(message, status=status, outcome=body)
