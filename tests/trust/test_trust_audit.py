"""Audit trail: hash chain, tamper detection (edit, delete, reorder, truncation with an
anchor), transactions, PHI refusal, export and the CLI."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from scribe.store import Store
from scribe.trust.audit import (
    GENESIS,
    Action,
    AuditError,
    AuditLog,
    check_detail,
    parse_export,
    verify_entries,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "scribe.db")
    yield s
    s.close()


def fill(audit: AuditLog, n: int = 6) -> None:
    for i in range(n):
        audit.record(f"dr-{i % 2}", Action.read if i % 2 else Action.create, "encounter", f"enc-{i}",
                     detail={"segments": i})


def tamper(db_path: Path, *sql: tuple[str, tuple]) -> None:
    """What an attacker with write access to the file does: drop the guards, change rows."""
    con = sqlite3.connect(db_path)
    con.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    con.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    for statement, args in sql:
        con.execute(statement, args)
    con.commit()
    con.close()


def reopened(db_path: Path) -> AuditLog:
    return AuditLog(Store(db_path))


def test_chain_links_and_verifies(store: Store) -> None:
    audit = AuditLog(store)
    first = audit.record("dr-a", "create", "encounter", "enc-1", detail={"frames": 0})
    second = audit.record("dr-a", Action.read, "transcript", "enc-1")
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    assert first.expected_hash() == first.hash
    result = audit.verify()
    assert result.ok and result.checked == 2 and result.head_seq == 2 and result.head_hash == second.hash


def test_empty_log_verifies(store: Store) -> None:
    result = AuditLog(store).verify()
    assert result.ok and result.checked == 0 and result.head_hash == GENESIS


def test_update_and_delete_refused_through_sql(store: Store) -> None:
    audit = AuditLog(store)
    fill(audit, 2)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("DELETE FROM audit_log WHERE seq = 2")
    assert audit.verify().ok


@pytest.mark.parametrize("column,value", [("actor", "dr-mallory"), ("action", "delete"), ("object_id", "enc-99"),
                                          ("outcome", "denied"), ("detail", '{"segments":99}'),
                                          ("at", "2020-01-01T00:00:00.000000+00:00")])
def test_edited_entry_detected(store: Store, column: str, value: str) -> None:
    fill(AuditLog(store), 6)
    tamper(store.path, (f"UPDATE audit_log SET {column} = ? WHERE seq = 4", (value,)))
    result = reopened(store.path).verify()
    assert not result.ok and result.first_bad_seq == 4 and result.reason == "hash_mismatch"


def test_edit_with_recomputed_hash_breaks_the_next_link(store: Store) -> None:
    audit = AuditLog(store)
    fill(audit, 6)
    e = next(x for x in audit.entries() if x.seq == 3)
    forged = e.model_copy(update={"actor": "dr-mallory"})
    forged = forged.model_copy(update={"hash": forged.expected_hash()})
    tamper(store.path, ("UPDATE audit_log SET actor = ?, hash = ? WHERE seq = 3", (forged.actor, forged.hash)))
    result = reopened(store.path).verify()
    assert not result.ok and result.first_bad_seq == 4 and result.reason == "chain_break"


def test_removed_entry_detected(store: Store) -> None:
    fill(AuditLog(store), 6)
    tamper(store.path, ("DELETE FROM audit_log WHERE seq = 3", ()))
    result = reopened(store.path).verify()
    assert not result.ok and result.first_bad_seq == 3 and result.reason == "gap"


def test_removed_and_renumbered_detected(store: Store) -> None:
    """Close the gap by renumbering: the seq is hashed, so the renumbered row no longer matches."""
    fill(AuditLog(store), 6)
    tamper(store.path, ("DELETE FROM audit_log WHERE seq = 3", ()),
           ("UPDATE audit_log SET seq = seq - 1 WHERE seq > 3", ()))
    result = reopened(store.path).verify()
    assert not result.ok and result.first_bad_seq == 3


def test_reordered_entries_detected(store: Store) -> None:
    """Swap two entries' positions (their seq numbers)."""
    fill(AuditLog(store), 6)
    tamper(store.path, ("UPDATE audit_log SET seq = -1 WHERE seq = 2", ()),
           ("UPDATE audit_log SET seq = 2 WHERE seq = 5", ()),
           ("UPDATE audit_log SET seq = 5 WHERE seq = -1", ()))
    result = reopened(store.path).verify()
    assert not result.ok and result.first_bad_seq == 2


def test_reordered_contents_detected(store: Store) -> None:
    """Swap two entries' contents, seq numbers left in place."""
    audit = AuditLog(store)
    fill(audit, 6)
    rows = {e.seq: e for e in audit.entries()}
    a, b = rows[2], rows[3]
    upd = "UPDATE audit_log SET actor = ?, action = ?, object_id = ?, detail = ?, prev_hash = ?, hash = ? WHERE seq = ?"
    tamper(store.path,
           (upd, (b.actor, b.action, b.object_id, json.dumps(b.detail), b.prev_hash, b.hash, 2)),
           (upd, (a.actor, a.action, a.object_id, json.dumps(a.detail), a.prev_hash, a.hash, 3)))
    result = reopened(store.path).verify()
    assert not result.ok and result.first_bad_seq == 2


