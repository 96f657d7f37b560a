"""Per-clinician API tokens, stored hashed, with a role; and who may see which encounter.

Why hashed: a stolen copy of the database (a backup, a disk) must not hand out working
credentials. Tokens are 256-bit random values, so one SHA-256 (keyed with an optional server
pepper) is enough; a slow password hash would only add latency to every request. The public
part (``token_id``) locates the row, the digest is compared in constant time.

Token format: ``scr_<token_id>_<secret>`` (``token_id`` 10 hex characters, ``secret`` 43
base64url characters). The token is shown once, at creation; it cannot be recovered later.

Scoping (minimum necessary): a clinician sees only encounters they recorded; an admin sees
all. :func:`can_access` is the one place that rule lives.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..models import utcnow
from .audit import Action, AuditLog, Outcome, as_code
from .ports import TrustStore

MIGRATIONS: list[str] = [
    """
    CREATE TABLE api_tokens (
        token_id TEXT PRIMARY KEY,
        digest TEXT NOT NULL,
        clinician_id TEXT NOT NULL,
        role TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        revoked_at TEXT
    );
    CREATE INDEX api_tokens_by_clinician ON api_tokens (clinician_id)
    """,
]

_TOKEN = re.compile(r"^scr_([0-9a-f]{10})_([A-Za-z0-9_-]{43})$")
_CLINICIAN = re.compile(r"^[A-Za-z0-9_.:@/+=-]{1,128}$")
_DEFAULT_PEPPER = b"scribe-api-token-v1"
_LAST_USED_RESOLUTION = timedelta(minutes=5)
"""``last_used_at`` is refreshed at most this often, so authentication is not a write per request."""


class Role(StrEnum):
    clinician = "clinician"
    admin = "admin"


class Principal(BaseModel):
    """Who is calling, as established by a token."""

    model_config = ConfigDict(frozen=True)

    clinician_id: str
    role: Role
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin


class TokenInfo(BaseModel):
    """What ``scribe tokens list`` shows: never the token or its digest."""

    token_id: str
    clinician_id: str
    role: Role
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class AuthError(Exception):
    """Authentication failed. ``code`` is stable (``missing``, ``malformed``, ``unknown``,
    ``revoked``); the message never contains the presented token."""

    def __init__(self, code: str):
        super().__init__(f"authentication failed: {code}")
        self.code = code


class AccessDenied(Exception):
    def __init__(self, principal: Principal, object_id: str):
        super().__init__(f"{principal.clinician_id} may not access {object_id}")
        self.principal = principal
        self.object_id = object_id


def can_access(principal: Principal, encounter: Any) -> bool:
    """True if ``principal`` may read or change ``encounter`` (anything with ``clinician_id``):
    its own clinician, or an admin."""
    if principal.role is Role.admin:
        return True
    owner = encounter.get("clinician_id") if isinstance(encounter, dict) else getattr(encounter, "clinician_id", None)
    return isinstance(owner, str) and hmac.compare_digest(owner.encode(), principal.clinician_id.encode())


def token_id_of(token: str) -> str | None:
    """The public id inside a well-formed token (safe to log and audit), else None."""
    m = _TOKEN.match(token or "")
    return m.group(1) if m else None


class TokenStore:
    """API tokens in the store (component ``tokens``).

    ``pepper``: an optional server-side secret mixed into every digest (HMAC-SHA256), so the
    database alone is not even enough to test a guessed token offline. Changing it invalidates
    every token. ``audit``: when given, failures and token management are audited.
    """

    COMPONENT = "tokens"

    def __init__(self, store: TrustStore, *, pepper: bytes | None = None, audit: AuditLog | None = None):
        self.store = store
        self._pepper = pepper or _DEFAULT_PEPPER
        self.audit = audit
        store.migrate_component(self.COMPONENT, MIGRATIONS)

    def _digest(self, token: str) -> str:
        return hmac.new(self._pepper, token.encode("utf-8"), hashlib.sha256).hexdigest()

    # -- management

    def create(self, clinician_id: str, role: Role | str = Role.clinician, label: str = "", *,
               actor: str = "system") -> tuple[str, TokenInfo]:
        """Create a token; returns ``(token, info)``. The token is not stored and cannot be shown again."""
        role = Role(role)
        if not _CLINICIAN.match(clinician_id or ""):
            raise ValueError("clinician id must be 1-128 of A-Z a-z 0-9 _ . : @ / + = -")
        if len(label) > 200:
            raise ValueError("label must be at most 200 characters")
        token_id = secrets.token_hex(5)
        token = f"scr_{token_id}_{secrets.token_urlsafe(32)}"
        now = utcnow()
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO api_tokens (token_id, digest, clinician_id, role, label, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, self._digest(token), clinician_id, role.value, label, now.isoformat()),
            )
            if self.audit:
                self.audit.record(actor, Action.token_created, "api_token", token_id, Outcome.success,
                                  {"role": role.value, "clinician": clinician_id})
        return token, TokenInfo(token_id=token_id, clinician_id=clinician_id, role=role, label=label,
                                created_at=now, last_used_at=None, revoked_at=None)

    def list(self, clinician_id: str | None = None, include_revoked: bool = True) -> list[TokenInfo]:
        sql = "SELECT token_id, clinician_id, role, label, created_at, last_used_at, revoked_at FROM api_tokens"
        where, args = [], []
        if clinician_id:
            where.append("clinician_id = ?")
            args.append(clinician_id)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.store.db.execute(sql + " ORDER BY created_at, token_id", args).fetchall()
        return [TokenInfo(token_id=r[0], clinician_id=r[1], role=Role(r[2]), label=r[3],
                          created_at=datetime.fromisoformat(r[4]),
                          last_used_at=datetime.fromisoformat(r[5]) if r[5] else None,
                          revoked_at=datetime.fromisoformat(r[6]) if r[6] else None) for r in rows]

    def revoke(self, token_id: str, *, actor: str = "system") -> bool:
        """Revoke by public id (a token string is accepted too). False if unknown or already revoked."""
        token_id = token_id_of(token_id) or token_id
        with self.store.tx() as db:
            cur = db.execute("UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                             (utcnow().isoformat(), token_id))
            done = cur.rowcount == 1
            if self.audit and done:
                self.audit.record(actor, Action.token_revoked, "api_token", token_id, Outcome.success)
        return done

    # -- authentication

    def authenticate(self, token: str | None, *, source: str | None = None) -> Principal:
        """The principal a token stands for; raises :class:`AuthError` (audited as
        ``login_failed`` with the reason code and, if parseable, the public token id)."""
        try:
            return self._authenticate(token)
        except AuthError as exc:
            if self.audit:
                detail: dict[str, Any] = {"reason": exc.code}
                if source and as_code(source, "") == source:
                    detail["source"] = source
                self.audit.record("anonymous", Action.login_failed, "api_token",
                                  token_id_of(token or "") or "none", Outcome.denied, detail)
            raise

    def _authenticate(self, token: str | None) -> Principal:
        if not token:
            raise AuthError("missing")
        m = _TOKEN.match(token)
        if not m:
            raise AuthError("malformed")
        token_id = m.group(1)
        row = self.store.db.execute(
            "SELECT digest, clinician_id, role, revoked_at, last_used_at FROM api_tokens WHERE token_id = ?",
            (token_id,),
        ).fetchone()
        # Compare against a dummy digest when the id is unknown so both paths cost the same.
        stored = row[0] if row else "0" * 64
        if not hmac.compare_digest(stored, self._digest(token)) or row is None:
            raise AuthError("unknown")
        if row[3] is not None:
            raise AuthError("revoked")
        now = utcnow()
        if row[4] is None or now - datetime.fromisoformat(row[4]) > _LAST_USED_RESOLUTION:
            with self.store.tx() as db:
                db.execute("UPDATE api_tokens SET last_used_at = ? WHERE token_id = ?", (now.isoformat(), token_id))
        return Principal(clinician_id=row[1], role=Role(row[2]), token_id=token_id)

    def require_access(self, principal: Principal, encounter: Any, *, action: Action | str = Action.read) -> None:
        """Raise :class:`AccessDenied` (and audit ``access_denied``) unless :func:`can_access`."""
        if can_access(principal, encounter):
            return
        eid = encounter.get("id") if isinstance(encounter, dict) else getattr(encounter, "id", "unknown")
        if self.audit:
            self.audit.record(principal.clinician_id, Action.access_denied, "encounter", str(eid), Outcome.denied,
                              {"attempted": Action(action).value})
        raise AccessDenied(principal, str(eid))
