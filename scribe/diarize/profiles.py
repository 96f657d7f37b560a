"""Enrolled clinician voice profiles, stored encrypted (a voiceprint is biometric data).

Each profile is a 256-d embedding plus metadata, serialised and sealed with the store's key ring
(``scribe.trust.crypto``: AES-256-GCM, the table, column and clinician id as associated data, so
a ciphertext copied onto another clinician's row fails to open). It is one of the store's
encrypted columns, so ``scribe keys rotate`` re-encrypts profiles with everything else, and a
store without a data key refuses to hold them. The table (``speaker_profiles``) lives in the
main store under the ``speakers`` component.

Older versions sealed profiles with a key of their own (``[speakers] key`` /
``SCRIBE_SPEAKERS__KEY``, or ``<data_dir>/keys/speakers.key``). Such rows (their ``nonce``
column is not empty) are moved under the key ring when the repository opens, if that old key is
still configured or its file still exists; otherwise reading one says to re-enrol.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..models import utcnow
from ..trust.crypto import EncryptedColumn

MIGRATIONS = [
    """
    CREATE TABLE speaker_profiles (
        clinician_id TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
]

ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn("speaker_profiles", "ciphertext", ("clinician_id",), text=False),
)
"""The PHI column of this table (the sealed voiceprint), collected by ``scribe/database.py``
so that key rotation and the key check at open walk it."""


class ProfileError(Exception):
    """A profile problem the user can fix (bad key, missing profile); the message says how."""


class SpeakerProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    clinician_id: str
    model: str
    embedding_b64: str
    """float32 little-endian, base64 (so the model round-trips through JSON)."""
    speech_seconds: float = Field(ge=0)
    windows: int = Field(ge=0)
    created_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def from_embedding(cls, clinician_id: str, model: str, embedding: np.ndarray, *, speech_seconds: float,
                       windows: int) -> SpeakerProfile:
        e = np.asarray(embedding, dtype="<f4")
        return cls(clinician_id=clinician_id, model=model, embedding_b64=base64.b64encode(e.tobytes()).decode(),
                   speech_seconds=round(speech_seconds, 2), windows=windows)

    @property
    def embedding(self) -> np.ndarray:
        return np.frombuffer(base64.b64decode(self.embedding_b64), dtype="<f4").astype(np.float32)


def _key_from_file(path: Path) -> bytes:
    path = Path(path).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key) + b"\n")
        return key
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProfileError(f"the speaker key file {path} is readable by others: run 'chmod 600 {path}'")
    return _decode_key(path.read_bytes().strip(), str(path))


def _decode_key(raw: bytes | str, where: str) -> bytes:
    try:
        key = base64.b64decode(raw, validate=True)
    except (ValueError, TypeError):
        key = b""
    if len(key) != 32:
        raise ProfileError(f"the speaker profile key from {where} must be base64 of 32 bytes "
                           "(e.g. python -c \"import os,base64;print(base64.b64encode(os.urandom(32)).decode())\")")
    return key


def legacy_key(settings) -> bytes | None:
    """The key older versions sealed profiles with, if it is still configured or its file still
    exists (never created): only to move those profiles under the store's key ring."""
    sp = settings.speakers
    if sp.key is not None:
        return _decode_key(sp.key.get_secret_value().strip(), "SCRIBE_SPEAKERS__KEY / [speakers] key")
    path = Path(sp.key_file or settings.data_dir / "keys" / "speakers.key").expanduser()
    return _key_from_file(path) if path.is_file() else None


class ProfileRepository:
    """Encrypted speaker profiles in the store (``speakers`` component), under its key ring."""

    TABLE, COLUMN = "speaker_profiles", "ciphertext"

    def __init__(self, store, legacy: bytes | None = None):
        if getattr(store, "keyring", None) is None:
            raise ProfileError("voice profiles are biometric data and are stored only in an encrypted store: "
                               "open the store with its data key (scribe.database.open_store)")
        self.store = store
        store.migrate_component("speakers", MIGRATIONS)
        self._legacy = legacy
        if legacy is not None:
            self._move_legacy(legacy)

    @staticmethod
    def _legacy_aad(clinician_id: str, model: str) -> bytes:
        return json.dumps(["scribe.speaker_profile.v1", clinician_id, model]).encode()

    def _move_legacy(self, key: bytes) -> None:
        """Re-seal profiles written under the old speakers key with the store's key ring."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise ProfileError("the old speaker profile key must be 32 bytes")
        aead = AESGCM(key)
        rows = self.store.db.execute(
            "SELECT clinician_id, model, nonce, ciphertext FROM speaker_profiles WHERE length(nonce) > 0"
        ).fetchall()
        for clinician_id, model, nonce, ct in rows:
            try:
                plain = aead.decrypt(bytes(nonce), bytes(ct), self._legacy_aad(clinician_id, model))
            except InvalidTag:
                continue  # another key's row: reading it says to re-enrol
            self.save(SpeakerProfile.model_validate_json(plain))

    def save(self, profile: SpeakerProfile) -> None:
        from ..trust.crypto import seal_bytes

        sealed = seal_bytes(self.store.keyring, profile.model_dump_json().encode(), self.TABLE, self.COLUMN,
                            (profile.clinician_id,))
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO speaker_profiles (clinician_id, model, nonce, ciphertext, created_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (clinician_id) DO UPDATE SET model=excluded.model, nonce=excluded.nonce, "
                "ciphertext=excluded.ciphertext, created_at=excluded.created_at",
                (profile.clinician_id, profile.model, b"", sealed, profile.created_at.isoformat()),
            )

    def get(self, clinician_id: str) -> SpeakerProfile | None:
        from ..trust.crypto import CryptoError, open_bytes

        row = self.store.db.execute(
            "SELECT nonce, ciphertext FROM speaker_profiles WHERE clinician_id = ?", (clinician_id,)
        ).fetchone()
        if row is None:
            return None
        nonce, ct = row
        if nonce:
            raise ProfileError(f"the voice profile of {clinician_id} was stored under an old speakers key that is not "
                               "configured here; set speakers.key or speakers.key_file to it once, or re-enrol")
        try:
            plain = open_bytes(self.store.keyring, bytes(ct), self.TABLE, self.COLUMN, (clinician_id,))
        except CryptoError:
            raise ProfileError(f"the voice profile of {clinician_id} cannot be decrypted with this store's keys "
                               "(wrong key or tampered row); delete it and re-enrol") from None
        return SpeakerProfile.model_validate_json(plain)

    def delete(self, clinician_id: str) -> bool:
        with self.store.tx() as db:
            cur = db.execute("DELETE FROM speaker_profiles WHERE clinician_id = ?", (clinician_id,))
        return cur.rowcount > 0

    def list_ids(self) -> list[str]:
        return [r[0] for r in self.store.db.execute("SELECT clinician_id FROM speaker_profiles ORDER BY clinician_id")]
