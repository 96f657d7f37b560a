"""Encryption at rest, wired into the real store: a real encounter through the real server
leaves no transcript word, note sentence, clinician-typed reason or stretch of audio in the
database files; everything reads back through the API; rotation, wrong keys, the default key
file and rows written before encryption was turned on.

The byte searches are checked against a control (the same data written with encryption off
is found), so "nothing found" means encrypted, not "searched wrongly".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import stat
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from conftest import SAMPLES, TOKEN, start_server
from pydantic import SecretStr
from review_support import CLINICIAN, flagged_note, sample_segments, seed_encounter

from scribe.audio import FileSource, float_to_pcm16
from scribe.client import StreamClient
from scribe.config import Settings
from scribe.fhir.outbox import Outbox
from scribe.models import Consent, EncounterStatus, Note
from scribe.notes import draft
from scribe.notes.repo import NoteRepo
from scribe.protocol import StartMessage
from scribe.review.models import FlagResolution, SignRequest
from scribe.review.service import ReviewService
from scribe.database import ENCRYPTED_COLUMNS
from scribe.store import EncryptionKeyError, Store
from scribe.database import open_store
from scribe.trust.crypto import (
    Keyring,
    envelope_key_id,
    key_id_for,
    open_text,
    read_key_file,
    write_key_file,
)

pytestmark = pytest.mark.timeout(600)
pytest_plugins = ["pg_support"]  # store_url: SQLite and PostgreSQL

JFK = SAMPLES / "general_jfk.flac"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REASON_MARKER = "Quokkaverified at triage by the nurse"
"""A clinician-typed reason (stored in review_events.reason): must not be on disk in clear."""


def db_bytes(path: Path) -> bytes:
    """The database file and its WAL/SHM side files, as one byte string."""
    out = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(str(path) + suffix)
        if p.exists():
            out += p.read_bytes()
    return out


def as_pcm(samples) -> bytes:
    """Exact inverse of the store's int16 -> float conversion."""
    return np.round(samples * 32768.0).astype("<i2").tobytes()


def words_of(text: str, min_len: int = 6) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text) if len(w) >= min_len}


def bigrams(text: str) -> set[str]:
    """Consecutive word pairs ("your country"): short words are only searched in context."""
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", text)]
    return {f"{a} {b}" for a, b in itertools.pairwise(words) if len(a) + len(b) >= 7}


_OPAQUE = re.compile(rb"[A-Za-z0-9_=+/-]{40,}")
"""A run of base64 (an encrypted text value, or a piece of one split over SQLite overflow pages):
no plaintext is ever inside one, and lower-cased it holds any six-letter word by chance often
enough to fail a run now and then (a CI run found "couple" in the ciphertext that way)."""


def found_words(blob: bytes, words: set[str]) -> set[str]:
    """The words of ``words`` that ``blob`` holds as text (case-insensitive), outside base64 runs."""
    low = _OPAQUE.sub(b" ", blob).lower()
    return {w for w in words if w.encode() in low}


def pcm_stretch(samples, start_s: float = 3.0, n_bytes: int = 256) -> bytes:
    pcm = float_to_pcm16(samples)
    i = int(start_s * 16_000) * 2
    stretch = pcm[i:i + n_bytes]
    assert len(set(stretch)) > 20, "pick a stretch of actual speech, not silence"
    return stretch


def clean_note(encounter_id: str):
    return draft(sample_segments(), encounter_id=encounter_id)


