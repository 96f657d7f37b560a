"""Encryption at rest: round trips, wrong and missing keys, row swaps (associated data),
tampering, key files and rotation against the real store tables."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from scribe.config import Settings
from scribe.models import Consent, Segment
from scribe.database import ENCRYPTED_COLUMNS
from scribe.store import ENCRYPTED_COLUMNS as CORE_COLUMNS
from scribe.store import EncryptionKeyError, Store
from scribe.trust.crypto import (
    DecryptionError,
    EncryptedColumn,
    KeyMissing,
    Keyring,
    UnknownKeyId,
    aad_for,
    encode_key,
    envelope_key_id,
    generate_key,
    is_envelope,
    key_id_for,
    read_key_file,
    retire_rotated_keys,
    rotate,
    write_key_file,
)

SECRET_PCM = b"\x11\x22PATIENT-AUDIO\x33\x44" * 64
SECRET_TEXT = "the patient reports crushing chest pain since Tuesday"


@pytest.fixture
def ring() -> Keyring:
    return Keyring(generate_key())


def test_round_trip_bytes_and_text(ring: Keyring) -> None:
    aad = aad_for("frames", "pcm", ("enc-1", 0))
    env = ring.encrypt(SECRET_PCM, aad)
    assert is_envelope(env) and SECRET_PCM not in env
    assert ring.decrypt(env, aad) == SECRET_PCM
    text = ring.encrypt_text(SECRET_TEXT, aad_for("segments", "data", ("enc-1", 0)))
    assert text.startswith("enc1:") and "chest" not in text
    assert ring.decrypt_text(text, aad_for("segments", "data", ("enc-1", 0))) == SECRET_TEXT
    assert ring.envelope_key_id(env) == ring.envelope_key_id(text) == ring.primary_id


def test_nonces_are_fresh(ring: Keyring) -> None:
    aad = aad_for("t", "c", 1)
    assert ring.encrypt(b"same", aad) != ring.encrypt(b"same", aad)


def test_wrong_key_is_a_clear_error(ring: Keyring) -> None:
    env = ring.encrypt(SECRET_PCM, aad_for("frames", "pcm", ("e", 0)))
    other = Keyring(generate_key())
    with pytest.raises(UnknownKeyId, match="not configured") as exc:
        other.decrypt(env, aad_for("frames", "pcm", ("e", 0)))
    assert ring.primary_id in str(exc.value) and "retired_key_files" in str(exc.value)


def test_same_id_different_key_material_fails_authentication(ring: Keyring) -> None:
    """If an envelope's key id is forged to point at another configured key, GCM refuses."""
    other = generate_key()
    both = Keyring(other, [generate_key()])
    env = bytearray(ring.encrypt(b"x" * 20, b"aad"))
    kid = ring.primary_id.encode()
    env[5:5 + len(kid)] = both.primary_id.encode()
    with pytest.raises(DecryptionError):
        both.decrypt(bytes(env), b"aad")


@pytest.mark.parametrize("other_aad", [
    aad_for("frames", "pcm", ("enc-2", 0)),    # same position, another encounter
    aad_for("frames", "pcm", ("enc-1", 1)),    # another frame of the same encounter
    aad_for("segments", "pcm", ("enc-1", 0)),  # another table
    aad_for("frames", "data", ("enc-1", 0)),   # another column
])
def test_value_moved_to_another_row_is_refused(ring: Keyring, other_aad: bytes) -> None:
    env = ring.encrypt(SECRET_PCM, aad_for("frames", "pcm", ("enc-1", 0)))
    with pytest.raises(DecryptionError, match="another row"):
        ring.decrypt(env, other_aad)


def test_aad_is_unambiguous() -> None:
    assert aad_for("a", "b", ("c|d", "e")) != aad_for("a", "b", ("c", "d|e"))
    assert aad_for("t", "c", ("1",)) != aad_for("t", "c", (1,))


