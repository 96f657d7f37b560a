"""A real PostgreSQL for the tests: Debian's postgresql-15 binaries, one throw-away cluster per
test session (``initdb`` in a temp dir, loopback only, ``fsync=off``), a fresh database per test.

Use it as a plugin: ``pytest_plugins = ["pg_support"]`` in a test module gives the fixtures

* ``pg_cluster`` (session): the running cluster, or a skip naming what is missing;
* ``pg_url`` (function): ``postgresql://…/t<random>``, a new empty database;
* ``store_url`` (function, parametrised ``sqlite`` / ``postgresql``): a SQLite file path or a
  PostgreSQL URL, so one test runs on both backends.

Skipped (with the reason) only when the PostgreSQL server binaries (``apt-get install
postgresql``; ``scripts/dev.sh`` does it) or psycopg (the ``test`` extra) are missing.
As root (containers, CI), ``initdb`` refuses to run, so the cluster runs as the ``postgres``
system user the Debian package creates, via ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


PG_BIN = _pg_bin()


def _missing() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed (pip install -e '.[test]')"
    if PG_BIN is None:
        return "PostgreSQL server binaries not installed (apt-get install postgresql; scripts/dev.sh does it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL as an unprivileged user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the 'postgres' system user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class PgCluster:
    """One running throw-away cluster; ``create_database()`` hands out empty databases."""

    def __init__(self) -> None:
        assert PG_BIN is not None
        self.base = Path(tempfile.mkdtemp(prefix="scribe-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.data = self.base / "data"
        self.port = _free_port()
        self.admin_url = f"postgresql://scribe@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        assert PG_BIN is not None
        subprocess.run(_as_owner([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "scribe", "--auth=trust",
                                  "-E", "UTF8", "--no-locale"]), check=True, capture_output=True, timeout=180)
        subprocess.run(_as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-w",
                                  "-t", "90", "-o", (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                                         "-c fsync=off -c max_connections=200"), "start"]),
                       check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        assert PG_BIN is not None
        subprocess.run(_as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
                       check=False, capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self) -> str:
        import psycopg

        name = f"t{os.urandom(5).hex()}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://scribe@127.0.0.1:{self.port}/{name}"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.base / "log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    cluster = PgCluster()
    try:
        cluster.start()
    except subprocess.CalledProcessError as exc:
        cluster.stop()
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')[-2000:]}") from None
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh, empty database on the session's cluster."""
    return pg_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What ``Store()`` is opened with: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "scribe.db")
    return request.getfixturevalue("pg_url")