def keyed_settings(tmp_path: Path, key_file: Path | None = None, retired: list[Path] | None = None) -> Settings:
    s = Settings(data_dir=tmp_path / "data")
    s.server.tokens = [SecretStr(TOKEN)]
    s.trust.key_file = key_file
    s.trust.retired_key_files = list(retired or [])
    return s


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    for var in ("SCRIBE_TRUST__KEY", "SCRIBE_TRUST__KEY_FILE", "SCRIBE_TRUST__RETIRED_KEY_FILES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def seed_everything(store: Store, eid: str = "enc-seed") -> dict[str, object]:
    """One encounter with audio, transcript, a draft, review events (with a typed reason), a
    signature and a retraction reason: a value in every encrypted column."""
    segs = sample_segments()
    seed_encounter(store, eid, status=EncounterStatus.draft_ready, segments=segs)
    # a record-pass window over the first sample only: a row in record_segments, the live
    # segments stay the transcript
    store.commit_record_window(eid, 0, [segs[0].model_copy(update={"id": "rec-00000", "index": 0})], 1)
    pcm = bytes(range(256)) * 8
    store.append_frames(eid, [(0, pcm), (1, pcm[::-1])])
    repo = NoteRepo(store)
    outbox = Outbox(store, targets=["directory"])
    service = ReviewService(store, repo, outbox)
    service.save_generated(eid, flagged_note(eid, segs), actor="scribe")
    first = True
    while True:  # resolve every flag: the first by an edit (before/after text), the rest with a reason
        view = service.draft(eid)
        open_flag = next(((s.id, i) for sec in view.note.sections for s in sec.sentences
                          for i, f in enumerate(s.flags) if not f.resolved), None)
        if open_flag is None:
            break
        req = (FlagResolution(base_version=view.version, sentence_id=open_flag[0], flag=open_flag[1],
                              resolution="edited", text="Reports intermittent cramping on the left side.")
               if first else
               FlagResolution(base_version=view.version, sentence_id=open_flag[0], flag=open_flag[1],
                              resolution="accepted", reason=REASON_MARKER))
        service.resolve(eid, req, CLINICIAN)
        first = False
    view = service.draft(eid)
    signed = service.sign(eid, SignRequest(version=view.version, confirm=True), CLINICIAN).signed
    outbox.retract(signed.id, CLINICIAN, reason=REASON_MARKER)
    import numpy as np

    from scribe.diarize.profiles import ProfileRepository, SpeakerProfile

    if store.keyring is not None:  # a voiceprint (biometric data) is never stored in clear
        ProfileRepository(store).save(SpeakerProfile.from_embedding(
            CLINICIAN, "resemblyzer-0.1.4", np.linspace(0, 1, 256, dtype=np.float32), speech_seconds=30.0, windows=40))
    return {"segments": segs, "pcm": pcm, "note": view.note, "signature": signed.id, "eid": eid}


def read_everything(store: Store, eid: str = "enc-seed") -> dict[str, object]:
    repo = NoteRepo(store)
    outbox = Outbox(store, targets=["directory"])
    service = ReviewService(store, repo, outbox)
    return {
        "segments": [s.text for s in store.segments(eid)],
        "audio": as_pcm(store.audio_from(eid, 0)),
        "notes": [v.note.model_dump_json() for v in repo.versions(eid)],
        "events": [(e.action, e.before, e.after, e.reason) for e in service.events(eid)],
        "signed": [s.note.model_dump_json() for s in outbox.signed(eid)],
        "retract_reason": [open_text(store.keyring, r[1], "delivery_signatures", "retract_reason", (r[0],))
                           for r in store.db.execute("SELECT id, retract_reason FROM delivery_signatures "
                                                     "WHERE encounter_id = ?", (eid,))],
    }


def column_key_ids(store: Store) -> set[str | None]:
    ids: set[str | None] = set()
    for col in ENCRYPTED_COLUMNS:
        for (value,) in store.db.execute(f'SELECT "{col.column}" FROM "{col.table}" WHERE "{col.column}" IS NOT NULL'):
            ids.add(envelope_key_id(value))
    return ids


# ---------------------------------------------------------------------- the real encounter


async def test_real_encounter_leaves_no_plaintext_on_disk(settings: Settings, recognizer, tmp_path: Path) -> None:
    settings.fhir.out_dir = tmp_path / "ehr-out"
    # A second encounter with a flagged draft, seeded through the keyed store, reviewed and
    # signed through the API below: review reasons, edits and the signed note all hit disk.
    store = open_store(settings)
    seed_encounter(store, "enc-ready", status=EncounterStatus.draft_ready,
                   note=flagged_note("enc-ready", sample_segments()))
    store.close()

    server = await start_server(settings, recognizer)
    source = FileSource(JFK, speed=0)
    try:
        start = StartMessage(encounter_id="enc-jfk", clinician_id="dr-test", patient_ref="Patient/p1",
                             sample_rate=16_000, consent=Consent.recorded_now("dr-test"))
        transcript = await StreamClient(server.url, start, token=TOKEN).run(source.chunks())
        assert {"country", "fellow"} <= words_of(transcript.text, 5), transcript.text
        async with aiohttp.ClientSession(base_url=server.http, headers=AUTH) as http:
            async with http.get("/v1/encounters/enc-jfk/transcript") as r:
                assert r.status == 200
                served = await r.json()
            note_text = await _review_and_sign(http)
            jfk_draft = await _wait_draft(http, "enc-jfk")
    finally:
        await server.stop()

    served_texts = [s["text"] for s in (served["segments"] if isinstance(served, dict) else served)]
    assert served_texts == [s.text for s in transcript.segments]

    raw = db_bytes(settings.database_path)
    assert len(raw) > 100_000
    secrets = (words_of(transcript.text, 5) | bigrams(transcript.text) | words_of(note_text)
               | bigrams(note_text) | {"quokkaverified"})
    assert not found_words(raw, secrets), "PHI in clear in the database files"
    assert pcm_stretch(source.samples) not in raw, "raw audio in clear in the database files"

    # Read back through the store with its key: same transcript, same audio, same notes.
    store = open_store(settings)
    try:
        assert [s.text for s in store.transcript("enc-jfk")] == [s.text for s in transcript.segments]
        assert as_pcm(store.audio_from("enc-jfk", 0)) == float_to_pcm16(source.samples)
        if jfk_draft is not None:
            assert NoteRepo(store).latest("enc-jfk") == Note.model_validate(jfk_draft)
        events = ReviewService(store, NoteRepo(store), Outbox(store, targets=["directory"])).events("enc-ready")
        assert any(e.reason == REASON_MARKER for e in events)
        assert column_key_ids(store) == {store.keyring.primary_id}, "every PHI value is under the data key"
    finally:
        store.close()
    # Without the key the same rows are refused with a clear error, never returned as garbage.
    keyless = Store(settings.database_path)
    try:
        with pytest.raises(EncryptionKeyError, match="opened without a key"):
            keyless.segments("enc-jfk")
    finally:
        keyless.close()


async def _wait_draft(http: aiohttp.ClientSession, eid: str, tries: int = 600) -> dict | None:
    for _ in range(tries):
        async with http.get(f"/v1/review/encounters/{eid}/draft") as r:
            body = await r.json()
            if r.status == 200 and body.get("version") and body.get("note"):
                return body["note"]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no draft for {eid}")


async def _review_and_sign(http: aiohttp.ClientSession) -> str:
    """Resolve every open flag of enc-ready (accept with a typed reason, or edit), sign it;
    returns the text of the signed note's sentences."""
    for _ in range(50):
        async with http.get("/v1/review/encounters/enc-ready/draft") as r:
            view = await r.json()
        open_flag = next(((s, i) for sec in view["note"]["sections"] for s in sec["sentences"]
                          for i, f in enumerate(s["flags"]) if not f["resolved"]), None)
        if open_flag is None:
            break
        sentence, index = open_flag
        async with http.post("/v1/review/encounters/enc-ready/flags/resolve",
                             json={"base_version": view["version"], "sentence_id": sentence["id"], "flag": index,
                                   "resolution": "accepted", "reason": REASON_MARKER, "actor": CLINICIAN}) as r:
            assert r.status == 200, await r.text()
    async with http.post("/v1/review/encounters/enc-ready/sign",
                         json={"version": view["version"], "confirm": True, "actor": CLINICIAN}) as r:
        assert r.status == 200, await r.text()
        signed = await r.json()
    return " ".join(s["text"] for sec in signed["signed"]["note"]["sections"] for s in sec["sentences"])


def test_the_byte_search_finds_plaintext_when_encryption_is_off(tmp_path: Path) -> None:
    """Control for the searches above: the same kinds of rows written without a key are found."""
    store = Store(tmp_path / "plain.db")
    seeded = seed_everything(store)
    store.close()
    raw = db_bytes(tmp_path / "plain.db")
    text = " ".join(s.text for s in seeded["segments"])
    assert found_words(raw, words_of(text)) == words_of(text)
    assert seeded["pcm"][:256] in raw
    assert b"quokkaverified" in raw.lower() and b"intermittent cramping" in raw


def test_every_encrypted_column_is_encrypted(tmp_path: Path) -> None:
    settings = keyed_settings(tmp_path)
    store = open_store(settings)
    seeded = seed_everything(store)
    ids = column_key_ids(store)
    assert ids == {store.keyring.primary_id}
    # every registered column actually holds a value here (so the check above covers each one)
    for col in ENCRYPTED_COLUMNS:
        n = store.db.execute(f'SELECT count(*) FROM "{col.table}" WHERE "{col.column}" IS NOT NULL').fetchone()[0]
        assert n, f"{col.table}.{col.column} not exercised"
    back = read_everything(store)
    assert back["segments"] == [s.text for s in seeded["segments"]]
    assert back["audio"] == seeded["pcm"] + seeded["pcm"][::-1]
    assert back["signed"] == [seeded["note"].model_dump_json()]
    assert back["retract_reason"] == [REASON_MARKER]
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    raw = db_bytes(settings.database_path)
    assert not found_words(raw, words_of(" ".join(back["segments"])) | {"quokkaverified", "intermittent"})


# ---------------------------------------------------------------------- keys


def test_default_key_is_created_beside_the_data_with_a_warning(tmp_path: Path, caplog) -> None:
    settings = keyed_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="scribe.trust.at_rest"):
        store = open_store(settings)
    key_file = settings.data_dir / "keys" / "data.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert store.keyring.primary_id == key_id_for(read_key_file(key_file))
    assert any("stolen disk" in r.getMessage() for r in caplog.records)
    assert read_key_file(key_file).hex() not in caplog.text
    seed_everything(store)
    first = store.keyring.primary_id
    store.close()
    caplog.clear()
    again = open_store(settings)
    assert again.keyring.primary_id == first and not caplog.records, "reused silently"
    assert read_everything(again)["segments"]
    again.close()