@hsettings(max_examples=300, deadline=None)
@given(plain=st.binary(max_size=256), pos=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_refused(plain: bytes, pos: int, bit: int) -> None:
    ring = _FUZZ_RING
    env = bytearray(ring.encrypt(plain, b"aad"))
    env[pos % len(env)] ^= 1 << bit
    with pytest.raises((DecryptionError, UnknownKeyId)):
        ring.decrypt(bytes(env), b"aad")


_FUZZ_RING = Keyring(generate_key())


@hsettings(max_examples=300, deadline=None)
@given(junk=st.one_of(st.binary(max_size=80), st.text(max_size=80)))
def test_garbage_never_decrypts_and_never_crashes(junk) -> None:
    with pytest.raises((DecryptionError, UnknownKeyId)):
        if isinstance(junk, str):
            _FUZZ_RING.decrypt_text(junk, b"aad")
        else:
            _FUZZ_RING.decrypt(junk, b"aad")


def test_plaintext_value_is_not_mistaken_for_an_envelope(ring: Keyring) -> None:
    with pytest.raises(DecryptionError, match="plaintext"):
        ring.decrypt(SECRET_PCM, b"")
    assert ring.envelope_key_id(SECRET_TEXT) is None and ring.envelope_key_id(SECRET_PCM) is None


# --------------------------------------------------------------------------- key sources


def test_key_file_generate_mode_and_refusal_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "scribe.key"
    kid = write_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_id_for(read_key_file(path)) == kid
    with pytest.raises(KeyMissing, match="refusing to overwrite"):
        write_key_file(path)
    assert key_id_for(read_key_file(path)) == kid


def test_key_from_env_through_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = generate_key()
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRIBE_TRUST__KEY", encode_key(key))
    settings = Settings()
    ring = Keyring.from_settings(settings)
    assert ring.primary_id == key_id_for(key)
    assert settings.public_dict()["trust"]["key"] == "***"
    assert encode_key(key) not in str(settings.public_dict())


@pytest.mark.parametrize("value,match", [("not base64 !!", "not valid base64"),
                                         (base64.b64encode(b"short").decode(), "must be 32 bytes")])
def test_bad_env_key_is_a_clear_error(value: str, match: str) -> None:
    with pytest.raises(KeyMissing, match=match) as exc:
        Keyring.from_sources(key=value)
    assert value not in str(exc.value) or len(value) < 10


def test_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyMissing, match="SCRIBE_TRUST__KEY"):
        Keyring.from_sources()
    with pytest.raises(KeyMissing, match="does not exist"):
        Keyring.from_sources(key_file=tmp_path / "nope.key")
    with pytest.raises(KeyMissing, match="only one"):
        Keyring.from_sources(key=encode_key(generate_key()), key_file=tmp_path / "k")


