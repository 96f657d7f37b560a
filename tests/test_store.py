"""Store: component migrations and re-entrant transactions."""

from __future__ import annotations

import pytest

from scribe.store import Store, StoreError


def test_component_migrations_apply_once_and_refuse_newer(tmp_path):
    store = Store(tmp_path / "s.db")
    migrations = ["CREATE TABLE a (x INTEGER)", "ALTER TABLE a ADD COLUMN y TEXT"]
    store.migrate_component("demo", migrations)
    store.migrate_component("demo", migrations)  # idempotent
    store.db.execute("INSERT INTO a (x, y) VALUES (1, 'z')")
    with pytest.raises(StoreError, match="newer than this scribe"):
        store.migrate_component("demo", migrations[:1])
    store.close()


def test_nested_tx_commits_once_and_rolls_back_together(tmp_path):
    store = Store(tmp_path / "s.db")
    store.migrate_component("demo", ["CREATE TABLE a (x INTEGER)"])
    with pytest.raises(RuntimeError):
        with store.tx() as db:
            db.execute("INSERT INTO a VALUES (1)")
            with store.tx() as inner:
                inner.execute("INSERT INTO a VALUES (2)")
            raise RuntimeError("boom")
    assert store.db.execute("SELECT count(*) FROM a").fetchone()[0] == 0
    with store.tx() as db:
        db.execute("INSERT INTO a VALUES (1)")
        with store.tx() as inner:
            inner.execute("INSERT INTO a VALUES (2)")
    assert store.db.execute("SELECT count(*) FROM a").fetchone()[0] == 2
    store.close()
