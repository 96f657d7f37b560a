"""The database seam under ``Store``: one connection, SQLite or PostgreSQL, chosen by a URL.

Not an ORM. The store and the feature repositories write SQL in the subset the two engines
share (``?`` placeholders, ``ON CONFLICT … DO UPDATE``, ``TEXT``/``INTEGER``/``REAL``/``BLOB``
columns) and talk to an object with the surface of ``sqlite3.Connection`` that they already
use: ``execute(sql, params)`` returning a cursor (``fetchone``/``fetchall``/``rowcount``,
iterable), ``executemany``, ``in_transaction``. What differs sits here:

* ``connect(url_or_path)``: ``sqlite:///abs/path``, ``sqlite:///:memory:``, a bare path (a
  SQLite file, as before) or ``postgresql://user@host:port/db?sslmode=…``.
* ``begin_write()``: SQLite ``BEGIN IMMEDIATE`` (one writer at a time for the whole file);
  PostgreSQL ``BEGIN`` (READ COMMITTED). There is no file-wide write lock on PostgreSQL, so
  read-modify-write code serialises explicitly: ``lock(key)`` (a transaction-scoped advisory
  lock; a no-op on SQLite, where ``BEGIN IMMEDIATE`` already serialises) and ``SELECT … FOR
  UPDATE`` (``for_update`` is ``" FOR UPDATE"`` on PostgreSQL, ``""`` on SQLite).
* placeholders: ``?`` → ``%s`` and ``:name`` → ``%(name)s`` (and a literal ``%`` → ``%%``),
  translated once per SQL string and cached.
* ``ddl(statement)``: migrations are written once, with SQLite's type names; on PostgreSQL
  they map to the same value ranges (``INTEGER`` is 64-bit in SQLite → ``BIGINT``, ``REAL`` is
  a double → ``DOUBLE PRECISION``, ``BLOB`` → ``BYTEA``, ``INTEGER PRIMARY KEY AUTOINCREMENT``
  → an identity column).
* ``table_columns(table)``: ``PRAGMA table_info`` vs ``information_schema.columns``.

For SQLite, ``Store.db`` stays the ``sqlite3.Connection`` itself (``SqliteDatabase.raw``), so
the embedded default behaves exactly as it did before this seam existed.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

log = logging.getLogger(__name__)

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


class DatabaseURLError(ValueError):
    """The database setting is neither a path nor a supported URL; the message says what is."""


def parse_target(url_or_path: str | Path) -> tuple[str, str]:
    """``(dialect, target)``: a SQLite file path (or ``:memory:``) or a PostgreSQL conninfo URL."""
    if isinstance(url_or_path, Path):
        return SQLITE, str(url_or_path)
    text = str(url_or_path).strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if not scheme:
        return SQLITE, text
    if scheme == "sqlite":
        rest = text.split("://", 1)[1]
        # sqlite:///relative.db -> "relative.db"; sqlite:////abs/x.db -> "/abs/x.db" (SQLAlchemy's
        # convention); sqlite:///:memory: -> ":memory:".
        path = rest.removeprefix("/")
        if not path:
            raise DatabaseURLError("a sqlite URL needs a path: sqlite:////var/lib/scribe/scribe.db")
        return SQLITE, path
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        return POSTGRESQL, "postgresql://" + text.split("://", 1)[1]
    raise DatabaseURLError(
        f"unsupported database URL scheme {scheme!r}: use a file path, sqlite:///PATH or postgresql://USER@HOST/DB"
    )


def redact(url: str) -> str:
    """The URL without its passwords (for messages and ``scribe config``): the one in the user
    info (``postgresql://u:PW@h/db``) and any query parameter naming a password
    (``?password=PW``, ``sslpassword=PW``; libpq accepts both spellings)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[-1]}"
    query = "&".join(_redact_param(p) for p in parts.query.split("&")) if parts.query else ""
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_param(param: str) -> str:
    key, sep, _ = param.partition("=")
    return f"{key}=***" if sep and "password" in unquote_plus(key).lower() else param


