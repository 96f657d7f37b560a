"""Audit anchors: the audit log's head (seq + hash + time) kept outside the database.

Why: a hash chain proves that no entry *inside* it was changed, but whoever can write the
database can cut entries off the end, or rebuild the whole chain with fresh hashes, and the
rest still links up. An anchor remembers how far the chain reached and what its hash was
there; ``AuditLog.verify`` then fails when the log is shorter than the anchor or differs at
the anchored entry.

Why a MAC: the anchor is signed (HMAC-SHA256) with a sub-key of the data key
(``Keyring.mac``). Someone with write access to the database but not to the key file cannot
write an anchor that matches a re-chained log; an unsigned anchor is refused whenever a key
is configured. Someone who holds the key file *and* the database can still defeat both: keep
the key off the database host (``trust.key_file`` on another mount, or a secret manager), and
ship anchors off-host too (``scribe audit anchor --file /mnt/worm/…`` appends there).

File format: one JSON object per line; the last complete line is the anchor. The automatic
anchor (``trust.audit_anchor_file``, default ``<data_dir>/keys/audit.anchor``) is one line,
replaced atomically (temporary file, fsync, rename), mode 0600. An explicit ``--file`` is
appended to (WORM-friendly; a torn last line from a crash is ignored).

This module is the pure record logic plus its file I/O and the service's scheduler
(:class:`AnchorKeeper`); what an anchor is checked against lives in ``AuditLog``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError

from .crypto import Keyring, UnknownKeyId
from .ports import Anchors, StoreCalls

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

ANCHOR_NAME = "audit.anchor"
FORMAT_VERSION = 1
FILE_MODE = 0o600


class AnchorUnreadable(ValueError):
    """The anchor file exists but holds no well-formed anchor."""


class AnchorRecord(BaseModel):
    """One anchor: the chain reached ``seq`` with hash ``hash`` at time ``at``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = FORMAT_VERSION
    seq: int
    hash: str
    at: str
    kid: str | None = None
    """Id of the key whose MAC sub-key signed it (None: unsigned, written without a key)."""
    mac: str | None = None

    def body(self) -> bytes:
        """The signed bytes: every field but ``mac``, sorted, compact."""
        fields = self.model_dump(exclude={"mac"}, exclude_none=True)
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def line(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), sort_keys=True) + "\n"


def anchor_file(settings: Settings) -> Path:
    """``trust.audit_anchor_file``, else ``<data_dir>/keys/audit.anchor`` (beside the keys,
    apart from the database, in the 0700 keys directory)."""
    configured = settings.trust.audit_anchor_file
    return Path(configured).expanduser() if configured else Path(settings.data_dir) / "keys" / ANCHOR_NAME


def make_anchor(seq: int, digest: str, at: str, keyring: Keyring | None) -> AnchorRecord:
    record = AnchorRecord(seq=seq, hash=digest, at=at)
    if keyring is None:
        return record
    signed = record.model_copy(update={"kid": keyring.primary_id})
    return signed.model_copy(update={"mac": keyring.mac(signed.body())[1]})


def check_signature(record: AnchorRecord, keyring: Keyring | None) -> str | None:
    """None if the record may be trusted as far as signatures go, else the reason:
    ``anchor_unsigned`` (a key is configured, so an anchor must be signed),
    ``anchor_key_unknown`` (signed with a key that is not configured), ``anchor_forged``."""
    if keyring is None:
        return None  # nothing to check with (a bare store): the position checks still apply
    if not record.mac or not record.kid:
        return "anchor_unsigned"
    try:
        return None if keyring.check_mac(record.kid, record.body(), record.mac) else "anchor_forged"
    except UnknownKeyId:
        return "anchor_key_unknown"


def parse_anchor(text: str) -> AnchorRecord:
    """The last complete line of an anchor file. A last line without its newline is a torn
    append (a crash mid-write) and is skipped; any other malformed line is an error."""
    lines = text.split("\n")
    complete = [ln for ln in lines[:-1] if ln.strip()]  # lines[-1] is "" or a torn line
    if not complete:
        raise AnchorUnreadable("no complete anchor line")
    try:
        return AnchorRecord.model_validate(json.loads(complete[-1]))
    except (ValueError, ValidationError):
        raise AnchorUnreadable("malformed anchor line") from None


def read_anchor_file(path: Path | str) -> AnchorRecord | None:
    """The anchor in ``path``; None when the file does not exist."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnchorUnreadable(f"cannot read it ({type(exc).__name__})") from None
    return parse_anchor(text)


def write_anchor_file(path: Path | str, record: AnchorRecord, *, append: bool = False) -> None:
    """Write ``record`` durably with mode 0600: replace the file atomically, or append a line."""
    p = Path(path)
    if not p.parent.exists():
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = record.line().encode("utf-8")
    if append:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    tmp = p.parent / f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # No fsync of the directory: if a power cut loses the rename, the previous anchor is still
    # there, and an older anchor is still a true statement about the log (it is written only
    # after the entries it names were committed), so it cannot raise a false alarm.


REASON_HELP = {
    "anchor_missing": "there is no anchor, so a cut-off tail cannot be ruled out. On a first run (or the first "
                      "after upgrading) start the service or run 'scribe audit anchor' to anchor the current head",
    "anchor_missing_entry": "the log is shorter than the anchor: its newest entries were truncated",
    "anchor_mismatch": "the entry at the anchored seq differs from the anchored hash: the log was rewritten or "
                       "re-chained",
    "anchor_unsigned": "the anchor is not signed although a key is configured: it was not written by scribe",
    "anchor_forged": "the anchor's signature does not match: it was altered or written without the key",
    "anchor_key_unknown": "the anchor was signed with a key that is not configured (list the old key in "
                          "trust.retired_key_files)",
    "anchor_unreadable": "the anchor file is damaged",
}
"""What each anchor failure means, for ``scribe audit verify`` and the service's log."""

AFTER_INVESTIGATING = ("after investigating (restore the database or the anchor from a backup, or accept the loss), "
                       "'scribe audit anchor --force' anchors the current head and records that it did")


class AnchorKeeper:
    """The service's anchor schedule: once at startup, every ``interval_s`` while it runs
    (entries written by other processes or replicas get anchored too), and once at shutdown.

    ``store`` is the ``AsyncStore`` (``call`` runs on the store's own thread); ``audit`` an
    ``AuditLog`` whose ``anchor_quietly`` never raises. Without an anchor file it does nothing."""

    def __init__(self, store: StoreCalls, audit: Anchors, interval_s: float):
        self.store = store
        self.audit = audit
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return getattr(self.audit, "anchor_file", None) is not None

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="audit-anchor")

    async def _loop(self) -> None:
        while True:
            await self.anchor()
            if self.interval_s <= 0:
                return
            await asyncio.sleep(self.interval_s)

    async def anchor(self) -> None:
        try:
            await self.store.call(self.audit.anchor_quietly)
        except Exception as exc:  # the store is closing, or broken: the next run or the verifier will say
            log.warning("audit anchor skipped", extra={"error": type(exc).__name__})

    async def stop(self) -> None:
        """Stop the schedule and anchor the head one last time."""
        if not self.enabled:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.anchor()


__all__ = [
    "AFTER_INVESTIGATING", "ANCHOR_NAME", "REASON_HELP", "AnchorKeeper", "AnchorRecord", "AnchorUnreadable",
    "anchor_file", "check_signature", "make_anchor", "parse_anchor", "read_anchor_file", "write_anchor_file",
]