def test_unparseable_row_detected(store: Store) -> None:
    fill(AuditLog(store), 3)
    tamper(store.path, ("UPDATE audit_log SET detail = 'not json' WHERE seq = 2", ()))
    result = reopened(store.path).verify()
    assert not result.ok and result.first_bad_seq == 2 and result.reason == "bad_row"


def test_truncation_undetected_without_anchor_detected_with(store: Store, tmp_path: Path) -> None:
    audit = AuditLog(store)
    fill(audit, 5)
    anchor = tmp_path / "elsewhere" / "audit.anchor"
    assert audit.anchor(anchor) == audit.head()
    assert (anchor.stat().st_mode & 0o777) == 0o600
    fill(audit, 2)  # entries after the anchor
    assert audit.verify(anchor=anchor).ok
    tamper(store.path, ("DELETE FROM audit_log WHERE seq >= 4", ()))
    after = reopened(store.path)
    assert after.verify().ok, "documented limit: a cut tail is consistent without an anchor"
    result = after.verify(anchor=anchor)
    assert not result.ok and result.reason == "anchor_missing_entry" and result.first_bad_seq == 4


def test_truncation_after_anchor_is_the_documented_blind_spot(store: Store, tmp_path: Path) -> None:
    audit = AuditLog(store)
    fill(audit, 5)
    anchor = tmp_path / "audit.anchor"
    audit.anchor(anchor)
    fill(audit, 3)
    tamper(store.path, ("DELETE FROM audit_log WHERE seq > 6", ()))
    assert reopened(store.path).verify(anchor=anchor).ok


def test_rewritten_chain_detected_by_anchor(store: Store, tmp_path: Path) -> None:
    """An attacker rebuilds a whole consistent chain with different content."""
    audit = AuditLog(store)
    fill(audit, 4)
    anchor = tmp_path / "audit.anchor"
    audit.anchor(anchor)
    other = Store(tmp_path / "forged.db")
    forged = AuditLog(other)
    for i in range(4):
        forged.record("dr-mallory", Action.read, "encounter", f"enc-{i}")
    other.close()
    con = sqlite3.connect(store.path)
    con.execute("DROP TRIGGER audit_log_no_delete")
    con.execute("DELETE FROM audit_log")
    con.execute("ATTACH ? AS f", (str(tmp_path / "forged.db"),))
    con.execute("INSERT INTO audit_log SELECT * FROM f.audit_log")
    con.commit()
    con.close()
    after = reopened(store.path)
    assert after.verify().ok
    result = after.verify(anchor=anchor)
    assert not result.ok and result.reason == "anchor_mismatch" and result.first_bad_seq == 4


def test_garbled_anchor_file_fails_verification(store: Store, tmp_path: Path) -> None:
    fill(AuditLog(store), 2)
    anchor = tmp_path / "a"
    anchor.write_text("{nope\n")
    result = AuditLog(store).verify(anchor=anchor)
    assert not result.ok and result.reason == "anchor_unreadable"


def test_record_joins_caller_transaction(store: Store) -> None:
    audit = AuditLog(store)
    audit.record("dr-a", "create", "encounter", "enc-1")
    with pytest.raises(RuntimeError), store.tx() as db:
        db.execute("CREATE TABLE scratch (x)")
        audit.record("dr-a", "update", "encounter", "enc-1")
        raise RuntimeError("the change failed")
    assert [e.seq for e in audit.entries()] == [1]
    assert store.db.execute("SELECT name FROM sqlite_master WHERE name = 'scratch'").fetchone() is None
    with store.tx():
        audit.record("dr-a", "update", "encounter", "enc-1")
        audit.record("dr-a", "sign", "note", "enc-1")
    assert [e.action for e in audit.entries()] == ["create", "update", "sign"]
    assert audit.verify().ok


def test_two_connections_do_not_fork_the_chain(store: Store) -> None:
    """Two processes on one file: BEGIN IMMEDIATE serialises head reads and appends."""
    other = Store(store.path)
    a, b = AuditLog(store), AuditLog(other)
    for i in range(10):
        (a if i % 2 else b).record("dr-a", "read", "encounter", f"enc-{i}")
    other.close()
    result = a.verify()
    assert result.ok and result.head_seq == 10


@pytest.mark.parametrize("detail", [
    {"patient": "Patient/123"},
    {"patient_ref": "x"},
    {"first_name": "Ann"},
    {"text": "chest pain"},
    {"reason": "patient said chest pain"},  # free text (spaces)
    {"code": "x" * 129},
    {"nested": {"a": 1}},
    {"list": [1, 2]},
    {"Bad-Key": 1},
    {"n": float("nan")},
])
def test_phi_and_free_text_refused(store: Store, detail: dict) -> None:
    audit = AuditLog(store)
    with pytest.raises(AuditError) as exc:
        audit.record("dr-a", "read", "encounter", "enc-1", detail=detail)
    for value in detail.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(exc.value), "the error must not echo the refused value"
    assert list(audit.entries()) == []


