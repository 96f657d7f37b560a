"""Encryption at rest: AES-256-GCM envelopes bound to where they are stored.

Why envelopes carry the key id: rotation is gradual (rows are re-encrypted in batches while
the service runs), so at any moment a column may hold values under the old and the new key;
each value says which key opens it. The key id is derived from the key itself, so a key file
and an id can never disagree.

Why associated data: the ciphertext of a transcript segment is bound to ``(table, column,
row key)``. Copying one encounter's encrypted segment into another encounter's row, or one
column into another, makes decryption fail instead of silently showing the wrong patient's
words.

Binary envelope (for BLOB columns such as audio frames)::

    b"SCE" | version (1 byte, 1) | len(key_id) (1 byte) | key_id (ASCII) | nonce (12) | ciphertext+tag

Text envelope (for TEXT columns such as segment JSON): ``"enc1:" + base64url(binary envelope)``.

The header is part of the associated data too, so no byte of an envelope can be changed. A
value that is not an envelope at all is refused on read when the store has a key
(:class:`PlaintextRefused`), unless the operator declared a migration from before encryption.
Nonces are random 96-bit values: safe for well under 2**32 encryptions per key (NIST SP
800-38D); rotate keys long before that (at 100 frames/s that is more than a year of audio).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .ports import TrustStore

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

MAGIC = b"SCE"
VERSION = 1
TEXT_PREFIX = "enc1:"
NONCE_BYTES = 12
KEY_BYTES = 32
ENV_VAR = "SCRIBE_TRUST__KEY"


class CryptoError(Exception):
    """Base class; messages never contain plaintext or key material."""


class KeyMissing(CryptoError):
    """No key is configured, or a key file cannot be read."""


class UnknownKeyId(CryptoError):
    """A value was encrypted under a key that is not in the keyring."""


class DecryptionError(CryptoError):
    """Authentication failed: the value was altered, moved to another row, or is not ours."""


class PlaintextRefused(DecryptionError):
    """A column that this store encrypts holds a value that is not an envelope at all.

    Why refused: anyone who can write the database file could otherwise put words in a
    patient's transcript ("warfarin 50 mg") that read back as genuine. The only honest source
    of such a value is a row from before encryption was turned on; that migration is explicit
    (``trust.accept_plaintext_rows`` while ``scribe keys rotate --encrypt-plaintext`` runs)."""


def _mac_key(key: bytes) -> bytes:
    return hmac.new(key, b"scribe-mac-key-v1\x00audit-anchor", hashlib.sha256).digest()


def key_id_for(key: bytes) -> str:
    """A short public id derived from the key (a hash prefix; reveals nothing usable)."""
    return "k" + hashlib.sha256(b"scribe-key-id-v1\x00" + key).hexdigest()[:12]


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyMissing(f"the key in {source} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyMissing(f"the key in {source} is {len(key)} bytes; it must be {KEY_BYTES} bytes "
                         "(generate one with 'scribe keys generate')")
    return key


def write_key_file(path: Path | str, key: bytes | None = None, *, overwrite: bool = False) -> str:
    """Write a new base64 key to ``path`` with mode 0600 (created that way, never widened).

    Returns the key id. Refuses to replace an existing file unless ``overwrite``: losing a key
    loses every value encrypted under it.
    """
    key = key or generate_key()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError:
        raise KeyMissing(f"{p} already exists; refusing to overwrite a key (move it aside first)") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (encode_key(key) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return key_id_for(key)


def read_key_file(path: Path | str) -> bytes:
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="ascii")
    except FileNotFoundError:
        raise KeyMissing(f"key file {p} does not exist (create one with 'scribe keys generate -o {p}')") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyMissing(f"cannot read key file {p}: {type(exc).__name__}") from None
    if mode & stat.S_IROTH:
        log.warning("key file %s is readable by other users; chmod 600 it", p)
    return decode_key(text, str(p))


class Keyring:
    """Keys by id; one *primary* key encrypts, every key decrypts.

    Build one with :meth:`from_settings` (primary from ``SCRIBE_TRUST__KEY`` or
    ``trust.key_file``; retired keys from ``trust.retired_key_files``) or directly.
    """

    def __init__(self, primary: bytes, retired: Iterable[bytes] = (), *, accept_plaintext: bool = False):
        if len(primary) != KEY_BYTES:
            raise KeyMissing(f"the primary key must be {KEY_BYTES} bytes")
        self._keys: dict[str, AESGCM] = {}
        self._mac_keys: dict[str, bytes] = {}
        self.primary_id = key_id_for(primary)
        self._keys[self.primary_id] = AESGCM(primary)
        self._mac_keys[self.primary_id] = _mac_key(primary)
        for key in retired:
            if len(key) != KEY_BYTES:
                raise KeyMissing(f"retired keys must be {KEY_BYTES} bytes")
            self._keys.setdefault(key_id_for(key), AESGCM(key))
            self._mac_keys.setdefault(key_id_for(key), _mac_key(key))
        self.accept_plaintext = accept_plaintext
        """Read values that are not envelopes as plaintext (``trust.accept_plaintext_rows``):
        only while migrating a database written before encryption; off by default, because
        then any value written around scribe would read back as genuine."""

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    @classmethod
    def from_sources(cls, key: str | None = None, key_file: Path | str | None = None,
                     retired_key_files: Sequence[Path | str] = ()) -> Keyring:
        if key and key_file:
            raise KeyMissing(f"both {ENV_VAR} (trust.key) and trust.key_file are set; set only one primary key")
        if key:
            primary = decode_key(key, ENV_VAR)
        elif key_file:
            primary = read_key_file(key_file)
        else:
            raise KeyMissing(f"no encryption key configured: set {ENV_VAR} (base64 of 32 bytes) or trust.key_file "
                             "(create one with 'scribe keys generate')")
        return cls(primary, [read_key_file(p) for p in retired_key_files])

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        """From ``settings.trust`` (key: SecretStr | None, key_file, retired_key_files,
        accept_plaintext_rows)."""
        trust = settings.trust
        key = trust.key.get_secret_value() if trust.key is not None else None
        ring = cls.from_sources(key, trust.key_file, trust.retired_key_files)
        ring.accept_plaintext = bool(getattr(trust, "accept_plaintext_rows", False))
        return ring

    # -- MACs (audit anchors)

    def mac(self, data: bytes) -> tuple[str, str]:
        """``(key_id, hex HMAC-SHA256)`` of ``data`` under a sub-key of the primary key.

        Why a sub-key: the AES key is never used for anything but AES-GCM; the MAC key is
        derived from it (HMAC with a fixed label), so whoever lacks the key file cannot forge
        a MAC, and a MAC reveals nothing about the data key."""
        return self.primary_id, hmac.new(self._mac_keys[self.primary_id], data, hashlib.sha256).hexdigest()

    def check_mac(self, key_id: str, data: bytes, mac: str) -> bool:
        """Whether ``mac`` is ``data``'s MAC under key ``key_id``; raises :class:`UnknownKeyId`
        for a key id that is not configured."""
        key = self._mac_keys.get(key_id)
        if key is None:
            raise UnknownKeyId(f"MAC under key {key_id}, which is not configured "
                               f"(configured: {', '.join(self._keys)})")
        expected = hmac.new(key, data, hashlib.sha256).hexdigest()
        return isinstance(mac, str) and hmac.compare_digest(expected, mac)

    # -- envelopes

    def _header(self, key_id: str) -> bytes:
        kid = key_id.encode("ascii")
        return MAGIC + bytes([VERSION, len(kid)]) + kid

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        header = self._header(self.primary_id)
        nonce = secrets.token_bytes(NONCE_BYTES)
        return header + nonce + self._keys[self.primary_id].encrypt(nonce, plaintext, header + aad)

    def decrypt(self, envelope: bytes, aad: bytes) -> bytes:
        key_id, header, body = parse_envelope(envelope)
        aes = self._keys.get(key_id)
        if aes is None:
            raise UnknownKeyId(f"value was encrypted under key {key_id}, which is not configured "
                               f"(configured: {', '.join(self._keys)}); add its key file to trust.retired_key_files")
        nonce, ct = body[:NONCE_BYTES], body[NONCE_BYTES:]
        try:
            return aes.decrypt(nonce, ct, header + aad)
        except InvalidTag:
            raise DecryptionError("decryption failed: the value was altered or belongs to another row") from None

    def encrypt_text(self, plaintext: str, aad: bytes) -> str:
        return TEXT_PREFIX + base64.urlsafe_b64encode(self.encrypt(plaintext.encode("utf-8"), aad)).decode("ascii")

    def decrypt_text(self, value: str, aad: bytes) -> str:
        if not value.startswith(TEXT_PREFIX):
            raise DecryptionError("value is not an encrypted text envelope")
        try:
            raw = base64.urlsafe_b64decode(value[len(TEXT_PREFIX):].encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise DecryptionError("encrypted text envelope is not valid base64") from None
        return self.decrypt(raw, aad).decode("utf-8")

    def envelope_key_id(self, value: bytes | str) -> str | None:
        """The key id of an envelope, or None if ``value`` is not encrypted."""
        return envelope_key_id(value)


def envelope_key_id(value: bytes | str) -> str | None:
    """The key id of an envelope, or None if ``value`` is not encrypted."""
    if isinstance(value, str):
        if not value.startswith(TEXT_PREFIX):
            return None
        try:
            value = base64.urlsafe_b64decode(value[len(TEXT_PREFIX):].encode("ascii"))
        except (binascii.Error, ValueError):
            return None
    if not is_envelope(value):
        return None
    return parse_envelope(value)[0]


def is_envelope(value: bytes | str) -> bool:
    if isinstance(value, str):
        return value.startswith(TEXT_PREFIX)
    return isinstance(value, (bytes, bytearray, memoryview)) and bytes(value[:4]) == MAGIC + bytes([VERSION])


def parse_envelope(envelope: bytes) -> tuple[str, bytes, bytes]:
    """``(key_id, header, nonce+ciphertext)``; raises :class:`DecryptionError` on a malformed one."""
    envelope = bytes(envelope)
    if len(envelope) < 5 or envelope[:3] != MAGIC:
        raise DecryptionError("value is not an encrypted envelope (stored in plaintext?)")
    if envelope[3] != VERSION:
        raise DecryptionError(f"unsupported envelope version {envelope[3]}")
    n = envelope[4]
    header = envelope[: 5 + n]
    body = envelope[5 + n:]
    if n == 0 or len(header) != 5 + n or len(body) < NONCE_BYTES + 16:
        raise DecryptionError("truncated encrypted envelope")
    try:
        key_id = header[5:].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError("malformed key id in envelope") from None
    return key_id, header, body


def aad_for(table: str, column: str, row_key: Sequence[Any] | str | int) -> bytes:
    """Associated data naming where a value lives; unambiguous (a JSON array)."""
    key = list(row_key) if isinstance(row_key, (list, tuple)) else [row_key]
    return json.dumps([table, column, key], separators=(",", ":"), ensure_ascii=True).encode("ascii")


# --------------------------------------------------------------------------- rotation


@dataclass(frozen=True)
class EncryptedColumn:
    """A column holding envelopes: where it is, how its rows are keyed, text or blob.

    Each schema declares its own PHI columns next to the tables it creates (an
    ``ENCRYPTED_COLUMNS`` tuple beside its ``MIGRATIONS``: the store's core tables in
    ``scribe/store.py``, each feature in its repository module), and the composition root
    collects them (``scribe/database.py``). This module names no table: what the store and
    the repositories encrypt is exactly what :func:`rotate` and the key check at open
    (:func:`check_store_keys`) are given to walk. A feature adding a PHI column declares it
    beside its schema and adds its tuple to the collection. Ids, times, counts, states and
    hashes stay in clear (they are queried and hold no content)."""

    table: str
    column: str
    key_columns: tuple[str, ...]
    text: bool


@dataclass
class RotationReport:
    rewrapped: int = 0
    encrypted_plaintext: int = 0
    already_current: int = 0
    skipped_columns: tuple[str, ...] = ()


def _table_columns(db: Any, table: str) -> set[str]:
    columns = getattr(db, "table_columns", None)  # PostgreSQL (scribe.db); SQLite: the PRAGMA
    if columns is not None:
        return set(columns(table))
    return {row[1] for row in db.execute(f'PRAGMA table_info("{table}")').fetchall()}


def rotate(store: TrustStore, keyring: Keyring, columns: Sequence[EncryptedColumn], *,
           encrypt_plaintext: bool = False, batch: int = 500) -> RotationReport:
    """Re-encrypt every value of ``columns`` not under the primary key, in batches of ``batch`` rows per
    transaction (so a long rotation does not hold the write lock for minutes, and an
    interrupted one can simply be run again).

    With ``encrypt_plaintext`` also encrypt values stored before encryption was turned on.
    Tables or columns absent from this database are skipped (features are optional). Every
    retired key must still be in the keyring: a value under an unknown key raises
    :class:`UnknownKeyId` and the batch is rolled back.

    After a rotation the old key can be destroyed; its ciphertext may remain in free pages
    until ``VACUUM``, which is harmless once the key is gone.
    """
    report = RotationReport()
    skipped = []
    for col in columns:
        have = _table_columns(store.db, col.table)
        if not have or col.column not in have or not set(col.key_columns) <= have:
            skipped.append(f"{col.table}.{col.column}")
            continue
        keys = ", ".join(f'"{k}"' for k in col.key_columns)
        where = " AND ".join(f'"{k}" = ?' for k in col.key_columns)
        last: tuple[Any, ...] | None = None
        while True:
            # Keyset pagination over the primary key: stable under concurrent inserts.
            if last is None:
                page_sql = f'SELECT {keys}, "{col.column}" FROM "{col.table}" ORDER BY {keys} LIMIT ?'
                args: list[Any] = [batch]
            else:
                page_sql = (f'SELECT {keys}, "{col.column}" FROM "{col.table}" WHERE ({keys}) > ({", ".join("?" * len(last))}) '
                            f"ORDER BY {keys} LIMIT ?")
                args = [*last, batch]
            with store.tx() as db:
                rows = db.execute(page_sql, args).fetchall()
                if not rows:
                    break
                for row in rows:
                    row_key, value = tuple(row[:-1]), row[-1]
                    aad = aad_for(col.table, col.column, row_key)
                    kid = keyring.envelope_key_id(value) if value is not None else None
                    if value is None or kid == keyring.primary_id:
                        report.already_current += 1
                        continue
                    if kid is None:
                        if not encrypt_plaintext:
                            report.already_current += 1
                            continue
                        plain = value.encode("utf-8") if col.text else bytes(value)
                        report.encrypted_plaintext += 1
                    else:
                        plain = (keyring.decrypt_text(value, aad).encode("utf-8") if col.text
                                 else keyring.decrypt(value, aad))
                        report.rewrapped += 1
                    new = keyring.encrypt_text(plain.decode("utf-8"), aad) if col.text else keyring.encrypt(plain, aad)
                    db.execute(f'UPDATE "{col.table}" SET "{col.column}" = ? WHERE {where}', (new, *row_key))
                last = tuple(rows[-1][:-1])
    report.skipped_columns = tuple(skipped)
    log.info("key rotation to %s: %d rewrapped, %d plaintext encrypted, %d current",
             keyring.primary_id, report.rewrapped, report.encrypted_plaintext, report.already_current)
    return report


# --------------------------------------------------------------------------- fields in the store


def seal_text(keyring: Keyring | None, plaintext: str, table: str, column: str, row_key: Sequence[Any] | str | int) -> str:
    """What to store in a TEXT column: an envelope under the primary key, or the plaintext
    itself when the store has no keyring (encryption off)."""
    if keyring is None:
        return plaintext
    return keyring.encrypt_text(plaintext, aad_for(table, column, row_key))


def open_text(keyring: Keyring | None, stored: str, table: str, column: str, row_key: Sequence[Any] | str | int) -> str:
    """The plaintext of a stored TEXT value: it must be an envelope made for this row.

    A value that is not an envelope raises :class:`PlaintextRefused` when the store has a
    keyring, unless the keyring was built with ``accept_plaintext`` (a database from before
    encryption, until ``scribe keys rotate --encrypt-plaintext`` has run). Without a keyring
    (encryption off) values are plaintext by definition."""
    if not is_envelope(stored):
        _plaintext(keyring, table, column, row_key)
        return stored
    if keyring is None:
        raise KeyMissing(f"{table}.{column} of row {_row(row_key)} is encrypted but this store was opened without "
                         "a key; open it with its keyring (scribe.database.open_store(settings))")
    return keyring.decrypt_text(stored, aad_for(table, column, row_key))


def seal_bytes(keyring: Keyring | None, plaintext: bytes, table: str, column: str,
               row_key: Sequence[Any] | str | int) -> bytes:
    if keyring is None:
        return plaintext
    return keyring.encrypt(plaintext, aad_for(table, column, row_key))


def open_bytes(keyring: Keyring | None, stored: bytes, table: str, column: str,
               row_key: Sequence[Any] | str | int) -> bytes:
    """As :func:`open_text`, for BLOB columns (audio frames)."""
    if not is_envelope(stored):
        _plaintext(keyring, table, column, row_key)
        return bytes(stored)
    if keyring is None:
        raise KeyMissing(f"{table}.{column} of row {_row(row_key)} is encrypted but this store was opened without "
                         "a key; open it with its keyring (scribe.database.open_store(settings))")
    return keyring.decrypt(stored, aad_for(table, column, row_key))


def _plaintext(keyring: Keyring | None, table: str, column: str, row_key: Sequence[Any] | str | int) -> None:
    """Allow a non-envelope value only where it can be genuine; the message names the place,
    never the value (it may be PHI, or words someone wants shown as PHI)."""
    if keyring is None or keyring.accept_plaintext:
        return
    raise PlaintextRefused(
        f"{table}.{column} of row {_row(row_key)} is not encrypted although this store encrypts it: refused "
        "(written around scribe, or a row from before encryption was turned on; for the latter run "
        "'scribe keys rotate --encrypt-plaintext' once, with trust.accept_plaintext_rows=true until it has run)"
    )


def _row(row_key: Sequence[Any] | str | int) -> str:
    """Row keys are ids and counters (never content), so they may appear in messages."""
    return "/".join(str(k) for k in row_key) if isinstance(row_key, (list, tuple)) else str(row_key)


# --------------------------------------------------------------------------- which keys a database needs

KEY_MIGRATIONS = [
    """
    CREATE TABLE encryption_keys (
        key_id TEXT PRIMARY KEY,
        first_used_at TEXT NOT NULL
    )
    """,
]
"""``encryption_keys``: the ids (never the keys) of every key this database may hold values
under. Checked at open so a wrong key fails at startup with both sets of ids named, instead of
at the first read of some row hours later; pruned to the primary after a complete rotation."""


def recorded_key_ids(store: TrustStore) -> list[str]:
    """Key ids the database says it holds data under ([] for a database never opened with a key)."""
    if not _table_columns(store.db, "encryption_keys"):
        return []
    return [r[0] for r in store.db.execute("SELECT key_id FROM encryption_keys ORDER BY first_used_at").fetchall()]


def probe_key_ids(store: TrustStore, columns: Sequence[EncryptedColumn]) -> set[str]:
    """Key ids of the first and the last stored value of each column (by primary key: two
    index lookups per column, no scan). Covers databases written before ``encryption_keys``
    existed, where the registry alone would say nothing."""
    found: set[str] = set()
    for col in columns:
        have = _table_columns(store.db, col.table)
        if not have or col.column not in have or not set(col.key_columns) <= have:
            continue
        for order in ("ASC", "DESC"):
            keys = ", ".join(f'"{k}" {order}' for k in col.key_columns)
            row = store.db.execute(
                f'SELECT "{col.column}" FROM "{col.table}" WHERE "{col.column}" IS NOT NULL ORDER BY {keys} LIMIT 1'
            ).fetchone()
            if row is None:
                continue
            try:
                kid = envelope_key_id(row[0])
            except CryptoError:  # a damaged row: reported when it is read, not a key problem
                continue
            if kid is not None:
                found.add(kid)
    return found


def check_store_keys(store: TrustStore, keyring: Keyring, columns: Sequence[EncryptedColumn], *,
                     now: str | None = None) -> None:
    """Refuse a keyring that cannot read this database; then record the primary key's id.
    ``columns``: the encrypted columns probed (:func:`probe_key_ids`), the same set rotation walks.

    Raises :class:`UnknownKeyId` naming the key ids found in the database and the configured
    ones (ids only: they reveal nothing about the keys)."""
    store.migrate_component("encryption", KEY_MIGRATIONS)
    needed = set(recorded_key_ids(store)) | probe_key_ids(store, columns)
    missing = sorted(needed - set(keyring.key_ids))
    if missing:
        configured = ", ".join(f"{k} (primary)" if k == keyring.primary_id else f"{k} (retired)"
                               for k in keyring.key_ids)
        raise UnknownKeyId(
            f"wrong encryption key for {getattr(store, 'path', 'the database')}: it holds data encrypted under key "
            f"{', '.join(missing)}, but the configured keys are {configured}. Configure the key this database was "
            "written with (SCRIBE_TRUST__KEY or trust.key_file); after a key change, list the old key file in "
            "trust.retired_key_files until 'scribe keys rotate' has finished"
        )
    if keyring.primary_id not in recorded_key_ids(store):
        from datetime import UTC, datetime

        with store.tx() as db:
            db.execute("INSERT INTO encryption_keys (key_id, first_used_at) VALUES (?, ?) "
                       "ON CONFLICT (key_id) DO NOTHING",
                       (keyring.primary_id, now or datetime.now(UTC).isoformat()))


def retire_rotated_keys(store: TrustStore, keyring: Keyring) -> list[str]:
    """After a complete rotation over every encrypted column, every value is under the
    primary key (or in clear): forget the other ids, so opening with an old key alone is
    refused at startup. Returns the ids forgotten."""
    if not _table_columns(store.db, "encryption_keys"):
        return []
    old = [k for k in recorded_key_ids(store) if k != keyring.primary_id]
    if old:
        with store.tx() as db:
            db.execute(f"DELETE FROM encryption_keys WHERE key_id IN ({', '.join('?' * len(old))})", old)
    return old
