"""A small typed client for the review API: the only way the review app reaches the service.

Every method returns the API's pydantic models; every failure is an ``ApiError`` whose message
is the server's plain-words explanation (what the app shows the clinician), never a traceback.
``events()`` follows the server-sent event stream and reconnects with a short back-off, so a
restarted server or a dropped Wi-Fi link does not end live updates.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel, TypeAdapter

from scribe.models import Delivery, Note
from scribe.review.models import (
    DeliveryView,
    DraftProgress,
    DraftView,
    EncounterList,
    EncounterSummary,
    LiveEvent,
    ReviewEvent,
    ReviewState,
    SignResult,
    TranscriptView,
)

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
PREFIX = "/v1/review"


class ApiError(Exception):
    """The service refused a request or could not be reached; ``str()`` is for the clinician."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def http_base(url: str) -> str:
    """``ws://host:port/v1/stream`` (the ``scribe stream`` URL) or ``http://host:port`` → the
    HTTP origin, so one ``SCRIBE_URL`` serves both commands."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not a server URL: {url!r} (expected e.g. http://127.0.0.1:8765)")
    return urlunsplit((scheme, parts.netloc, "", "", ""))


class ReviewApi(Protocol):
    """What the app needs; ``ReviewClient`` speaks HTTP, tests may pass a stand-in."""

    actor: str

    async def list_encounters(self, state: ReviewState | None = None, query: str | None = None) -> EncounterList: ...
    async def encounter(self, encounter_id: str) -> EncounterSummary: ...
    async def transcript(self, encounter_id: str, since: int = 0) -> TranscriptView: ...
    async def draft(self, encounter_id: str) -> DraftView | None: ...
    async def start_draft(self, encounter_id: str) -> DraftProgress: ...
    async def save_draft(self, encounter_id: str, base_version: int, note: Note) -> DraftView: ...
    async def resolve_flag(self, encounter_id: str, base_version: int, sentence_id: str, flag: int,
                           resolution: str, *, reason: str | None = None, text: str | None = None) -> DraftView: ...
    async def sign(self, encounter_id: str, version: int) -> SignResult: ...
    async def amend(self, encounter_id: str, reason: str) -> DraftView: ...
    async def deliveries(self, encounter_id: str) -> DeliveryView: ...
    async def retry(self, delivery_id: str) -> None: ...
    async def audit(self, encounter_id: str) -> list[ReviewEvent]: ...
    def events(self, encounter_id: str | None = None) -> AsyncIterator[LiveEvent]: ...
    async def close(self) -> None: ...


class ReviewClient:
    def __init__(self, url: str, token: str | None, actor: str, *, timeout: float = 30.0):
        self.base = http_base(url)
        self.actor = actor
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=10.0)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                       params: dict[str, str] | None = None) -> Any:
        url = f"{self.base}{PREFIX}{path}"
        try:
            async with self._http().request(method, url, json=body, params=params) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    try:
                        message = json.loads(text).get("error") or text
                    except (ValueError, AttributeError):
                        message = text or resp.reason or "error"
                    raise ApiError(str(message), resp.status)
                return json.loads(text) if text else None
        except aiohttp.ClientConnectionError:
            raise ApiError(f"cannot reach the scribe service at {self.base}; is 'scribe serve' running?") from None
        except TimeoutError:
            raise ApiError(f"the scribe service at {self.base} did not answer in time") from None

    async def _get(self, model: type[M], path: str, **params: Any) -> M:
        clean = {k: str(v) for k, v in params.items() if v is not None}
        return model.model_validate(await self._request("GET", path, params=clean or None))

    # -- reads

    async def list_encounters(self, state: ReviewState | None = None, query: str | None = None) -> EncounterList:
        return await self._get(EncounterList, "/encounters", state=state.value if state else None, q=query or None)

    async def encounter(self, encounter_id: str) -> EncounterSummary:
        return await self._get(EncounterSummary, f"/encounters/{encounter_id}")

    async def transcript(self, encounter_id: str, since: int = 0) -> TranscriptView:
        return await self._get(TranscriptView, f"/encounters/{encounter_id}/transcript", since=since)

    async def draft(self, encounter_id: str) -> DraftView | None:
        try:
            return await self._get(DraftView, f"/encounters/{encounter_id}/draft")
        except ApiError as exc:
            if exc.status == 404 and "no draft" in str(exc):
                return None
            raise

    async def deliveries(self, encounter_id: str) -> DeliveryView:
        return await self._get(DeliveryView, f"/encounters/{encounter_id}/deliveries")

    async def audit(self, encounter_id: str) -> list[ReviewEvent]:
        data = await self._request("GET", f"/encounters/{encounter_id}/audit")
        return TypeAdapter(list[ReviewEvent]).validate_python(data)

    # -- writes

    async def start_draft(self, encounter_id: str) -> DraftProgress:
        return DraftProgress.model_validate(await self._request("POST", f"/encounters/{encounter_id}/draft"))

    async def save_draft(self, encounter_id: str, base_version: int, note: Note) -> DraftView:
        body = {"base_version": base_version, "note": note.model_dump(mode="json"), "actor": self.actor}
        return DraftView.model_validate(await self._request("PUT", f"/encounters/{encounter_id}/draft", body=body))

    async def resolve_flag(self, encounter_id: str, base_version: int, sentence_id: str, flag: int,
                           resolution: str, *, reason: str | None = None, text: str | None = None) -> DraftView:
        body = {"base_version": base_version, "sentence_id": sentence_id, "flag": flag, "resolution": resolution,
                "reason": reason, "text": text, "actor": self.actor}
        return DraftView.model_validate(
            await self._request("POST", f"/encounters/{encounter_id}/flags/resolve", body=body))

    async def sign(self, encounter_id: str, version: int) -> SignResult:
        body = {"version": version, "confirm": True, "actor": self.actor}
        return SignResult.model_validate(await self._request("POST", f"/encounters/{encounter_id}/sign", body=body))

    async def amend(self, encounter_id: str, reason: str) -> DraftView:
        body = {"reason": reason, "actor": self.actor}
        return DraftView.model_validate(await self._request("POST", f"/encounters/{encounter_id}/amend", body=body))

    async def retry(self, delivery_id: str) -> None:
        await self._request("POST", f"/deliveries/{delivery_id}/retry")

    # -- live

    async def events(self, encounter_id: str | None = None) -> AsyncIterator[LiveEvent]:
        """Server-sent events, forever (reconnecting); the caller cancels to stop."""
        url = f"{self.base}{PREFIX}/events"
        params = {"encounter": encounter_id} if encounter_id else None
        delay = 0.5
        while True:
            try:
                timeout = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=60.0)
                async with self._http().get(url, params=params, timeout=timeout) as resp:
                    if resp.status >= 400:
                        raise ApiError(f"live updates refused ({resp.status})", resp.status)
                    delay = 0.5
                    data: list[str] = []
                    async for raw in resp.content:
                        line = raw.decode("utf-8").rstrip("\r\n")
                        if line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif not line and data:
                            try:
                                yield LiveEvent.model_validate_json("\n".join(data))
                            except ValueError:
                                log.warning("unreadable live event skipped")
                            data = []
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


__all__ = ["ApiError", "Delivery", "ReviewApi", "ReviewClient", "http_base"]
