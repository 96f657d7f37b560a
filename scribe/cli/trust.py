"""``scribe audit|keys|tokens|purge``: the privacy office's and the operator's commands.

Each command opens the configured store, does one thing, and records what it did in the
audit log (exports, token changes, rotations and purges are themselves auditable events).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import cli_actor

if TYPE_CHECKING:
    from ..config import Settings
    from ..trust.crypto import Keyring


def _when(text: str | None, what: str) -> datetime | None:
    from .common import UserError

    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{what} must be an ISO date or time, e.g. 2026-01-31 or 2026-01-31T08:00:00+01:00") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _open_store(args: argparse.Namespace):
    from .common import UserError, settings_from_args
    from scribe.store import StoreError
    from scribe.database import open_store

    settings = settings_from_args(args)
    try:
        return settings, open_store(settings)
    except StoreError as exc:
        raise UserError(str(exc)) from None


# --------------------------------------------------------------------------- audit


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Walk the chain and check it reaches the anchor; exit 1 whenever the tail cannot be
    proven (an intact chain with no anchor, or a shorter one, is not "intact")."""
    from .common import UserError, console, err

    from ..trust.anchor import AFTER_INVESTIGATING, REASON_HELP, anchor_file
    from ..trust.audit import AuditLog

    settings, store = _open_store(args)
    try:
        if args.anchor is not None and not Path(args.anchor).exists():
            raise UserError(f"anchor file {args.anchor} does not exist")
        anchor = args.anchor or anchor_file(settings)
        result = AuditLog(store).verify(anchor=anchor)
    finally:
        store.close()
    if args.json:
        console.print_json(result.model_dump_json())
    elif result.ok and result.head_seq == 0:
        console.print("[green]audit log intact[/]: no entries yet (nothing to anchor)")
    elif result.ok:
        newer = result.head_seq - (result.anchored_seq or 0)
        console.print(f"[green]audit log intact[/]: {result.checked} entries, head seq {result.head_seq} "
                      f"hash {result.head_hash}; anchored at seq {result.anchored_seq} ({result.anchored_at})"
                      + (f"; {newer} newer entries not anchored yet" if newer else ""))
    else:
        where = f" at seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        err.print(f"[red]audit log BROKEN[/]{where}: {result.reason} ({result.checked} entries checked; "
                  f"head seq {result.head_seq} hash {result.head_hash})")
        if result.reason in REASON_HELP:
            err.print(f"{REASON_HELP[result.reason]} (anchor {anchor}).")
            if result.reason != "anchor_missing":
                err.print(AFTER_INVESTIGATING + ".")
    return 0 if result.ok else 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from .common import err

    from ..trust.audit import Action, AuditLog, Outcome

    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    _, store = _open_store(args)
    try:
        audit = AuditLog(store)
        n = 0
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
        try:
            for line in audit.export(since, until):
                out.write(line)
                n += 1
        finally:
            if args.output:
                out.close()
        detail: dict[str, Any] = {"entries": n}
        if since:
            detail["since"] = since.date().isoformat()
        if until:
            detail["until"] = until.date().isoformat()
        audit.record(cli_actor(args), Action.export, "audit_log", "range", Outcome.success, detail)
    finally:
        store.close()
    err.print(f"{n} audit entries exported" + (f" to {args.output}" if args.output else ""))
    return 0


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    """Anchor the head: into the configured anchor file (replaced), or appended to ``--file``.
    Refused when the log does not reach that file's anchor, unless ``--force``, which is
    itself audited (``audit_anchor_reset``) before the new anchor is written."""
    from .common import console, err

    from ..trust.anchor import AFTER_INVESTIGATING, REASON_HELP, AnchorUnreadable, read_anchor_file
    from ..trust.audit import Action, AnchorRefused, AuditLog, Outcome

    settings, store = _open_store(args)
    try:
        audit = AuditLog(store, anchor_every=0)
        path = args.file or audit.anchor_file
        append = args.file is not None
        try:
            seq, digest = audit.anchor(path, append=append)
        except AnchorRefused as exc:
            if not args.force:
                err.print(f"[red]not anchored[/]: {exc.reason}: {REASON_HELP.get(exc.reason, '')}. "
                          f"Run 'scribe audit verify'; {AFTER_INVESTIGATING}.")
                return 1
            try:
                old = read_anchor_file(path)
            except AnchorUnreadable:
                old = None
            audit.record(cli_actor(args), Action.audit_anchor_reset, "audit_log", "anchor", Outcome.success,
                         {"reason": exc.reason, "anchored_seq": old.seq if old else None,
                          "head_seq": audit.head()[0]})
            seq, digest = audit.anchor(path, append=append, force=True)
    finally:
        store.close()
    console.print(f"anchored seq {seq} hash {digest} in {path}")
    return 0


