"""The product's database: every schema's encrypted (PHI) columns, and ``open_store``, the one
way the service, the command line and the benchmarks open it.

Each schema declares its own PHI columns beside the tables it creates: the store's core tables
(audio, transcript) in ``scribe/store.py``, and each feature in its repository module. The trust
package names no table (``trust.at_rest.open_keyed_store`` takes the columns it is given); this
module hands it the whole set, so the key check at open and key rotation (``scribe keys
rotate``) walk every PHI column, and consent withdrawal and the retention purge
(``trust.consent``) the tables each schema says hold an encounter's content. A feature adding a PHI column declares it beside its schema; a
new feature with PHI adds its tuple here. Features never import this module (it imports them).
"""

from __future__ import annotations

from typing import Any

from .config import Settings
from .diarize.profiles import ENCRYPTED_COLUMNS as SPEAKER_COLUMNS
from .fhir.outbox import ENCRYPTED_COLUMNS as DELIVERY_COLUMNS
from .notes.repo import DRAFTS_TABLE
from .notes.repo import ENCOUNTER_TABLES as NOTE_TABLES
from .notes.repo import ENCRYPTED_COLUMNS as NOTE_COLUMNS
from .review.service import ENCOUNTER_TABLES as REVIEW_TABLES
from .review.service import ENCRYPTED_COLUMNS as REVIEW_COLUMNS
from .store import ENCOUNTER_TABLES as CORE_TABLES
from .store import ENCRYPTED_COLUMNS as CORE_COLUMNS
from .store import Store
from .trust.at_rest import open_keyed_store
from .trust.crypto import EncryptedColumn

ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    *CORE_COLUMNS,
    *NOTE_COLUMNS,
    *REVIEW_COLUMNS,
    *DELIVERY_COLUMNS,
    *SPEAKER_COLUMNS,
)
"""Every column that holds PHI content (audio, transcript, note text, clinician-typed text,
voiceprints): what the store and the repositories encrypt is exactly what rotation and the key
check at open walk."""


WITHDRAWAL_TABLES: tuple[str, ...] = (*CORE_TABLES, *NOTE_TABLES, *REVIEW_TABLES)
"""Every table whose rows for an encounter hold what its recording produced (audio, transcript,
drafts, review edits): what consent withdrawal deletes (``trust.consent.apply_withdrawal``). The
audit log and the encounter row are kept; signed notes and their deliveries block withdrawal."""


def open_store(settings: Settings, **kwargs: Any) -> Store:
    """The store of ``settings`` with its data key, checked at open against every PHI column,
    in a private data directory, its audit log anchored (``trust.at_rest.open_keyed_store``)."""
    return open_keyed_store(settings, ENCRYPTED_COLUMNS, **kwargs)


__all__ = ["DRAFTS_TABLE", "ENCRYPTED_COLUMNS", "WITHDRAWAL_TABLES", "open_store"]
