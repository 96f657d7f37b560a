"""Consent gate, withdrawal purge and retention purge against the real store tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from scribe.database import DRAFTS_TABLE, WITHDRAWAL_TABLES
from scribe.models import Consent, EncounterStatus, Segment
from scribe.store import Store
from scribe.trust.audit import AuditLog
from scribe.trust.consent import (
    ConsentError,
    ConsentPolicy,
    ConsentReason,
    ConsentRecord,
    apply_withdrawal,
    purge_expired,
    validate_consent,
    withdrawal_plan,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GOOD = {"given": True, "given_by": "patient", "method": "verbal", "at": NOW - timedelta(minutes=3),
        "recorded_by": "dr-a"}
AUDIO_MARK = b"\x7fSCRIBE-AUDIO-MARK\x7f" * 40


# --------------------------------------------------------------------------- the gate (pure)


def test_complete_consent_accepted() -> None:
    rec = validate_consent(GOOD, now=NOW)
    assert isinstance(rec, ConsentRecord) and rec.given_by == "patient"
    assert validate_consent(ConsentRecord(**GOOD), now=NOW) == rec


@pytest.mark.parametrize("change,reason,missing", [
    (None, ConsentReason.missing, ()),
    ({"given": False}, ConsentReason.not_given, ()),
    ({"given": "yes"}, ConsentReason.not_given, ()),
    ({"given_by": None}, ConsentReason.incomplete, ("given_by",)),
    ({"method": "unspecified"}, ConsentReason.incomplete, ("method",)),
    ({"recorded_by": "  "}, ConsentReason.incomplete, ("recorded_by",)),
    ({"at": None, "recorded_by": None}, ConsentReason.incomplete, ("at", "recorded_by")),
    ({"method": "telepathy"}, ConsentReason.invalid, ("method",)),
    ({"given_by": "neighbour"}, ConsentReason.invalid, ("given_by",)),
    ({"at": "yesterday-ish"}, ConsentReason.invalid, ("at",)),
    ({"at": datetime(2026, 6, 1, 11, 58)}, ConsentReason.invalid, ("at",)),  # naive
    ({"at": NOW + timedelta(hours=1)}, ConsentReason.future, ("at",)),
    ({"at": NOW - timedelta(days=3)}, ConsentReason.stale, ("at",)),
])
def test_refusals_say_what_is_wrong(change, reason: ConsentReason, missing: tuple) -> None:
    consent = None if change is None else {**GOOD, **change}
    with pytest.raises(ConsentError) as exc:
        validate_consent(consent, now=NOW)
    assert exc.value.reason is reason and exc.value.code == "consent_required"
    assert exc.value.missing == missing


def test_small_clock_skew_tolerated_and_policy_configurable() -> None:
    validate_consent({**GOOD, "at": NOW + timedelta(minutes=2)}, now=NOW)
    with pytest.raises(ConsentError):
        validate_consent({**GOOD, "at": NOW - timedelta(hours=2)}, now=NOW, policy=ConsentPolicy(max_age=timedelta(hours=1)))


def test_todays_protocol_consent_is_not_enough() -> None:
    """scribe.models.Consent lacks ``given_by`` (and the CLI sends no ``at``): the gate says so."""
    with pytest.raises(ConsentError) as exc:
        validate_consent(Consent(given=True, method="verbal", recorded_by="dr-a", at=NOW), now=NOW)
    assert exc.value.reason is ConsentReason.incomplete and exc.value.missing == ("given_by",)


@hsettings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["given", "given_by", "method", "at", "recorded_by", "extra"]),
                       st.one_of(st.none(), st.booleans(), st.text(max_size=20), st.integers(), st.datetimes(
                           timezones=st.just(UTC)))))
def test_fuzzed_consents_never_crash(data) -> None:
    try:
        rec = validate_consent(data, now=NOW)
    except ConsentError as exc:
        assert exc.code == "consent_required" and isinstance(exc.reason, ConsentReason)
    else:
        assert rec.given is True and NOW - rec.at <= timedelta(hours=24)


# --------------------------------------------------------------------------- store fixtures


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "scribe.db")
    yield s
    s.close()


def make_encounter(store: Store, eid: str, created: datetime, frames: int = 3, segments: int = 2,
                   status: EncounterStatus = EncounterStatus.recording) -> None:
    store.open_encounter(eid, clinician_id="dr-a", patient_ref="Patient/1", language="en", sample_rate=16000,
                         consent=Consent(given=True, method="verbal", recorded_by="dr-a"))
    store.append_frames(eid, [(i, AUDIO_MARK) for i in range(frames)])
    store.commit_segments(eid, [Segment(id=Segment.make_id(i), index=i, start=i, end=i + 1, text="chest pain")
                                for i in range(segments)], 16000 * segments)
    with store.tx() as db:
        db.execute("UPDATE encounters SET created_at = ?, updated_at = ?, status = ? WHERE id = ?",
                   (created.isoformat(), created.isoformat(), status.value, eid))


def make_notes_table(store: Store) -> None:
    """Stand-in for the notes component's table (its schema is not final): versions of drafts."""
    store.migrate_component("notes_test", ["""
        CREATE TABLE note_versions (encounter_id TEXT NOT NULL, version INTEGER NOT NULL, created_at TEXT NOT NULL,
                            data TEXT NOT NULL, PRIMARY KEY (encounter_id, version))
    """])