# --------------------------------------------------------------------------- keys


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from .common import UserError, console

    from ..trust.crypto import KeyMissing, write_key_file

    try:
        key_id = write_key_file(args.output, overwrite=args.force)
    except KeyMissing as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror}") from None
    console.print(f"new key {key_id} written to {args.output} (mode 0600)")
    console.print("use it with SCRIBE_TRUST__KEY_FILE=" + str(Path(args.output).resolve())
                  + "; when it replaces a key, list the old file in trust.retired_key_files and run "
                    "'scribe keys rotate'")
    return 0


def _keyring(settings: Settings) -> Keyring:
    from .common import UserError

    from ..trust.crypto import KeyMissing, Keyring

    try:
        return Keyring.from_settings(settings)
    except KeyMissing as exc:
        raise UserError(str(exc)) from None


def cmd_keys_show(args: argparse.Namespace) -> int:
    from .common import console, settings_from_args

    ring = _keyring(settings_from_args(args))
    console.print(f"primary {ring.primary_id}")
    for kid in ring.key_ids:
        if kid != ring.primary_id:
            console.print(f"retired {kid}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from .common import UserError, console, settings_from_args
    from scribe.store import EncryptionKeyError, Store, StoreError

    from ..trust.audit import Action, AuditLog, Outcome
    from ..database import ENCRYPTED_COLUMNS
    from ..trust.crypto import CryptoError, retire_rotated_keys, rotate

    settings = settings_from_args(args)
    ring = _keyring(settings)
    try:
        _, store = _open_store(args)
    except UserError as exc:
        # The key check at open refused (an old key is not configured): record the failed
        # attempt in the audit log through a keyless connection (audit rows are not encrypted).
        try:
            plain = Store(settings.database_url or settings.database_path)
        except StoreError:
            raise exc from None
        try:
            AuditLog(plain).record(cli_actor(args), Action.key_rotated, "key", ring.primary_id, Outcome.failed,
                                   {"error": EncryptionKeyError.__name__})
        finally:
            plain.close()
        raise UserError(f"rotation not started: {exc}") from None
    try:
        # Zero the old bytes of every rewritten row (plaintext from before encryption, or
        # ciphertext under the old key) instead of leaving them in free space; checkpoint after
        # so the WAL's copies go too (SQLite: PRAGMA secure_delete).
        store.db.execute("PRAGMA secure_delete = ON")
        try:
            report = rotate(store, ring, ENCRYPTED_COLUMNS, encrypt_plaintext=args.encrypt_plaintext)
        except CryptoError as exc:
            AuditLog(store).record(cli_actor(args), Action.key_rotated, "key", ring.primary_id, Outcome.failed,
                                   {"error": type(exc).__name__})
            raise UserError(f"rotation stopped (rows done so far are committed; fix and run again): {exc}") from None
        # Every registered column is now under the primary key: forget the old ids, so the
        # database refuses to open with an old key alone.
        retired = retire_rotated_keys(store, ring)
        AuditLog(store).record(cli_actor(args), Action.key_rotated, "key", ring.primary_id, Outcome.success,
                               {"rewrapped": report.rewrapped, "encrypted": report.encrypted_plaintext})
        if args.encrypt_plaintext and getattr(store.db, "dialect", "sqlite") == "sqlite":
            # secure_delete zeroes what this rotation frees, not what was freed before
            # encryption was on: a note overwritten by its next version left its old JSON, in
            # clear, in the unused space of a page in use. VACUUM copies only live rows into
            # a new file (one pass; it needs free disk about the database's size).
            store.db.execute("VACUUM")
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    console.print(f"re-encrypted {report.rewrapped} values under {ring.primary_id}; "
                  f"{report.encrypted_plaintext} plaintext values encrypted; {report.already_current} already current"
                  + (f"; skipped (absent): {', '.join(report.skipped_columns)}" if report.skipped_columns else ""))
    if retired:
        console.print(f"no value is under {', '.join(retired)} any more: remove it from trust.retired_key_files, "
                      "then destroy it")
    return 0


# --------------------------------------------------------------------------- tokens


def cmd_tokens_create(args: argparse.Namespace) -> int:
    from .common import UserError, err

    from ..trust.audit import AuditLog
    from ..trust.tokens import Role, TokenStore

    _, store = _open_store(args)
    try:
        tokens = TokenStore(store, audit=AuditLog(store))
        try:
            token, info = tokens.create(args.clinician, Role.admin if args.admin else Role.clinician,
                                        args.label or "", actor=cli_actor(args))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    finally:
        store.close()
    err.print(f"token {info.token_id} for {info.clinician_id} ({info.role.value}); it is shown once, store it now:")
    print(token, flush=True)  # plain: rich would wrap a long token on a narrow terminal
    return 0


def cmd_tokens_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .common import console

    from ..trust.tokens import TokenStore

    _, store = _open_store(args)
    try:
        infos = TokenStore(store).list(args.clinician, include_revoked=not args.active)
    finally:
        store.close()
    if args.json:
        console.print_json(json.dumps([i.model_dump(mode="json") for i in infos]))
        return 0
    table = Table("token id", "clinician", "role", "label", "created", "last used", "revoked")
    for i in infos:
        table.add_row(i.token_id, i.clinician_id, i.role.value, i.label, i.created_at.isoformat(timespec="seconds"),
                      i.last_used_at.isoformat(timespec="seconds") if i.last_used_at else "",
                      i.revoked_at.isoformat(timespec="seconds") if i.revoked_at else "")
    console.print(table)
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    from .common import UserError, console

    from ..trust.audit import AuditLog
    from ..trust.tokens import TokenStore

    _, store = _open_store(args)
    try:
        done = TokenStore(store, audit=AuditLog(store)).revoke(args.token_id, actor=cli_actor(args))
    finally:
        store.close()
    if not done:
        raise UserError(f"no active token {args.token_id} (see 'scribe tokens list')")
    console.print(f"token {args.token_id} revoked")
    return 0


# --------------------------------------------------------------------------- purge


def cmd_purge(args: argparse.Namespace) -> int:
    from .common import console

    from ..models import utcnow
    from ..trust.audit import AuditLog
    from ..database import DRAFTS_TABLE
    from ..trust.consent import purge_expired

    settings, store = _open_store(args)
    now = _when(args.now, "--now") or utcnow()
    audio_days = settings.trust.audio_retention_days if args.audio_days is None else args.audio_days
    draft_days = settings.trust.draft_retention_days if args.draft_days is None else args.draft_days
    try:
        report = purge_expired(store, now, audio_days, draft_days, drafts_table=DRAFTS_TABLE, audit=AuditLog(store),
                               actor=cli_actor(args), dry_run=args.dry_run)
    finally:
        store.close()
    verb = "would delete" if args.dry_run else "deleted"
    console.print(f"{verb} {report.frames_deleted} audio frames from {len(report.audio)} encounters "
                  f"(older than {audio_days:g} days) and {report.drafts_deleted} unsigned drafts from "
                  f"{len(report.drafts)} encounters (older than {draft_days:g} days)"
                  + (f"; drafts not checked: {report.notes_skipped}" if report.notes_skipped else ""))
    return 0


# --------------------------------------------------------------------------- parser


def register(sub: Any) -> None:
    def actor_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--actor", help="who is acting, for the audit log (default cli:<user>)")

    audit = sub.add_parser("audit", help="verify or export the hash-chained audit log",
                           description="The audit log records every access to patient data (ids and codes, no PHI).")
    asub = audit.add_subparsers(dest="audit_cmd", metavar="ACTION", required=True)
    p = asub.add_parser("verify", help="check the hash chain and its anchor; exit 1 if any entry was edited, "
                                       "removed, reordered or cut off the end, or the tail cannot be proven")
    p.add_argument("--anchor", type=Path,
                   help="anchor file (default trust.audit_anchor_file, else <data_dir>/keys/audit.anchor)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_audit_verify)
    p = asub.add_parser("export", help="write entries in a time range as JSON Lines (for the privacy office)")
    p.add_argument("--since", help="from this time (ISO 8601, UTC if no offset), inclusive")
    p.add_argument("--until", help="up to this time, exclusive")
    p.add_argument("-o", "--output", help="file to write (default stdout)")
    actor_arg(p)
    p.set_defaults(func=cmd_audit_export)
    p = asub.add_parser("anchor", help="anchor the current head (seq + hash, signed) outside the database",
                        description="Writes the configured anchor file (the service does this on its own), or "
                                    "appends to --file (e.g. on append-only storage off the host). Refused when the "
                                    "log no longer reaches that anchor.")
    p.add_argument("--file", type=Path, help="append to this file instead of the configured anchor file")
    p.add_argument("--force", action="store_true",
                   help="anchor even though the log does not reach the old anchor (audited); after investigating")
    actor_arg(p)
    p.set_defaults(func=cmd_audit_anchor)

    keys = sub.add_parser("keys", help="encryption keys: generate, show, rotate")
    ksub = keys.add_subparsers(dest="keys_cmd", metavar="ACTION", required=True)
    p = ksub.add_parser("generate", help="write a new random 256-bit key to a file with mode 0600")
    p.add_argument("-o", "--output", type=Path, required=True, help="key file to create")
    p.add_argument("--force", action="store_true", help="overwrite an existing file (loses the old key!)")
    p.set_defaults(func=cmd_keys_generate)
    p = ksub.add_parser("show", help="print the ids of the configured keys (never the keys)")
    p.set_defaults(func=cmd_keys_show)
    p = ksub.add_parser("rotate", help="re-encrypt stored data under the primary key",
                        description="Re-encrypt every value not under the primary key (trust.key_file or "
                                    "SCRIBE_TRUST__KEY). Old keys must be listed in trust.retired_key_files "
                                    "until this has finished.")
    p.add_argument("--encrypt-plaintext", action="store_true",
                   help="also encrypt values stored unencrypted, then rebuild the SQLite file (VACUUM: needs "
                        "free disk about its size) so text freed before encryption leaves it too")
    actor_arg(p)
    p.set_defaults(func=cmd_keys_rotate)

    tokens = sub.add_parser("tokens", help="per-clinician API tokens: create, list, revoke")
    tsub = tokens.add_subparsers(dest="tokens_cmd", metavar="ACTION", required=True)
    p = tsub.add_parser("create", help="create a token (printed once; stored only as a hash)")
    p.add_argument("--clinician", required=True, help="clinician id the token acts as")
    p.add_argument("--admin", action="store_true", help="admin role: may see every clinician's encounters")
    p.add_argument("--label", help="a note for operators, e.g. the device it is for (no patient data)")
    actor_arg(p)
    p.set_defaults(func=cmd_tokens_create)
    p = tsub.add_parser("list", help="list tokens (ids and roles; never the tokens)")
    p.add_argument("--clinician", help="only this clinician's")
    p.add_argument("--active", action="store_true", help="hide revoked tokens")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tokens_list)
    p = tsub.add_parser("revoke", help="revoke a token by its id")
    p.add_argument("token_id", help="token id from 'scribe tokens list'")
    actor_arg(p)
    p.set_defaults(func=cmd_tokens_revoke)

    p = sub.add_parser("purge", help="delete audio and unsigned drafts past retention",
                       description="Delete audio frames of encounters older than trust.audio_retention_days and "
                                   "unsigned drafts older than trust.draft_retention_days; each deletion is audited.")
    p.add_argument("--audio-days", type=float, help="override trust.audio_retention_days (0 = keep)")
    p.add_argument("--draft-days", type=float, help="override trust.draft_retention_days (0 = keep)")
    p.add_argument("--now", help="reference time (ISO 8601; default now)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    actor_arg(p)
    p.set_defaults(func=cmd_purge)