@pytest.mark.parametrize("field,value", [("actor", "Dr Ann Smith"), ("object_id", "John Doe"), ("object_type", "Encounter X"),
                                         ("action", "peek"), ("outcome", "maybe")])
def test_bad_fields_refused(store: Store, field: str, value: str) -> None:
    args = {"actor": "dr-a", "action": "read", "object_type": "encounter", "object_id": "enc-1", "outcome": "success"}
    args[field] = value
    with pytest.raises((AuditError, ValueError)):
        AuditLog(store).record(**args)


def test_naive_time_refused(store: Store) -> None:
    with pytest.raises(AuditError):
        AuditLog(store).record("dr-a", "read", "encounter", "e", at=datetime(2026, 1, 1))


def test_export_range_and_reverify(store: Store) -> None:
    audit = AuditLog(store)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(10):
        audit.record("dr-a", "read", "encounter", f"enc-{i}", at=t0 + timedelta(hours=i))
    lines = list(audit.export(t0 + timedelta(hours=3), t0 + timedelta(hours=7)))
    entries = parse_export(lines)
    assert [e.seq for e in entries] == [4, 5, 6, 7]
    first = entries[0]
    assert verify_entries(entries, start_seq=first.seq, start_hash=first.prev_hash).ok
    # A recipient detects an edited line.
    bad = json.loads(lines[2])
    bad["actor"] = "dr-b"
    lines[2] = json.dumps(bad)
    result = verify_entries(parse_export(lines), start_seq=first.seq, start_hash=first.prev_hash)
    assert not result.ok and result.first_bad_seq == 6
    # Out of order in an export.
    swapped = parse_export([lines[0], lines[3], lines[1]])
    assert not verify_entries(swapped, start_seq=4, start_hash=first.prev_hash).ok


def test_record_is_fast_enough_to_compose() -> None:
    """Not a timing test: an entry is found by object for the review screens."""
    s = Store(":memory:")
    audit = AuditLog(s)
    audit.record("dr-a", "read", "encounter", "enc-1")
    audit.record("dr-a", "read", "encounter", "enc-2")
    assert [e.object_id for e in audit.for_object("encounter", "enc-2")] == ["enc-2"]
    s.close()


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(min_value=2, max_value=12), data=st.data())
def test_any_single_field_edit_is_detected(tmp_path_factory, n: int, data) -> None:
    path = tmp_path_factory.mktemp("fz") / "a.db"
    s = Store(path)
    audit = AuditLog(s)
    for i in range(n):
        audit.record(f"dr-{i}", "read", "encounter", f"enc-{i}", detail={"i": i})
    s.close()
    seq = data.draw(st.integers(min_value=1, max_value=n))
    column = data.draw(st.sampled_from(["actor", "action", "object_type", "object_id", "outcome", "at", "detail",
                                        "prev_hash", "hash"]))
    con = sqlite3.connect(path)
    old = con.execute(f"SELECT {column} FROM audit_log WHERE seq = ?", (seq,)).fetchone()[0]
    con.close()
    new = data.draw(st.text(alphabet="abcdef0123456789", min_size=1, max_size=70).filter(lambda v: v != old))
    if column == "detail":
        new = json.dumps({"i": new})
    tamper(path, (f"UPDATE audit_log SET {column} = ? WHERE seq = ?", (new, seq)))
    s = Store(path)
    result = AuditLog(s).verify()
    s.close()
    assert not result.ok
    # Editing a hash is seen at that entry or (prev_hash link) at the next one.
    assert result.first_bad_seq in (seq, seq + 1)


def test_check_detail_keeps_codes() -> None:
    assert check_detail({"rows": 3, "reason": "retention", "ok": True, "ratio": 0.5, "none": None}) == {
        "rows": 3, "reason": "retention", "ok": True, "ratio": 0.5, "none": None}


def test_cli_verify_export_anchor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from scribe.cli import main

    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    s = Store(tmp_path / "data" / "scribe.db")
    fill(AuditLog(s), 4)
    s.close()
    anchor = tmp_path / "anchor"
    assert main(["audit", "anchor", "--file", str(anchor)]) == 0
    assert main(["audit", "verify", "--anchor", str(anchor)]) == 0
    out = tmp_path / "export.jsonl"
    assert main(["audit", "export", "-o", str(out), "--actor", "privacy-office"]) == 0
    assert len(out.read_text().splitlines()) == 4
    capsys.readouterr()
    # The export itself is audited.
    s = Store(tmp_path / "data" / "scribe.db")
    last = list(AuditLog(s).entries())[-1]
    s.close()
    assert (last.action, last.actor, last.object_type, last.detail["entries"]) == ("export", "privacy-office",
                                                                                   "audit_log", 4)
    tamper(tmp_path / "data" / "scribe.db", ("DELETE FROM audit_log WHERE seq = 2", ()))
    assert main(["audit", "verify"]) == 1
    assert "seq 2" in capsys.readouterr().err
    assert main(["audit", "verify", "--anchor", str(tmp_path / "missing")]) == 2
