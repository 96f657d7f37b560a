"""What the parts of the service ask of the whole: the composition root (``app.StreamServer``)
implements this, and a connection or a handler sees only this, so arrows point down
(``app`` imports ``session`` and ``encounters_api``; neither imports ``app``)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ..config import Settings
from ..models import Note
from ..store import AsyncStore
from ..trust.audit import AuditLog
from ..trust.consent import ConsentPolicy
from .engine import Engine


class Host(Protocol):
    settings: Settings
    engine: Engine
    store: AsyncStore
    audit: AuditLog
    consent_policy: ConsentPolicy
    sessions: dict[str, Any]
    """Live recordings by encounter id (``session.Session``)."""
    finishing: set[Any]
    """Connections still transcribing after ``stop`` whose client may have gone."""

    def lock(self, encounter_id: str) -> asyncio.Lock: ...

    def save_live_draft(self, note: Note) -> int: ...

    async def withdraw_consent(self, encounter_id: str, actor: str, *, via: Any = None) -> dict[str, int]: ...
