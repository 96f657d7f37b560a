"""What the trust modules need from the store, named structurally.

``scribe.store`` imports ``trust.crypto``, so this package cannot name ``Store`` (not even
under ``TYPE_CHECKING``: ``tests/test_architecture.py`` counts that as a dependency, and it
would be a cycle). These protocols list the store's surface the trust code calls;
``scribe.store.Store`` (and ``AsyncStore`` for :class:`StoreCalls`) satisfy them. What the code
only probes with ``getattr`` (``dialect``, ``keyring``, ``after_commit``, ``_tx_depth``,
``audit_anchor_file``, ``audit_anchor_every``) is left out, so a stand-in store without it
still fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ..models import Encounter

T = TypeVar("T")


class Connection(Protocol):
    """``Store.db``: ``sqlite3.Connection``'s surface (on PostgreSQL ``scribe.db.PostgresDatabase``)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


class TrustStore(Protocol):
    """The store as the audit log, tokens, key checks and rotation use it."""

    @property
    def db(self) -> Connection: ...

    def tx(self, what: str | None = None) -> AbstractContextManager[Connection]: ...

    def migrate_component(self, component: str, migrations: Sequence[Any]) -> None: ...


class EncounterStore(TrustStore, Protocol):
    """The store as consent withdrawal and retention purges use it."""

    def get_encounter(self, encounter_id: str) -> Encounter | None: ...


class StoreCalls(Protocol):
    """``AsyncStore``: runs ``fn`` on the store's own thread."""

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...


class Anchors(Protocol):
    """``AuditLog`` as the anchor schedule uses it (``anchor_quietly`` never raises)."""

    def anchor_quietly(self) -> int | None: ...


__all__ = ["Anchors", "Connection", "EncounterStore", "StoreCalls", "TrustStore"]
