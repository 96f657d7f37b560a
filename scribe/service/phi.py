"""Every encrypted (PHI) column of the database, collected from the schemas that declare them.

Each schema declares its own PHI columns beside the tables it creates: the store's core tables
(audio, transcript) in ``scribe/store.py``, and each feature in its repository module. The trust
package names no table; this composition hands the whole set to what must walk all of it: the
key check at open (``open_store(settings, encrypted_columns=ENCRYPTED_COLUMNS)``) and key
rotation (``scribe keys rotate``). A feature adding a PHI column declares it beside its schema;
a new feature with PHI adds its tuple here.
"""

from __future__ import annotations

from ..diarize.profiles import ENCRYPTED_COLUMNS as SPEAKER_COLUMNS
from ..fhir.outbox import ENCRYPTED_COLUMNS as DELIVERY_COLUMNS
from ..notes.repo import ENCRYPTED_COLUMNS as NOTE_COLUMNS
from ..review.service import ENCRYPTED_COLUMNS as REVIEW_COLUMNS
from ..store import ENCRYPTED_COLUMNS as CORE_COLUMNS
from ..trust.crypto import EncryptedColumn

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

__all__ = ["ENCRYPTED_COLUMNS"]