def test_losing_the_default_key_is_a_clear_error_not_a_new_key(tmp_path: Path) -> None:
    settings = keyed_settings(tmp_path)
    store = open_store(settings)
    seed_everything(store)
    kid = store.keyring.primary_id
    store.close()
    key_file = settings.data_dir / "keys" / "data.key"
    key_file.unlink()
    with pytest.raises(EncryptionKeyError, match="missing") as exc:
        open_store(settings)
    assert kid in str(exc.value)
    assert not key_file.exists(), "no fresh key is made up for a database that needs the old one"


def test_wrong_key_fails_at_open_naming_both_key_ids(tmp_path: Path, monkeypatch, capsys) -> None:
    right, wrong = tmp_path / "right.key", tmp_path / "wrong.key"
    right_id, wrong_id = write_key_file(right), write_key_file(wrong)
    store = open_store(keyed_settings(tmp_path, right))
    seed_everything(store)
    store.close()

    with pytest.raises(EncryptionKeyError) as exc:
        open_store(keyed_settings(tmp_path, wrong))
    message = str(exc.value)
    assert right_id in message and wrong_id in message and "retired_key_files" in message

    # The server refuses to start (a ValueError: `scribe serve` prints it as one line, exit 2).
    from scribe.service import Engine, StreamServer

    bad = keyed_settings(tmp_path, wrong)
    with pytest.raises(ValueError, match=right_id):
        StreamServer(bad, engine=Engine(bad, recognizer=object()))

    # A CLI command that opens the store: one clear line, exit 2.
    from scribe.cli import main

    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SCRIBE_TRUST__KEY_FILE", str(wrong))
    assert main(["audit", "verify"]) == 2
    err = capsys.readouterr().err
    assert right_id in err and "wrong encryption key" in err

    # The right key still opens it: nothing was changed by the failed attempts.
    store = open_store(keyed_settings(tmp_path, right))
    assert read_everything(store)["segments"] == [s.text for s in sample_segments()]
    store.close()