# --------------------------------------------------------------------------- SQL translation

_IDENT_START = re.compile(r"[A-Za-z_]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@lru_cache(maxsize=2048)
def to_pyformat(sql: str) -> str:
    """SQLite parameter style → psycopg's: ``?`` → ``%s``, ``:name`` → ``%(name)s``, ``%`` → ``%%``.

    Quote-aware for ``?`` and ``:name`` (a ``?`` inside a string literal or a quoted identifier
    stays as is); ``%`` is doubled everywhere because psycopg's own parser does not look at
    quotes. ``::`` (a PostgreSQL cast) is left alone."""
    out: list[str] = []
    i, n = 0, len(sql)
    quote: str | None = None
    while i < n:
        c = sql[i]
        if c == "%":
            out.append("%%")
        elif quote is not None:
            out.append(c)
            if c == quote:
                quote = None
        elif c in ("'", '"'):
            quote = c
            out.append(c)
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
            continue
        elif c == "?":
            out.append("%s")
        elif c == ":" and i + 1 < n and sql[i + 1] == ":":
            out.append("::")
            i += 2
            continue
        elif c == ":" and i + 1 < n and _IDENT_START.match(sql[i + 1]) and (i == 0 or sql[i - 1] != ":"):
            m = _IDENT.match(sql, i + 1)
            assert m is not None
            out.append(f"%({m.group(0)})s")
            i = m.end()
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


_DDL = re.compile(r"^\s*(CREATE\s+TABLE|ALTER\s+TABLE)\b", re.IGNORECASE)
_TYPE_MAP = (
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", re.IGNORECASE),
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.IGNORECASE), "BIGINT"),
    (re.compile(r"\bREAL\b", re.IGNORECASE), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.IGNORECASE), "BYTEA"),
)


@lru_cache(maxsize=512)
def pg_ddl(statement: str) -> str:
    """A ``CREATE TABLE``/``ALTER TABLE`` written with SQLite type names, in PostgreSQL's types
    of the same range (other statements unchanged). Why: SQLite's ``INTEGER`` is 64-bit and its
    ``REAL`` a double; PostgreSQL's are 32-bit and single precision, which would silently
    truncate sample positions and round segment times."""
    if not _DDL.match(statement):
        return statement
    for pattern, replacement in _TYPE_MAP:
        statement = pattern.sub(replacement, statement)
    return statement


# --------------------------------------------------------------------------- connections


SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")
PRIVATE_FILE_MODE = 0o600


def _create_private(path: str) -> None:
    """Create a new database file as 0600 before SQLite opens it: SQLite gives the -wal and
    -shm files the main file's mode, so they are private from their first byte too (a umask
    would be process-wide, and racy with other threads)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    except OSError:
        return  # an unwritable place: sqlite3 reports it with its own, clearer error
    os.close(fd)


def private_files(path: str | Path) -> None:
    """Make an existing database file and its side files 0600 (they hold PHI, and a database
    from before this check may be 0644). A file owned by someone else is left alone, with a
    warning naming it (paths are not PHI)."""
    for suffix in SQLITE_SIDE_FILES:
        p = Path(str(path) + suffix)
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
            if mode & 0o077:
                os.chmod(p, mode & 0o700)  # group and others lose every bit
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot make %s private (mode 0600): %s", p, exc.strerror)


class SqliteDatabase:
    """The embedded default: one file, WAL, ``synchronous=FULL``, foreign keys on."""

    dialect = SQLITE
    for_update = ""

    def __init__(self, path: str, timeout: float):
        self.target = path
        if path != ":memory:":
            _create_private(path)
        self.raw = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout)
        self.raw.execute("PRAGMA journal_mode=WAL")
        self.raw.execute("PRAGMA synchronous=FULL")
        self.raw.execute("PRAGMA foreign_keys=ON")
        if path != ":memory:":
            private_files(path)
        self.execute = self.raw.execute
        self.executemany = self.raw.executemany

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    def begin_write(self) -> None:
        self.raw.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK")

    def lock(self, key: str) -> None:
        """No-op: ``BEGIN IMMEDIATE`` already holds the file's single write lock."""

    def ddl(self, statement: str) -> str:
        return statement

    def table_columns(self, table: str) -> list[str]:
        return [row[1] for row in self.raw.execute(f'PRAGMA table_info("{table}")').fetchall()]

    def close(self) -> None:
        self.raw.close()

    def describe(self) -> str:
        return self.target


