"""API tokens: hashed at rest, authentication outcomes (audited), revocation, scoping, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from scribe.models import Consent
from scribe.store import Store
from scribe.trust.audit import AuditLog
from scribe.trust.tokens import AccessDenied, AuthError, Principal, Role, TokenStore, can_access, token_id_of


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "scribe.db")
    yield s
    s.close()


def db_bytes(store: Store) -> bytes:
    """Everything on disk for this database: main file, WAL and shared memory."""
    data = b""
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(store.path) + suffix)
        if p.exists():
            data += p.read_bytes()
    return data


def test_token_never_stored_in_clear(store: Store) -> None:
    tokens = TokenStore(store, audit=AuditLog(store))
    created = [tokens.create(f"dr-{i}", label="ward-3 tablet")[0] for i in range(3)]
    for token in created:
        tokens.authenticate(token)
    raw = db_bytes(store)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw += db_bytes(store)
    for token in created:
        secret = token.split("_", 2)[2]  # scr_<id>_<secret>; the secret itself may contain "_"
        assert token.encode() not in raw and secret.encode() not in raw
        assert token_id_of(token).encode() in raw  # the public id is, by design
    assert b"dr-1" in raw  # sanity: we are reading the right file


def test_authenticate_outcomes_and_audit(store: Store) -> None:
    audit = AuditLog(store)
    tokens = TokenStore(store, audit=audit)
    token, info = tokens.create("dr-a")
    admin_token, _ = tokens.create("it-ops", Role.admin)
    p = tokens.authenticate(token)
    assert p == Principal(clinician_id="dr-a", role=Role.clinician, token_id=info.token_id)
    assert tokens.authenticate(admin_token).is_admin
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    cases = {None: "missing", "": "missing", "Bearer x": "malformed", forged: "unknown",
             "scr_0000000000_" + "A" * 43: "unknown"}
    for presented, code in cases.items():
        with pytest.raises(AuthError) as exc:
            tokens.authenticate(presented, source="10.0.0.7")
        assert exc.value.code == code
        if presented:
            assert presented not in str(exc.value)
    assert tokens.revoke(info.token_id, actor="admin-1")
    assert not tokens.revoke(info.token_id)
    with pytest.raises(AuthError) as exc:
        tokens.authenticate(token)
    assert exc.value.code == "revoked"
    failed = [e for e in audit.entries() if e.action == "login_failed"]
    assert [e.detail["reason"] for e in failed] == ["missing", "missing", "malformed", "unknown", "unknown", "revoked"]
    assert all(e.outcome == "denied" for e in failed)
    assert failed[0].detail["source"] == "10.0.0.7"
    # The forged token's public id is logged (it is not a secret), never the token.
    assert failed[3].object_id == info.token_id
    assert all(token not in e.model_dump_json() for e in audit.entries())
    assert audit.verify().ok


def test_list_never_shows_secrets(store: Store) -> None:
    tokens = TokenStore(store)
    token, _ = tokens.create("dr-a", label="desk")
    tokens.create("dr-b", Role.admin)
    listed = tokens.list()
    assert [(i.clinician_id, i.role) for i in listed] == [("dr-a", Role.clinician), ("dr-b", Role.admin)]
    assert token not in str([i.model_dump() for i in listed]) and "digest" not in listed[0].model_dump()
    tokens.revoke(token)  # the token string is accepted too
    assert [i.clinician_id for i in tokens.list(include_revoked=False)] == ["dr-b"]
    assert tokens.list("dr-a")[0].revoked_at is not None


def test_pepper_changes_invalidate(store: Store) -> None:
    token, _ = TokenStore(store, pepper=b"site-secret-1").create("dr-a")
    assert TokenStore(store, pepper=b"site-secret-1").authenticate(token).clinician_id == "dr-a"
    with pytest.raises(AuthError):
        TokenStore(store, pepper=b"site-secret-2").authenticate(token)


def test_bad_clinician_id_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        TokenStore(store).create("Dr Ann Smith")


def test_scoping_own_encounters_only(store: Store) -> None:
    audit = AuditLog(store)
    tokens = TokenStore(store, audit=audit)
    for eid, who in (("enc-a", "dr-a"), ("enc-b", "dr-b")):
        store.open_encounter(eid, clinician_id=who, patient_ref="Patient/1", language="en", sample_rate=16000,
                             consent=Consent(given=True))
    a = Principal(clinician_id="dr-a", role=Role.clinician)
    admin = Principal(clinician_id="it-ops", role=Role.admin)
    enc_a, enc_b = store.get_encounter("enc-a"), store.get_encounter("enc-b")
    assert can_access(a, enc_a) and not can_access(a, enc_b)
    assert can_access(admin, enc_a) and can_access(admin, enc_b)
    assert can_access(a, {"clinician_id": "dr-a"}) and not can_access(a, {"clinician_id": "dr-a2"})
    assert not can_access(a, object())
    assert [e.id for e in store.list_encounters() if can_access(a, e)] == ["enc-a"]
    tokens.require_access(a, enc_a)
    with pytest.raises(AccessDenied):
        tokens.require_access(a, enc_b, action="export")
    denied = [e for e in audit.entries() if e.action == "access_denied"]
    assert len(denied) == 1 and denied[0].object_id == "enc-b" and denied[0].actor == "dr-a"
    assert denied[0].detail == {"attempted": "export"}


@hsettings(max_examples=400, deadline=None)
@given(presented=st.one_of(st.none(), st.text(max_size=80),
                           st.from_regex(r"scr_[0-9a-f]{10}_[A-Za-z0-9_-]{43}", fullmatch=True)))
def test_fuzzed_tokens_never_authenticate_and_never_crash(presented) -> None:
    with pytest.raises(AuthError) as exc:
        _FUZZ.authenticate(presented)
    assert exc.value.code in {"missing", "malformed", "unknown"}


_FUZZ_STORE = Store(":memory:")
_FUZZ = TokenStore(_FUZZ_STORE)
_FUZZ.create("dr-a")


def test_cli_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from scribe.cli import main

    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    assert main(["tokens", "create", "--clinician", "dr-a", "--label", "tablet"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("scr_") and len(token) == 58
    assert main(["tokens", "create", "--clinician", "root", "--admin", "--actor", "ops-1"]) == 0
    admin_token = capsys.readouterr().out.strip()
    store = Store(tmp_path / "data" / "scribe.db")
    assert TokenStore(store).authenticate(token).role is Role.clinician
    assert TokenStore(store).authenticate(admin_token).role is Role.admin
    store.close()
    assert main(["tokens", "list", "--json"]) == 0
    listed = capsys.readouterr().out
    assert token not in listed and token_id_of(token) in listed
    assert main(["tokens", "revoke", token_id_of(token)]) == 0
    assert main(["tokens", "revoke", token_id_of(token)]) == 2
    assert main(["tokens", "create", "--clinician", "has space"]) == 2
    store = Store(tmp_path / "data" / "scribe.db")
    with pytest.raises(AuthError):
        TokenStore(store).authenticate(token)
    actions = [(e.action, e.actor) for e in AuditLog(store).entries()]
    store.close()
    assert actions[:3] == [("token_created", actions[0][1]), ("token_created", "ops-1"), ("token_revoked", actions[2][1])]