def test_rotation_keeps_everything_readable_and_retires_the_old_key(tmp_path: Path, monkeypatch, capsys) -> None:
    from scribe.cli import main

    old, new = tmp_path / "old.key", tmp_path / "new.key"
    old_id, new_id = write_key_file(old), write_key_file(new)
    store = open_store(keyed_settings(tmp_path, old))
    seed_everything(store)
    before = read_everything(store)
    store.close()

    # New primary without the old key: refused at open, naming the old key id.
    with pytest.raises(EncryptionKeyError, match=old_id):
        open_store(keyed_settings(tmp_path, new))

    # Step 2 of the procedure: new primary, old retired — everything reads, new writes use new.
    mixed = open_store(keyed_settings(tmp_path, new, [old]))
    assert read_everything(mixed) == before
    mixed.close()

    # Step 3: `scribe keys rotate` re-encrypts every registered column under the new key.
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SCRIBE_TRUST__KEY_FILE", str(new))
    monkeypatch.setenv("SCRIBE_TRUST__RETIRED_KEY_FILES", f'["{old}"]')
    assert main(["keys", "rotate"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"re-encrypted (\d+) values", out) and old_id in out

    # Step 4: the old key is gone from the config; the new key alone reads everything.
    store = open_store(keyed_settings(tmp_path, new))
    assert column_key_ids(store) == {new_id}
    assert read_everything(store) == before
    store.close()
    # The old key alone can no longer open the database (clear error, names the new key id).
    with pytest.raises(EncryptionKeyError) as exc:
        open_store(keyed_settings(tmp_path, old))
    assert new_id in str(exc.value)
    # ... and cannot decrypt a single value even if one bypassed the check.
    raw_store = Store(keyed_settings(tmp_path).database_path)
    value = raw_store.db.execute("SELECT data FROM segments LIMIT 1").fetchone()[0]
    from scribe.trust.crypto import UnknownKeyId, aad_for

    with pytest.raises(UnknownKeyId):
        Keyring(read_key_file(old)).decrypt_text(value, aad_for("segments", "data", ("enc-seed", 0)))
    raw_store.close()


def test_plaintext_rows_from_before_encryption_read_only_when_migrating_and_rotate_encrypts_them(
        tmp_path: Path, monkeypatch, capsys) -> None:
    from scribe.store import CorruptRow

    settings = keyed_settings(tmp_path)
    legacy = Store(settings.database_path)  # encryption off: every value in clear
    seeded = seed_everything(legacy, "enc-old")
    legacy.close()
    plain_words = words_of(" ".join(s.text for s in seeded["segments"]))
    assert found_words(db_bytes(settings.database_path), plain_words)

    key = tmp_path / "k.key"
    kid = write_key_file(key)
    # With a key, a value in clear is refused (it could have been written around scribe) ...
    store = open_store(keyed_settings(tmp_path, key))
    with pytest.raises(CorruptRow, match="not encrypted.*accept_plaintext_rows"):
        store.segments("enc-old")
    store.close()
    # ... unless the operator says the database is being migrated.
    migrating = keyed_settings(tmp_path, key)
    migrating.trust.accept_plaintext_rows = True
    store = open_store(migrating)
    before = read_everything(store, "enc-old")
    assert before["segments"] == [s.text for s in seeded["segments"]]
    assert before["audio"] == seeded["pcm"] + seeded["pcm"][::-1]
    # New rows beside the old ones are encrypted; both kinds read.
    seed_everything(store, "enc-new")
    assert read_everything(store, "enc-new")["segments"] == before["segments"]
    assert column_key_ids(store) == {None, kid}
    store.close()

    from scribe.cli import main

    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SCRIBE_TRUST__KEY_FILE", str(key))
    assert main(["keys", "rotate", "--encrypt-plaintext"]) == 0
    assert "plaintext values encrypted" in capsys.readouterr().out
    store = open_store(keyed_settings(tmp_path, key))
    assert column_key_ids(store) == {kid}
    assert read_everything(store, "enc-old") == before
    store.close()
    raw = db_bytes(settings.database_path)
    assert not found_words(raw, plain_words | {"quokkaverified"}), "old plaintext left in free pages"
    assert seeded["pcm"][:256] not in raw


def test_same_encryption_on_sqlite_and_postgresql(store_url: str) -> None:
    """Encrypt, read back, refuse a wrong key, rotate: the same on both backends."""
    from scribe.trust.crypto import generate_key, retire_rotated_keys, rotate

    old, new = generate_key(), generate_key()
    store = Store(store_url, keyring=Keyring(old), encrypted_columns=ENCRYPTED_COLUMNS)
    seeded = seed_everything(store)
    before = read_everything(store)
    assert before["segments"] == [s.text for s in seeded["segments"]]
    assert column_key_ids(store) == {key_id_for(old)}
    store.close()
    with pytest.raises(EncryptionKeyError, match=key_id_for(old)):
        Store(store_url, keyring=Keyring(new), encrypted_columns=ENCRYPTED_COLUMNS)
    store = Store(store_url, keyring=Keyring(new, [old]), encrypted_columns=ENCRYPTED_COLUMNS)
    report = rotate(store, store.keyring, ENCRYPTED_COLUMNS, batch=3)
    assert report.rewrapped > 10 and not report.skipped_columns
    assert retire_rotated_keys(store, store.keyring) == [key_id_for(old)]
    store.close()
    store = Store(store_url, keyring=Keyring(new), encrypted_columns=ENCRYPTED_COLUMNS)
    assert column_key_ids(store) == {key_id_for(new)} and read_everything(store) == before
    store.close()
    with pytest.raises(EncryptionKeyError, match=key_id_for(new)):
        Store(store_url, keyring=Keyring(old), encrypted_columns=ENCRYPTED_COLUMNS)


def test_a_value_moved_to_another_row_is_a_corrupt_row_not_wrong_words(tmp_path: Path) -> None:
    from scribe.store import CorruptRow

    store = open_store(keyed_settings(tmp_path))
    seed_everything(store)
    (first,) = store.db.execute("SELECT data FROM segments WHERE encounter_id = 'enc-seed' AND idx = 0").fetchone()
    with store.tx() as db:
        db.execute("UPDATE segments SET data = ? WHERE encounter_id = 'enc-seed' AND idx = 1", (first,))
    with pytest.raises(CorruptRow, match=r"enc-seed: transcript segment 1 .* fails decryption") as exc:
        store.segments("enc-seed")
    assert not found_words(str(exc.value).encode(), words_of(sample_segments()[0].text))
    store.close()
