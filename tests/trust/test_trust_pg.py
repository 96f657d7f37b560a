"""The audit trail and API tokens on a real PostgreSQL (Debian's postgresql-15 binaries, a
throw-away cluster from ``tests/pg_support.py``) through the real ``Store``: the audit chain
stays linear with several concurrent writers (an advisory lock replaces SQLite's BEGIN
IMMEDIATE), and tampering is detected the same way. Skipped, with the reason, when the
PostgreSQL binaries or psycopg are not installed.
"""

from __future__ import annotations

import threading

import pytest

from scribe.store import Store

pytest_plugins = ["pg_support"]


def test_audit_chain_on_postgres_with_concurrent_replicas(pg_url: str) -> None:
    from scribe.trust.audit import AuditLog

    errors: list[BaseException] = []

    def replica(n: int) -> None:
        store = Store(pg_url)
        try:
            audit = AuditLog(store)
            for i in range(40):
                audit.record(f"replica-{n}", "read", "encounter", f"enc-{n}-{i}", detail={"i": i})
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=replica, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    store = Store(pg_url)
    result = AuditLog(store).verify()
    assert result.ok and result.checked == 160 and result.head_seq == 160
    # The append-only guard and tamper detection work the same way.
    import psycopg

    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        store.db.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 7")
    store.db.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
    store.db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 7")
    result = AuditLog(store).verify()
    assert not result.ok and result.first_bad_seq == 7 and result.reason == "hash_mismatch"
    store.close()


def test_tokens_on_postgres(pg_url: str) -> None:
    from scribe.trust.audit import AuditLog
    from scribe.trust.tokens import AuthError, Role, TokenStore

    store = Store(pg_url)
    tokens = TokenStore(store, audit=AuditLog(store))
    token, info = tokens.create("dr-a", Role.admin)
    assert tokens.authenticate(token).role is Role.admin
    assert tokens.revoke(info.token_id)
    with pytest.raises(AuthError):
        tokens.authenticate(token)
    dump = str(store.db.execute("SELECT * FROM api_tokens").fetchall())
    assert token not in dump and token.split("_", 2)[2] not in dump
    assert [e.action for e in AuditLog(store).entries()] == ["token_created", "token_revoked", "login_failed"]
    store.close()


def test_audit_anchor_on_postgres(pg_url: str, tmp_path) -> None:
    """Issue 12, 5(a): the anchor is written after each commit and checked the same way on
    PostgreSQL; a cut tail fails verification and the next append does not bless it."""
    import json

    from scribe.trust.audit import AuditLog
    from scribe.trust.crypto import Keyring, generate_key

    anchor = tmp_path / "audit.anchor"
    store = Store(pg_url, keyring=Keyring(generate_key()))
    store.audit_anchor_file = anchor
    audit = AuditLog(store)
    for i in range(5):
        audit.record("dr-a", "read", "encounter", f"enc-{i}")
    assert json.loads(anchor.read_text())["seq"] == 5
    assert audit.verify(anchor=anchor).ok
    store.db.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
    store.db.execute("DELETE FROM audit_log WHERE seq = 5")
    result = audit.verify(anchor=anchor)
    assert not result.ok and result.reason == "anchor_missing_entry" and result.first_bad_seq == 5
    audit.record("dr-mallory", "read", "encounter", "enc-x")  # seq 5 again, other content
    assert json.loads(anchor.read_text())["seq"] == 5
    assert audit.verify(anchor=anchor).reason == "anchor_mismatch"
    store.close()
