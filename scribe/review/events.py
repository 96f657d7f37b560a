"""Live updates for review clients, as server-sent events.

Two sources feed one hub: review actions publish as they happen, and a light poller watches
the store (encounter status, segment count, delivery states) so changes made elsewhere — the
live transcriber, a drafter, the outbox worker, another process sharing the database — reach
the app without each of them knowing about it. The poller only runs while someone listens.

Each subscriber has a bounded queue; a client too slow to keep up loses the oldest events
(every event only says *what* changed, the client re-reads the state), never grows memory.
Events carry ids and states only, never note or transcript text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .models import LiveEvent

log = logging.getLogger(__name__)

Snapshot = dict[str, tuple[Any, ...]]


class EventHub:
    def __init__(self, snapshot: Callable[[], Awaitable[tuple[Snapshot, Snapshot]]], *, interval: float = 0.5,
                 queue_size: int = 256):
        self._snapshot = snapshot
        self.interval = interval
        self.queue_size = queue_size
        self._subscribers: set[asyncio.Queue[LiveEvent | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._encounters: Snapshot | None = None
        self._deliveries: Snapshot | None = None

    def publish(self, event: LiveEvent) -> None:
        for q in list(self._subscribers):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self):
        q: asyncio.Queue[LiveEvent | None] = asyncio.Queue(maxsize=self.queue_size)
        self._subscribers.add(q)
        if self._task is None or self._task.done():
            self._encounters = self._deliveries = None
            self._task = asyncio.create_task(self._poll(), name="review-events-poll")
        try:
            yield q
        finally:
            self._subscribers.discard(q)

    async def close(self) -> None:
        """End every subscription (each gets ``None``) and stop polling: server shutdown."""
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueEmpty):
                if q.full():
                    q.get_nowait()
            q.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def poll_once(self) -> None:
        encounters, deliveries = await self._snapshot()
        if self._encounters is not None:
            for eid, now in encounters.items():
                before = self._encounters.get(eid)
                if before is None or before[0] != now[0]:
                    self.publish(LiveEvent(type="encounter", encounter_id=eid, data={"status": now[0]}))
                if before is None or before[1:] != now[1:]:  # new segments, or a record-pass revision
                    self.publish(LiveEvent(type="segments", encounter_id=eid,
                                           data={"count": now[1], "revisions": now[2] if len(now) > 2 else 0}))
        if self._deliveries is not None:
            for did, now in deliveries.items():
                if self._deliveries.get(did) != now:
                    eid, state, attempts, error = now[:4]
                    self.publish(LiveEvent(type="delivery", encounter_id=eid,
                                           data={"id": did, "state": state, "attempts": attempts}))
        self._encounters, self._deliveries = encounters, deliveries

    async def _poll(self) -> None:
        while self._subscribers:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("review event poll failed")
            await asyncio.sleep(self.interval)
