"""Store: component migrations and re-entrant transactions."""

from __future__ import annotations

import pytest

from scribe.store import Store, StoreError

pytest_plugins = ["pg_support"]  # store_url: each test on SQLite and on PostgreSQL


def test_component_migrations_apply_once_and_refuse_newer(store_url):
    store = Store(store_url)
    migrations = ["CREATE TABLE a (x INTEGER)", "ALTER TABLE a ADD COLUMN y TEXT"]
    store.migrate_component("demo", migrations)
    store.migrate_component("demo", migrations)  # idempotent
    store.db.execute("INSERT INTO a (x, y) VALUES (1, 'z')")
    with pytest.raises(StoreError, match="newer than this scribe"):
        store.migrate_component("demo", migrations[:1])
    store.close()


def test_nested_tx_commits_once_and_rolls_back_together(store_url):
    store = Store(store_url)
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


def test_audio_from_reads_exact_ranges(store_url):
    import numpy as np

    from scribe.models import Consent

    store = Store(store_url)
    store.open_encounter("e1", clinician_id="c", patient_ref="Patient/1", language="en", sample_rate=16_000,
                         consent=Consent(given=True))
    pcm = (np.arange(1000, dtype="<i2")).tobytes()  # frames of 100 samples, values = sample index
    store.append_frames("e1", [(i, pcm[i * 200:(i + 1) * 200]) for i in range(10)])
    whole = store.audio_from("e1", 0)
    assert len(whole) == 1000
    part = store.audio_from("e1", 150, 420)
    assert len(part) == 270
    assert round(part[0] * 32768) == 150 and round(part[-1] * 32768) == 419
    assert len(store.audio_from("e1", 990)) == 10
    assert len(store.audio_from("e1", 500, 500)) == 0
    assert len(store.audio_from("e1", 2000)) == 0
    store.close()