class PostgresDatabase:
    """A psycopg 3 connection in autocommit mode with explicit ``BEGIN``/``COMMIT``, so the
    store's transaction code is the same for both engines.

    One connection per ``Store`` (the store runs on one thread); if the server drops it between
    transactions (a restart, a failover) the next statement reconnects once instead of failing
    forever. Inside a transaction a lost connection is an error: what was written is gone."""

    dialect = POSTGRESQL
    for_update = " FOR UPDATE"

    def __init__(self, url: str, timeout: float):
        try:
            import psycopg
        except ImportError:
            raise DatabaseURLError(
                "a postgresql:// database needs the psycopg driver: pip install 'scribe[postgres]' "
                "(psycopg[binary] 3)"
            ) from None
        self._psycopg = psycopg
        self.target = url
        self.timeout = timeout
        self.raw = self._connect()

    def _connect(self):
        conn = self._psycopg.connect(self.target, autocommit=True, connect_timeout=max(1, int(self.timeout)),
                                     application_name="scribe")
        # A stuck lock surfaces as an error after the busy timeout, as on SQLite.
        conn.execute(f"SET lock_timeout = '{int(self.timeout * 1000)}ms'")
        return conn

    def _ensure(self) -> None:
        if (self.raw.closed or self.raw.broken) and not self.in_transaction:
            log.warning("database connection lost; reconnecting")
            self.raw = self._connect()

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR,
                                                    TransactionStatus.ACTIVE)

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None):
        self._ensure()
        args: Any = params if isinstance(params, Mapping) else tuple(params or ())
        return self.raw.execute(to_pyformat(sql), args)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]):
        self._ensure()
        cur = self.raw.cursor()
        cur.executemany(to_pyformat(sql), [p if isinstance(p, Mapping) else tuple(p) for p in seq])
        return cur

    def begin_write(self) -> None:
        self._ensure()
        self.raw.execute("BEGIN")

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK")

    def lock(self, key: str) -> None:
        """Serialise writers on ``key`` until this transaction ends (``pg_advisory_xact_lock``)."""
        self.raw.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))

    def ddl(self, statement: str) -> str:
        return pg_ddl(statement)

    def table_columns(self, table: str) -> list[str]:
        rows = self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self.raw.close()

    def describe(self) -> str:
        return redact(self.target)


Database = SqliteDatabase | PostgresDatabase


def connect(url_or_path: str | Path, *, timeout: float = 10.0) -> Database:
    """Open the database named by ``url_or_path`` (see the module docstring)."""
    dialect, target = parse_target(url_or_path)
    if dialect == POSTGRESQL:
        return PostgresDatabase(target, timeout)
    return SqliteDatabase(target, timeout)


def is_conflict(exc: BaseException) -> bool:
    """A PostgreSQL serialization failure or deadlock: the transaction can simply be run again."""
    return getattr(exc, "sqlstate", None) in ("40001", "40P01")


__all__ = [
    "POSTGRESQL", "SQLITE", "Database", "DatabaseURLError", "PostgresDatabase", "SqliteDatabase", "connect",
    "is_conflict", "parse_target", "pg_ddl", "redact", "to_pyformat",
]