def add_note(store: Store, eid: str, version: int, created: datetime) -> None:
    with store.tx() as db:
        db.execute("INSERT INTO note_versions VALUES (?, ?, ?, ?)", (eid, version, created.isoformat(), '{"draft": 1}'))


def count(store: Store, table: str, eid: str) -> int:
    return store.db.execute(f"SELECT count(*) FROM {table} WHERE encounter_id = ?", (eid,)).fetchone()[0]


def on_disk(store: Store) -> bytes:
    data = b""
    for suffix in ("", "-wal"):
        p = Path(str(store.path) + suffix)
        if p.exists():
            data += p.read_bytes()
    return data


# --------------------------------------------------------------------------- withdrawal


def test_withdrawal_deletes_audio_transcript_drafts_keeps_audit(store: Store) -> None:
    audit = AuditLog(store)
    make_notes_table(store)
    make_encounter(store, "enc-w", NOW)
    make_encounter(store, "enc-keep", NOW)
    add_note(store, "enc-w", 1, NOW)
    add_note(store, "enc-keep", 1, NOW)
    assert AUDIO_MARK in on_disk(store)
    counts = apply_withdrawal(store, audit, "enc-w", tables=WITHDRAWAL_TABLES, actor="dr-a")
    # the record pass's tables (none of its rows here) are withdrawn too
    assert counts == {"frames": 3, "segments": 2, "record_segments": 0, "record_pass": 0, "note_versions": 1}
    assert (count(store, "frames", "enc-w"), count(store, "segments", "enc-w"), count(store, "note_versions", "enc-w")) == (0, 0, 0)
    assert (count(store, "frames", "enc-keep"), count(store, "segments", "enc-keep")) == (3, 2)
    assert store.get_encounter("enc-w").status in (EncounterStatus.failed, getattr(EncounterStatus, "withdrawn", None))
    trail = audit.for_object("encounter", "enc-w")
    assert [e.action for e in trail] == ["consent_withdrawn"]
    deletes = {e.object_type: e.detail["rows"] for e in audit.entries() if e.action == "delete"}
    assert deletes == {"frames": 3, "segments": 2, "record_segments": 0, "record_pass": 0, "note_versions": 1}
    assert audit.verify().ok


def test_withdrawn_audio_bytes_leave_the_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "scribe.db")
    audit = AuditLog(store)
    make_encounter(store, "enc-only", NOW, frames=20)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert AUDIO_MARK in on_disk(store)
    apply_withdrawal(store, audit, "enc-only", tables=WITHDRAWAL_TABLES, actor="dr-a")
    assert AUDIO_MARK not in on_disk(store)
    store.close()


def test_withdrawal_after_signature_is_refused_and_audited(store: Store) -> None:
    audit = AuditLog(store)
    make_encounter(store, "enc-s", NOW, status=EncounterStatus.signed)
    assert withdrawal_plan(store.get_encounter("enc-s"), WITHDRAWAL_TABLES).blocked is ConsentReason.withdrawal_after_signature
    with pytest.raises(ConsentError) as exc:
        apply_withdrawal(store, audit, "enc-s", tables=WITHDRAWAL_TABLES, actor="dr-a")
    assert exc.value.reason is ConsentReason.withdrawal_after_signature
    assert count(store, "frames", "enc-s") == 3
    (entry,) = audit.entries()
    assert (entry.action, entry.outcome, entry.detail) == ("consent_withdrawn", "denied",
                                                           {"reason": "withdrawal_after_signature"})


def test_withdrawal_of_unknown_encounter(store: Store) -> None:
    with pytest.raises(KeyError):
        apply_withdrawal(store, AuditLog(store), "enc-nope", tables=WITHDRAWAL_TABLES, actor="dr-a")


# --------------------------------------------------------------------------- retention


