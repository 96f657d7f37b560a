"""A real PostgreSQL (Debian's postgresql-15 binaries) started by the test as a throw-away
cluster, running the *unchanged* audit and token code through a minimal store shim.

This is the evidence behind the PostgreSQL backend proposal in scribe/trust/pg_probe.md:
the component migrations are portable SQL, the audit chain stays linear with several
concurrent writers (an advisory lock replaces SQLite's BEGIN IMMEDIATE), and tampering is
detected the same way. Skipped when the PostgreSQL binaries or psycopg are not installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'psycopg[binary]')")


def _pg_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


PG_BIN = _pg_bin()
pytestmark = pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL server binaries not installed "
                                                        "(apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the 'postgres' system user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    base = Path(tempfile.mkdtemp(prefix="scribe-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", _free_port()
    subprocess.run(_as_owner([str(PG_BIN / "initdb"), "-D", str(data), "-U", "scribe", "--auth=trust", "-E", "UTF8",
                              "--no-locale"]), check=True, capture_output=True, timeout=120)
    subprocess.run(_as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
                              "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]),
                   check=True, capture_output=True, timeout=90)
    try:
        yield f"postgresql://scribe@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       check=False, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


class _Conn:
    """sqlite3-style ``execute`` on a psycopg connection (``?`` placeholders)."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, args=()):
        return self.conn.execute(sql.replace("?", "%s") if args else sql, tuple(args) if args else None)


class PgStore:
    """Just enough of ``scribe.store.Store`` for component repositories: what the proposed
    backend would provide (dialect, db, re-entrant tx, migrate_component)."""

    dialect = "postgresql"

    def __init__(self, url: str):
        self.raw = psycopg.connect(url, autocommit=True)
        self.db = _Conn(self.raw)
        self._tx_depth = 0

    class _Tx:
        def __init__(self, store: PgStore):
            self.store = store

        def __enter__(self):
            if self.store._tx_depth == 0:
                self.store.raw.execute("BEGIN")
            self.store._tx_depth += 1
            return self.store.db

        def __exit__(self, exc_type, exc, tb):
            self.store._tx_depth -= 1
            if self.store._tx_depth == 0:
                self.store.raw.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def tx(self):
        return PgStore._Tx(self)

    def migrate_component(self, component: str, migrations) -> None:
        with self.tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(7307724100)")  # replicas migrating at once
            db.execute("CREATE TABLE IF NOT EXISTS component_versions (component TEXT PRIMARY KEY, "
                       "version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM component_versions WHERE component = ?", (component,)).fetchone()
            current = row[0] if row else 0
            for version in range(current + 1, len(migrations) + 1):
                for statement in migrations[version - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO component_versions (component, version) VALUES (?, ?) ON CONFLICT "
                           "(component) DO UPDATE SET version = excluded.version", (component, version))

    def close(self) -> None:
        self.raw.close()


@pytest.fixture
def pg(pg_url: str) -> Iterator[str]:
    """A fresh database per test."""
    name = f"t{os.urandom(4).hex()}"
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield pg_url.rsplit("/", 1)[0] + "/" + name


def test_audit_chain_on_postgres_with_concurrent_replicas(pg: str) -> None:
    from scribe.trust.audit import AuditLog

    errors: list[BaseException] = []

    def replica(n: int) -> None:
        store = PgStore(pg)
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
    store = PgStore(pg)
    result = AuditLog(store).verify()
    assert result.ok and result.checked == 160 and result.head_seq == 160
    # The append-only guard and tamper detection work the same way.
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        store.db.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 7")
    store.db.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
    store.db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 7")
    result = AuditLog(store).verify()
    assert not result.ok and result.first_bad_seq == 7 and result.reason == "hash_mismatch"
    store.close()


def test_tokens_on_postgres(pg: str) -> None:
    from scribe.trust.audit import AuditLog
    from scribe.trust.tokens import AuthError, Role, TokenStore

    store = PgStore(pg)
    tokens = TokenStore(store, audit=AuditLog(store))
    token, info = tokens.create("dr-a", Role.admin)
    assert tokens.authenticate(token).role is Role.admin
    assert tokens.revoke(info.token_id)
    with pytest.raises(AuthError):
        tokens.authenticate(token)
    dump = str(store.db.execute("SELECT * FROM api_tokens").fetchall())
    assert token not in dump and token.rsplit("_", 1)[1] not in dump
    assert [e.action for e in AuditLog(store).entries()] == ["token_created", "token_revoked", "login_failed"]
    store.close()
