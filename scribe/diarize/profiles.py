"""Enrolled clinician voice profiles, stored encrypted (a voiceprint is biometric data).

Each profile is a 256-d embedding plus metadata, serialised and sealed with AES-256-GCM
(``cryptography``), a fresh 96-bit nonce per write, and the clinician id + model id as
associated data, so a ciphertext copied onto another clinician's row fails to open. The
table (``speaker_profiles``) lives in the main store under the ``speakers`` component.

The key, in order of precedence:
1. ``SCRIBE_SPEAKERS__KEY`` / ``[speakers] key`` — base64 of 32 random bytes;
2. the key file ``[speakers] key_file`` (default ``<data_dir>/keys/speakers.key``), created on
   first use with ``os.urandom(32)``, mode 0600 in a 0700 directory, and refused if it is
   readable by group or others.
Losing the key makes stored profiles unreadable (clinicians re-enrol); nothing else depends on it.
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


def resolve_key(settings) -> bytes:
    """The AES key per the precedence above, from a ``Settings`` object."""
    sp = settings.speakers
    if sp.key is not None:
        return _decode_key(sp.key.get_secret_value().strip(), "SCRIBE_SPEAKERS__KEY / [speakers] key")
    return _key_from_file(sp.key_file or settings.data_dir / "keys" / "speakers.key")


class ProfileRepository:
    """Encrypted speaker profiles in the store (``speakers`` component)."""

    def __init__(self, store, key: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise ProfileError("the speaker profile key must be 32 bytes")
        self.store = store
        self._aead = AESGCM(key)
        store.migrate_component("speakers", MIGRATIONS)

    @staticmethod
    def _aad(clinician_id: str, model: str) -> bytes:
        return json.dumps(["scribe.speaker_profile.v1", clinician_id, model]).encode()

    def save(self, profile: SpeakerProfile) -> None:
        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, profile.model_dump_json().encode(), self._aad(profile.clinician_id, profile.model))
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO speaker_profiles (clinician_id, model, nonce, ciphertext, created_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (clinician_id) DO UPDATE SET model=excluded.model, nonce=excluded.nonce, "
                "ciphertext=excluded.ciphertext, created_at=excluded.created_at",
                (profile.clinician_id, profile.model, nonce, ct, profile.created_at.isoformat()),
            )

    def get(self, clinician_id: str) -> SpeakerProfile | None:
        from cryptography.exceptions import InvalidTag

        row = self.store.db.execute(
            "SELECT model, nonce, ciphertext FROM speaker_profiles WHERE clinician_id = ?", (clinician_id,)
        ).fetchone()
        if row is None:
            return None
        model, nonce, ct = row
        try:
            plain = self._aead.decrypt(nonce, ct, self._aad(clinician_id, model))
        except InvalidTag:
            raise ProfileError(f"the voice profile of {clinician_id} cannot be decrypted with this key "
                               "(wrong key or tampered row); delete it and re-enrol") from None
        return SpeakerProfile.model_validate_json(plain)

    def delete(self, clinician_id: str) -> bool:
        with self.store.tx() as db:
            cur = db.execute("DELETE FROM speaker_profiles WHERE clinician_id = ?", (clinician_id,))
        return cur.rowcount > 0

    def list_ids(self) -> list[str]:
        return [r[0] for r in self.store.db.execute("SELECT clinician_id FROM speaker_profiles ORDER BY clinician_id")]