def test_cli_keys_generate_and_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from scribe.cli import main

    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    key = tmp_path / "k.key"
    assert main(["keys", "generate", "-o", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    out = capsys.readouterr().out
    assert key.read_text().strip() not in out, "the key itself is never printed"
    assert main(["keys", "generate", "-o", str(key)]) == 2
    monkeypatch.setenv("SCRIBE_TRUST__KEY_FILE", str(key))
    assert main(["keys", "show"]) == 0
    assert key_id_for(read_key_file(key)) in capsys.readouterr().out


# --------------------------------------------------------------------------- rotation on the real tables


def _encrypted_store(path: Path, ring: Keyring, encounters: int = 3, frames: int = 5) -> Store:
    """The core tables with their PHI columns encrypted the way the store will write them."""
    store = Store(path)
    for e in range(encounters):
        eid = f"enc-{e}"
        store.open_encounter(eid, clinician_id="dr-a", patient_ref=f"Patient/{e}", language="en",
                             sample_rate=16000, consent=Consent(given=True))
        with store.tx() as db:
            for seq in range(frames):
                db.execute("INSERT INTO frames (encounter_id, seq, start_sample, pcm) VALUES (?, ?, ?, ?)",
                           (eid, seq, seq * 160, ring.encrypt(SECRET_PCM, aad_for("frames", "pcm", (eid, seq)))))
            seg = Segment(id=f"{eid}-s0", index=0, start=0.0, end=1.0, text=SECRET_TEXT)
            db.execute('INSERT INTO segments (encounter_id, idx, id, start, "end", data) VALUES (?, ?, ?, ?, ?, ?)',
                       (eid, 0, seg.id, 0.0, 1.0,
                        ring.encrypt_text(seg.model_dump_json(), aad_for("segments", "data", (eid, 0)))))
    return store


def _all_values(store: Store):
    for col in CORE_COLUMNS:
        keys = ", ".join(col.key_columns)
        for row in store.db.execute(f"SELECT {keys}, {col.column} FROM {col.table}"):
            yield col, tuple(row[:-1]), row[-1]


def test_rotation_rewraps_everything_and_old_key_can_go(tmp_path: Path) -> None:
    old = generate_key()
    store = _encrypted_store(tmp_path / "s.db", Keyring(old))
    new = generate_key()
    ring = Keyring(new, [old])
    report = rotate(store, ring, ENCRYPTED_COLUMNS, batch=4)  # several batches
    assert report.rewrapped == 3 * 5 + 3 and report.encrypted_plaintext == 0
    new_only = Keyring(new)
    for col, key, value in _all_values(store):
        assert new_only.envelope_key_id(value) == new_only.primary_id
        plain = (new_only.decrypt_text(value, aad_for(col.table, col.column, key)) if col.text
                 else new_only.decrypt(value, aad_for(col.table, col.column, key)))
        assert (SECRET_TEXT in plain) if col.text else plain == SECRET_PCM
    # Idempotent: a second run (e.g. after an interruption) finds nothing to do.
    again = rotate(store, ring, ENCRYPTED_COLUMNS)
    assert again.rewrapped == 0 and again.already_current == 18
    store.close()


def test_rotation_without_the_old_key_stops_cleanly(tmp_path: Path) -> None:
    old = generate_key()
    store = _encrypted_store(tmp_path / "s.db", Keyring(old), encounters=1, frames=2)
    with pytest.raises(UnknownKeyId):
        rotate(store, Keyring(generate_key()), ENCRYPTED_COLUMNS)
    # Nothing lost: still readable with the old key.
    for col, key, value in _all_values(store):
        assert Keyring(old).envelope_key_id(value) == key_id_for(old)
    store.close()


def test_rotation_encrypts_legacy_plaintext_and_skips_absent_tables(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.open_encounter("enc-p", clinician_id="dr-a", patient_ref="Patient/1", language="en", sample_rate=16000,
                         consent=Consent(given=True))
    store.append_frames("enc-p", [(0, SECRET_PCM), (1, SECRET_PCM)])
    ring = Keyring(generate_key())
    cols = (*CORE_COLUMNS, EncryptedColumn("notes", "data", ("encounter_id", "version"), text=True))
    dry = rotate(store, ring, cols)
    assert dry.encrypted_plaintext == 0 and dry.already_current == 2 and dry.skipped_columns == ("notes.data",)
    report = rotate(store, ring, cols, encrypt_plaintext=True)
    assert report.encrypted_plaintext == 2
    for seq in (0, 1):
        value = store.db.execute("SELECT pcm FROM frames WHERE encounter_id = 'enc-p' AND seq = ?", (seq,)).fetchone()[0]
        assert ring.decrypt(value, aad_for("frames", "pcm", ("enc-p", seq))) == SECRET_PCM
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def test_cli_rotate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from scribe.cli import main
    from scribe.trust.audit import AuditLog

    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
    write_key_file(old_file)
    write_key_file(new_file)
    _encrypted_store(tmp_path / "data" / "scribe.db", Keyring(read_key_file(old_file)), 2, 2).close()
    monkeypatch.setenv("SCRIBE_TRUST__KEY_FILE", str(new_file))
    assert main(["keys", "rotate"]) == 2, "old key not configured: refused with a clear message"
    assert "retired_key_files" in capsys.readouterr().err
    monkeypatch.setenv("SCRIBE_TRUST__RETIRED_KEY_FILES", f'["{old_file}"]')
    assert main(["keys", "rotate"]) == 0
    assert "re-encrypted 6 values" in capsys.readouterr().out
    store = Store(tmp_path / "data" / "scribe.db")
    entries = [(e.action, e.outcome) for e in AuditLog(store).entries()]
    assert entries == [("key_rotated", "failed"), ("key_rotated", "success")]
    store.close()
    os.remove(old_file)
    monkeypatch.setenv("SCRIBE_TRUST__RETIRED_KEY_FILES", "[]")
    store = Store(tmp_path / "data" / "scribe.db")
    ring = Keyring(read_key_file(new_file))
    for col, key, value in _all_values(store):
        assert ring.envelope_key_id(value) == ring.primary_id
    store.close()


# --------------------------------------------------------------------------- who declares the encrypted columns


def test_the_collected_encrypted_columns_are_exactly_the_ones_before() -> None:
    """Each schema declares its own PHI columns; the composition's collection is the list that
    ``trust.crypto.ENCRYPTED_COLUMNS`` held when trust named every feature's tables."""
    assert ENCRYPTED_COLUMNS == (
        EncryptedColumn("frames", "pcm", ("encounter_id", "seq"), text=False),
        EncryptedColumn("segments", "data", ("encounter_id", "idx"), text=True),
        EncryptedColumn("record_segments", "data", ("encounter_id", "idx"), text=True),
        EncryptedColumn("note_versions", "data", ("encounter_id", "version"), text=True),
        EncryptedColumn("review_events", "before", ("seq",), text=True),
        EncryptedColumn("review_events", "after", ("seq",), text=True),
        EncryptedColumn("review_events", "reason", ("seq",), text=True),
        EncryptedColumn("delivery_signatures", "note", ("id",), text=True),
        EncryptedColumn("delivery_signatures", "retract_reason", ("id",), text=True),
        EncryptedColumn("speaker_profiles", "ciphertext", ("clinician_id",), text=False),
    )


def test_each_feature_declares_only_its_own_tables() -> None:
    from scribe.diarize import profiles
    from scribe.fhir import outbox
    from scribe.notes import repo
    from scribe.review import service

    declared = {mod.__name__: {c.table for c in mod.ENCRYPTED_COLUMNS}
                for mod in (profiles, outbox, repo, service)}
    assert declared == {
        "scribe.diarize.profiles": {"speaker_profiles"},
        "scribe.fhir.outbox": {"delivery_signatures"},
        "scribe.notes.repo": {"note_versions"},
        "scribe.review.service": {"review_events"},
    }
    for mod in (profiles, outbox, repo, service):
        for col in mod.ENCRYPTED_COLUMNS:  # declared beside the schema that creates the table
            assert f"CREATE TABLE {col.table} (" in "".join(mod.MIGRATIONS), col


def test_trust_imports_no_feature_and_crypto_names_no_feature_table() -> None:
    """The arrow points from the features to trust: trust/ imports none of them, and the crypto
    module (envelopes, rotation, the key check) names none of their tables."""
    import ast

    root = Path(__file__).resolve().parents[2] / "scribe" / "trust"
    features = ("notes", "review", "fhir", "diarize")
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            for name in names:
                parts = name.lstrip(".").split(".")
                if (name.startswith("scribe.") and parts[1] in features) or (
                        name.startswith("..") and parts[0] in features):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
    crypto = (root / "crypto.py").read_text(encoding="utf-8")
    for table in ("note_versions", "review_events", "delivery_signatures", "speaker_profiles",
                  "frames", "record_segments"):
        assert f'"{table}"' not in crypto, table


def _noted_store(path: Path, ring: Keyring, **kw) -> Store:
    """A store holding one note version (a feature's PHI column) under ``ring``."""
    from review_support import flagged_note, sample_segments

    from scribe.notes.repo import NoteRepo

    store = Store(path, keyring=ring, **kw)
    NoteRepo(store).save_draft(flagged_note("enc-n", sample_segments()), actor="writer:test")
    return store


def test_rotation_walks_a_features_phi_table(tmp_path: Path) -> None:
    from scribe.notes.repo import NoteRepo

    old, new = generate_key(), generate_key()
    store = _noted_store(tmp_path / "s.db", Keyring(old), encrypted_columns=ENCRYPTED_COLUMNS)
    before = NoteRepo(store).latest("enc-n")
    store.close()
    store = Store(tmp_path / "s.db", keyring=Keyring(new, [old]), encrypted_columns=ENCRYPTED_COLUMNS)
    report = rotate(store, store.keyring, ENCRYPTED_COLUMNS)
    assert report.rewrapped == 1 and "note_versions.data" not in report.skipped_columns
    (value,) = store.db.execute("SELECT data FROM note_versions").fetchone()
    assert envelope_key_id(value) == key_id_for(new)
    assert retire_rotated_keys(store, store.keyring) == [key_id_for(old)]
    store.close()
    store = Store(tmp_path / "s.db", keyring=Keyring(new), encrypted_columns=ENCRYPTED_COLUMNS)
    assert NoteRepo(store).latest("enc-n") == before
    store.close()


def test_the_key_check_at_open_probes_a_features_phi_table(tmp_path: Path) -> None:
    """A database from before the key registry (``encryption_keys``) whose only encrypted value
    is a note: the check at open finds its key id in ``note_versions`` and refuses another key."""
    old = generate_key()
    _noted_store(tmp_path / "s.db", Keyring(old), encrypted_columns=ENCRYPTED_COLUMNS).close()
    raw = Store(tmp_path / "s.db")
    with raw.tx() as db:
        db.execute("DELETE FROM encryption_keys")
    raw.close()
    with pytest.raises(EncryptionKeyError, match=key_id_for(old)):
        Store(tmp_path / "s.db", keyring=Keyring(generate_key()), encrypted_columns=ENCRYPTED_COLUMNS)
    Store(tmp_path / "s.db", keyring=Keyring(old), encrypted_columns=ENCRYPTED_COLUMNS).close()