def test_purge_expired_audio_and_unsigned_drafts(store: Store) -> None:
    audit = AuditLog(store)
    make_notes_table(store)
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=2)
    make_encounter(store, "enc-old", old)
    make_encounter(store, "enc-old-signed", old, status=EncounterStatus.signed)
    make_encounter(store, "enc-recent", recent)
    add_note(store, "enc-old", 1, old)
    add_note(store, "enc-old", 2, recent)            # a newer draft version survives
    add_note(store, "enc-old-signed", 1, old)        # signed: kept
    add_note(store, "enc-recent", 1, recent)
    report = purge_expired(store, NOW, audio_days=30, draft_days=7, drafts_table=DRAFTS_TABLE, audit=audit)
    assert report.audio == {"enc-old": 3, "enc-old-signed": 3}
    assert report.drafts == {"enc-old": 1}
    assert count(store, "frames", "enc-recent") == 3 and count(store, "frames", "enc-old") == 0
    assert count(store, "segments", "enc-old") == 2, "transcripts are not audio: kept"
    assert count(store, "note_versions", "enc-old") == 1 and count(store, "note_versions", "enc-old-signed") == 1
    purges = [(e.object_type, e.object_id, e.detail["rows"]) for e in audit.entries() if e.action == "purge"]
    assert purges == [("audio", "enc-old", 3), ("audio", "enc-old-signed", 3), ("draft", "enc-old", 1)]
    # Idempotent.
    again = purge_expired(store, NOW, audio_days=30, draft_days=7, drafts_table=DRAFTS_TABLE, audit=audit)
    assert again.frames_deleted == 0 and again.drafts_deleted == 0
    assert audit.verify().ok


def test_purge_dry_run_and_disabled_kinds(store: Store) -> None:
    audit = AuditLog(store)
    make_encounter(store, "enc-old", NOW - timedelta(days=400))
    dry = purge_expired(store, NOW, 30, 7, drafts_table=DRAFTS_TABLE, audit=audit, dry_run=True)
    assert dry.audio == {"enc-old": 3} and count(store, "frames", "enc-old") == 3
    assert dry.notes_skipped == "no notes table"
    off = purge_expired(store, NOW, 0, 0, drafts_table=DRAFTS_TABLE, audit=audit)
    assert off.frames_deleted == 0 and count(store, "frames", "enc-old") == 3
    assert list(audit.entries()) == []


def test_purge_respects_note_status_columns(store: Store) -> None:
    store.migrate_component("notes_test2", ["""
        CREATE TABLE note_versions (id TEXT PRIMARY KEY, encounter_id TEXT NOT NULL, status TEXT NOT NULL,
                            updated_at TEXT NOT NULL)
    """])
    old = NOW - timedelta(days=100)
    make_encounter(store, "enc-x", old, status=EncounterStatus.draft_ready)
    with store.tx() as db:
        db.executemany("INSERT INTO note_versions VALUES (?, 'enc-x', ?, ?)",
                       [("n1", "draft", old.isoformat()), ("n2", "signed", old.isoformat())])
    report = purge_expired(store, NOW, 0, 30, drafts_table=DRAFTS_TABLE, audit=AuditLog(store))
    assert report.drafts == {"enc-x": 1}
    assert [r[0] for r in store.db.execute("SELECT id FROM note_versions")] == ["n2"]


def test_purge_tolerates_a_notes_table_it_cannot_read(store: Store) -> None:
    store.migrate_component("notes_test3", ["CREATE TABLE note_versions (k TEXT PRIMARY KEY, body TEXT)"])
    report = purge_expired(store, NOW, 30, 30, drafts_table=DRAFTS_TABLE, audit=AuditLog(store))
    assert report.notes_skipped == "notes table has no encounter_id column"


def test_without_a_drafts_table_drafts_are_not_purged(store: Store) -> None:
    report = purge_expired(store, NOW, 30, 30, drafts_table=None, audit=AuditLog(store))
    assert report.notes_skipped == "no drafts table" and report.drafts == {}


def test_the_tables_withdrawal_deletes_are_declared_by_their_schemas() -> None:
    """What consent withdrawal deletes is collected from the schemas (scribe/database.py), the
    same tables as when trust/consent.py listed them itself; and it names no feature's table."""
    import inspect

    import scribe.trust.consent as consent

    assert WITHDRAWAL_TABLES == ("frames", "segments", "record_segments", "record_pass", "note_versions",
                                 "review_events")
    assert DRAFTS_TABLE == "note_versions"
    source = inspect.getsource(consent)
    assert "note_versions" not in source and "review_events" not in source


def test_purge_requires_aware_time(store: Store) -> None:
    with pytest.raises(ValueError):
        purge_expired(store, datetime(2026, 1, 1), 30, 30, drafts_table=DRAFTS_TABLE, audit=AuditLog(store))


def test_cli_purge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from scribe.cli import main

    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SCRIBE_TRUST__AUDIO_RETENTION_DAYS", "10")
    s = Store(tmp_path / "data" / "scribe.db")
    make_encounter(s, "enc-old", NOW - timedelta(days=11))
    s.close()
    assert main(["purge", "--now", NOW.isoformat(), "--dry-run"]) == 0
    assert "would delete 3 audio frames from 1 encounters" in capsys.readouterr().out
    assert main(["purge", "--now", NOW.isoformat(), "--actor", "retention-job"]) == 0
    assert "deleted 3 audio frames" in capsys.readouterr().out
    assert main(["purge", "--now", "last tuesday"]) == 2
    s = Store(tmp_path / "data" / "scribe.db")
    assert count(s, "frames", "enc-old") == 0
    (entry,) = AuditLog(s).entries()
    assert (entry.actor, entry.action, entry.object_id) == ("retention-job", "purge", "enc-old")
    s.close()
