"""Opening the store with its data key (``open_keyed_store``; the product calls it through
``scribe.database.open_store``, which gives it every PHI column).

Where the key comes from, in order:

1. ``SCRIBE_TRUST__KEY`` (``trust.key``) or ``trust.key_file`` — the deployment's own key, kept
   off the database's disk (a secret manager, a separate mount, a KMS-backed secret);
2. neither configured: ``<data_dir>/keys/data.key``, created on first use (random 256-bit,
   mode 0600 in a 0700 directory). A key beside the data protects *copies of the database
   file* (a backup, a file sent by mistake), not a stolen disk or a compromised host: that
   is logged as a warning when the key is created, and docs/deployment.md says how to move it.

``trust.retired_key_files`` adds old keys for reading during a rotation. A key that cannot
read the database fails here, at startup, with the key ids found and configured.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .crypto import EncryptedColumn, KeyMissing, Keyring, read_key_file, recorded_key_ids, write_key_file

if TYPE_CHECKING:
    from ..config import Settings
    from ..store import Store

log = logging.getLogger(__name__)

DEFAULT_KEY_NAME = "data.key"


def default_key_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / "keys" / DEFAULT_KEY_NAME


def data_keyring(settings: Settings) -> Keyring:
    """The keyring per the precedence above (creating the default key file if needed).

    Raises :class:`~scribe.store.EncryptionKeyError` for a key that is configured but unusable,
    or when the default key file is missing while the database already holds encrypted data
    (creating a fresh key then would only hide the real problem: the key was lost or moved)."""
    from ..store import EncryptionKeyError, Store

    trust = settings.trust
    try:
        if trust.key is not None or trust.key_file is not None:
            return Keyring.from_settings(settings)
        path = default_key_file(settings)
        if not path.exists():
            url = getattr(settings, "database_url", None)  # PostgreSQL: always ask the database
            if url or Path(settings.database_path).exists():
                probe = Store(url or settings.database_path)
                try:
                    recorded = recorded_key_ids(probe)
                finally:
                    probe.close()
                if recorded:
                    raise EncryptionKeyError(
                        f"the database {probe.path} holds data encrypted under key {', '.join(recorded)}, but no key "
                        f"is configured and the default key file {path} is missing. Restore that key file, or set "
                        "SCRIBE_TRUST__KEY / trust.key_file to the key the database was written with"
                    )
            _create_default_key(path)
        primary = read_key_file(path)
        return Keyring(primary, [read_key_file(p) for p in trust.retired_key_files],
                       accept_plaintext=trust.accept_plaintext_rows)
    except KeyMissing as exc:
        raise EncryptionKeyError(str(exc)) from None


def _create_default_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        key_id = write_key_file(path)
    except KeyMissing:  # another process (a second CLI command, a replica) created it first
        return
    log.warning(
        "created data key %s at %s (mode 0600). A key stored beside the database protects copies of the database "
        "file, not a stolen disk: move it to a separate mount or secret manager and set trust.key_file "
        "(docs/deployment.md, 'Keys')", key_id, path,
    )


def private_data_dir(settings: Settings) -> Path:
    """Create ``settings.data_dir`` as 0700, or take group and other access away from an
    existing one: it holds the database, its WAL, keys and the audit anchor. Returns it."""
    path = Path(settings.data_dir)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
    except OSError as exc:  # not ours (a shared mount): say so, do not fail the service
        log.warning("cannot make the data directory %s private (mode 0700): %s", path, exc.strerror)
    return path


def open_keyed_store(settings: Settings, encrypted_columns: Sequence[EncryptedColumn], **kwargs: Any) -> Store:
    """``Store(database_url or database_path, keyring)`` with the key checked against
    ``encrypted_columns`` of the database, in a private data directory, its audit log anchored
    (``trust.anchor``). The product opens it through ``scribe.database.open_store``, which
    gives every schema's PHI columns (this package names no table)."""
    from ..store import Store
    from .anchor import anchor_file

    private_data_dir(settings)
    keyring = data_keyring(settings)
    store = Store(settings.database_url or settings.database_path, keyring=keyring,
                  encrypted_columns=tuple(encrypted_columns), **kwargs)
    store.audit_anchor_file = anchor_file(settings)
    store.audit_anchor_every = settings.trust.audit_anchor_every
    log.info("store opened with data key %s (%d key(s) configured)", keyring.primary_id, len(keyring.key_ids))
    return store


__all__ = ["data_keyring", "default_key_file", "open_keyed_store", "private_data_dir"]
