"""Pure tests for the speaker-label core: tracker, role inference, stereo, scoring, profiles."""

from __future__ import annotations

import base64
import os
import stat

import numpy as np
import pytest

from scribe.diarize.encoder import plan_windows
from scribe.diarize.profiles import ProfileError, ProfileRepository, SpeakerProfile, _key_from_file
from scribe.diarize.roles import RoleEvidence, infer_clinician, sounds_like_question
from scribe.diarize.scoring import attribution, hypothesis_words, reference_words
from scribe.diarize.stereo import channels_separate, dominant_channel
from scribe.diarize.tracker import Observation, SpeakerTracker, TrackerConfig
from scribe.models import Segment, Speaker, Word
from scribe.store import Store

RNG = np.random.default_rng(7)
BASE = np.abs(RNG.normal(size=256))  # d-vectors share a positive "room" component
VOICE_A = RNG.normal(size=256)
VOICE_B = RNG.normal(size=256)

CLIN_LINES = ["Hello, what brings you in today?", "How long have you had the cough?",
              "Do you have any fever?", "I'll prescribe an inhaler and we'll follow up in two weeks."]
PAT_LINES = ["I've had a cough for about two weeks.", "It started after my cold.",
             "No fever, but I feel tired.", "Okay, thank you."]


def _emb(voice: np.ndarray, n: int = 3, noise: float = 0.3) -> np.ndarray:
    e = 4 * BASE + voice + noise * RNG.normal(size=(n, 256))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _obs(i: int, voice, text: str, n: int = 3) -> Observation:
    emb = _emb(voice, n) if n else np.zeros((0, 256))
    return Observation(f"seg-{i:05d}", i * 4.0, i * 4.0 + 3.5, text, emb,
                       [(i * 4.0 + k * 0.8, i * 4.0 + k * 0.8 + 1.6) for k in range(n)])


def _dialogue(tracker: SpeakerTracker, rounds: int = 4, first_clin: bool = True):
    updates, truth = [], {}
    i = 0
    for r in range(rounds):
        pairs = [(VOICE_A, CLIN_LINES[r % 4], Speaker.clinician), (VOICE_B, PAT_LINES[r % 4], Speaker.patient)]
        if not first_clin:
            pairs.reverse()
        for voice, text, role in pairs:
            updates.append(tracker.observe(_obs(i, voice, text)))
            truth[f"seg-{i:05d}"] = role
            i += 1
    return updates, truth


def test_two_voices_get_clinician_and_patient_from_text_cues():
    tr = SpeakerTracker()
    _, truth = _dialogue(tr)
    assert tr.two_voices
    assert tr.labels == truth


def test_roles_follow_questions_not_who_spoke_first():
    tr = SpeakerTracker()
    _, truth = _dialogue(tr, first_clin=False)  # the patient speaks first
    assert tr.labels == truth


def test_single_voice_stays_one_speaker():
    tr = SpeakerTracker()
    for i in range(10):
        tr.observe(_obs(i, VOICE_A, "Continue metformin one thousand milligrams twice a day."))
    assert not tr.two_voices
    assert set(tr.labels.values()) == {Speaker.clinician}


def test_enrolled_profile_pins_the_clinician_even_without_text_cues():
    profile = _emb(VOICE_B, 1, noise=0.1)[0]
    tr = SpeakerTracker(clinician_profile=profile)
    truth = {}
    for i in range(8):
        voice, role = (VOICE_A, Speaker.patient) if i % 2 == 0 else (VOICE_B, Speaker.clinician)
        tr.observe(_obs(i, voice, "mm okay"))
        truth[f"seg-{i:05d}"] = role
    assert tr.labels == truth


def test_revisions_are_reported_as_data_and_old_labels_freeze():
    tr = SpeakerTracker(TrackerConfig(revise_last=3))
    # The patient talks first and at length with no cues: tentatively "clinician" …
    updates = [tr.observe(_obs(i, VOICE_B, "It hurts here.")) for i in range(2)]
    assert updates[0].speaker == Speaker.clinician
    # … until the real clinician's questions arrive and the roles flip.
    updates += [tr.observe(_obs(2 + i, v, t)) for i, (v, t) in enumerate(
        [(VOICE_A, "Where does it hurt?"), (VOICE_B, "Here."), (VOICE_A, "Do you have any fever?"),
         (VOICE_B, "No."), (VOICE_A, "How long has it hurt?"), (VOICE_B, "Two days.")])]
    revised = {r.segment_id: r for u in updates for r in u.revisions}
    assert revised, "a role flip must be reported as revisions"
    for r in revised.values():
        assert r.speaker != r.previous
    assert tr.labels["seg-00006"] == Speaker.clinician and tr.labels["seg-00007"] == Speaker.patient
    # seg-00000 was labelled before the flip and is now outside the revision window: frozen
    assert tr.labels["seg-00000"] == updates[0].speaker
    # Revisions only ever touch the last `revise_last` segments at the time.
    for k, u in enumerate(updates):
        for r in u.revisions:
            assert int(r.segment_id.split("-")[1]) >= k - 3


def test_hindsight_re_decides_frozen_labels_with_the_whole_visit():
    """The transcript of record is read after the fact: the patient's first words, frozen as
    the clinician's before the clinician had spoken, are revised once the whole visit is heard,
    and the re-decided labels are what later segments freeze against."""
    tr = SpeakerTracker(TrackerConfig(revise_last=3))
    tr.observe(_obs(0, VOICE_B, "It hurts here."))
    tr.observe(_obs(1, VOICE_B, "It started on Monday after I lifted a box."))
    for i, (v, t) in enumerate([(VOICE_A, "Where does it hurt?"), (VOICE_B, "Here."),
                                (VOICE_A, "Do you have any fever?"), (VOICE_B, "No."),
                                (VOICE_A, "How long has it hurt?"), (VOICE_B, "Two days.")]):
        tr.observe(_obs(2 + i, v, t))
    assert tr.labels["seg-00000"] == Speaker.clinician  # frozen before the roles were clear
    revisions = tr.hindsight()
    assert {r.segment_id: (r.previous, r.speaker) for r in revisions} == {
        "seg-00000": (Speaker.clinician, Speaker.patient), "seg-00001": (Speaker.clinician, Speaker.patient),
        "seg-00002": (Speaker.patient, Speaker.clinician)}
    truth = {f"seg-{i:05d}": Speaker.patient if i in (0, 1, 3, 5, 7) else Speaker.clinician for i in range(8)}
    assert tr.labels == truth
    assert tr.hindsight() == ()  # nothing left to change
    tr.observe(_obs(8, VOICE_A, "Any allergies?"))  # the re-decided labels stay frozen
    assert tr.labels["seg-00000"] == Speaker.patient


def test_hindsight_on_one_voice_changes_nothing():
    tr = SpeakerTracker()
    for i in range(10):
        tr.observe(_obs(i, VOICE_A, "Continue metformin one thousand milligrams twice a day."))
    assert tr.hindsight() == ()
    assert set(tr.labels.values()) == {Speaker.clinician}


def test_short_segment_without_embedding_takes_the_other_voice():
    tr = SpeakerTracker()
    _dialogue(tr)
    u = tr.observe(_obs(8, VOICE_A, "Any allergies?"))
    short = tr.observe(_obs(9, None, "No.", n=0))
    assert u.speaker == Speaker.clinician
    assert short.speaker == Speaker.patient


def test_channel_evidence_overrides_embeddings():
    tr = SpeakerTracker()
    for i in range(6):
        ch = i % 2
        text = CLIN_LINES[i // 2] if ch == 0 else PAT_LINES[i // 2]
        obs = _obs(i, VOICE_A, text)  # same voice embedding: only the channel tells them apart
        tr.observe(Observation(obs.segment_id, obs.start, obs.end, obs.text, obs.windows, obs.window_spans,
                               channel=ch))
    assert [tr.labels[f"seg-{i:05d}"] for i in range(6)] == [Speaker.clinician, Speaker.patient] * 3


VOICE_C = 1.6 * RNG.normal(size=256)  # a visitor: as distinct as the dev recordings' third voices
VISITOR_LINES = ["He has been coughing at night as well.", "She was very worried about the fever.",
                 "We gave him some honey before bed.", "His brother had the same thing last month."]


def _visit_with_a_visitor(tracker: SpeakerTracker, visitor_voice=VOICE_C) -> dict[str, Speaker]:
    """Clinician and patient talk; later a relative joins in twice, three sentences each time
    (in all, less than either of the others says)."""
    truth: dict[str, Speaker] = {}
    i = 0

    def say(voice, text, role, n=3):
        nonlocal i
        tracker.observe(_obs(i, voice, text, n))
        truth[f"seg-{i:05d}"] = role
        i += 1

    for r in range(8):
        say(VOICE_A, CLIN_LINES[r % 4], Speaker.clinician)
        say(VOICE_B, PAT_LINES[r % 4], Speaker.patient)
        if r in (4, 6):
            for k in range(3):
                say(visitor_voice, VISITOR_LINES[(r + k) % 4], Speaker.other)
    return truth


def test_a_third_voice_is_labelled_other_without_disturbing_the_two_roles():
    tr = SpeakerTracker()
    truth = _visit_with_a_visitor(tr)
    assert tr.voices == 3
    assert tr.labels == truth


def test_a_third_voice_that_takes_the_history_is_not_believed_to_be_a_visitor():
    """A "third voice" that asks the history questions as the clinician does is the clinician's
    own voice split off (the room or the microphone changed), not a relative: the text breaks
    the tie the voice cannot, and nobody is labelled ``other``."""
    tr = SpeakerTracker()
    i = 0
    for r in range(8):
        tr.observe(_obs(i, VOICE_A, CLIN_LINES[r % 4]))
        tr.observe(_obs(i + 1, VOICE_B, PAT_LINES[r % 4]))
        i += 2
        if r in (4, 6):
            for k in range(3):  # the same distinct voice as the visitor test, asking like a clinician
                tr.observe(_obs(i, VOICE_C, ["Do you smoke?", "Are you retired? Do you work?",
                                             "Have you had any surgery?"][k]))
                i += 1
    assert Speaker.other not in set(tr.labels.values())
    # the same voice saying what a relative says is still a visitor
    visited = SpeakerTracker()
    _visit_with_a_visitor(visited)
    assert Speaker.other in set(visited.labels.values())


def test_the_switch_to_other_reaches_earlier_segments_as_revisions():
    tr = SpeakerTracker()
    revised: dict[str, Speaker] = {}
    real_observe = tr.observe

    def observe(obs):
        u = real_observe(obs)
        revised.update({r.segment_id: r.speaker for r in u.revisions})
        return u

    tr.observe = observe  # type: ignore[method-assign]
    truth = _visit_with_a_visitor(tr)
    first_visit = [k for k, v in truth.items() if v == Speaker.other][:3]
    # the first three sentences came before the third voice was believed: labelled patient or
    # clinician then, revised to other once the visitor spoke again
    assert all(revised.get(k) == Speaker.other for k in first_visit)


def _visit_with_fragments(tracker: SpeakerTracker) -> None:
    """Two voices; the patient hesitates twice before each answer ("um I…"): short fragments
    whose embeddings are pulled off the voice in a direction they share."""
    hesitation = RNG.normal(size=256)
    for r in range(8):
        tracker.observe(_obs(len(tracker.items), VOICE_A, CLIN_LINES[r % 4]))
        for _ in range(2):
            frag = _obs(len(tracker.items), VOICE_B, "um I...", n=1)
            odd = _unit_rows(frag.windows + 0.6 * _unit_rows(hesitation[None] + 0.3 * RNG.normal(size=(1, 256))))
            tracker.observe(Observation(frag.segment_id, frag.start, frag.end, frag.text, odd,
                                        [(frag.start, frag.start + 1.2)]))
        tracker.observe(_obs(len(tracker.items), VOICE_B, PAT_LINES[r % 4]))


def test_short_fragments_do_not_pass_for_a_third_voice():
    """Together the fragments sit apart from both voices as tidily as a visitor would (with
    fragments allowed to count, they do become a third voice); kept to segments with two
    seconds of voice, the search finds no third voice."""
    careless = SpeakerTracker(TrackerConfig(third_min_segment_s=1.0))
    _visit_with_fragments(careless)
    assert careless.voices == 3
    tr = SpeakerTracker()
    _visit_with_fragments(tr)
    assert tr.voices == 2
    assert Speaker.other not in tr.labels.values()
    assert {tr.labels[it.obs.segment_id] for it in tr.items if it.obs.text != "um I..."} == {
        Speaker.clinician, Speaker.patient}


def test_the_enrolled_clinician_is_never_the_third_voice():
    profile = _emb(VOICE_A, 1, noise=0.1)[0]
    tr = SpeakerTracker(clinician_profile=profile)
    truth = _visit_with_a_visitor(tr)
    assert tr.labels == truth


def test_third_voice_search_can_be_turned_off():
    tr = SpeakerTracker(TrackerConfig(third_voice=False))
    truth = _visit_with_a_visitor(tr)
    assert tr.voices == 2
    assert Speaker.other not in tr.labels.values()
    assert all(tr.labels[k] == v for k, v in truth.items() if v != Speaker.other)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------- roles


def test_question_detection():
    assert sounds_like_question("Do you have any chest pain")
    assert sounds_like_question("and how long has that been going on?")
    assert not sounds_like_question("I have chest pain.")


def test_role_inference_prefers_the_questioner_and_planner():
    clin, pat = RoleEvidence(), RoleEvidence()
    for t in CLIN_LINES:
        clin.add(t)
    for t in PAT_LINES:
        pat.add(t)
    d = infer_clinician({0: pat, 1: clin}, {0: 30.0, 1: 20.0}, [0, 1])
    assert d.clinician == 1 and d.confident
    assert d.scores[1] > d.scores[0]


def test_role_inference_without_evidence_takes_first_voice_tentatively():
    ev = {0: RoleEvidence(), 1: RoleEvidence()}
    ev[0].add("hello")
    ev[1].add("hi")
    d = infer_clinician(ev, {0: 3.0, 1: 3.0}, [1, 0])
    assert d.clinician == 1 and not d.confident


# --------------------------------------------------------------------------- stereo


def _tone(n, amp):
    t = np.arange(n) / 16000
    return (amp * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_dominant_channel_with_crosstalk():
    voice = _tone(16000, 0.3)
    left = np.stack([voice, voice * 0.05], axis=1)  # -26 dB crosstalk
    right = left[:, ::-1]
    assert dominant_channel(left) == 0
    assert dominant_channel(right) == 1
    assert dominant_channel(np.stack([voice, voice], axis=1)) is None
    assert dominant_channel(np.zeros((16000, 2), dtype=np.float32)) is None


def test_channels_separate_vs_duplicated_mono():
    a, b = _tone(16000, 0.3), _tone(16000, 0.2)
    z = np.zeros(16000, dtype=np.float32)
    sep = np.concatenate([np.stack([a, z + 0.001 * a], 1), np.stack([z + 0.001 * b, b], 1)])
    dup = np.stack([np.concatenate([a, b])] * 2, 1)
    assert channels_separate(sep)
    assert not channels_separate(dup)


# --------------------------------------------------------------------------- scoring


def test_attribution_scores_only_aligned_words():
    ref = reference_words([("doctor", "How are you today?"), ("patient", "Not great, my throat hurts.")])
    seg = lambda i, text, spk: Segment(id=Segment.make_id(i), index=i, start=i, end=i + 1, text=text,
                                       speaker=spk,
                                       words=[Word(text=w, start=i, end=i + 1, probability=1.0) for w in text.split()])
    hyp = hypothesis_words([seg(0, "How are you today? Not", Speaker.clinician),
                            seg(1, "grate my throat hurts", Speaker.patient)])
    a = attribution(ref, hyp)
    assert a.matched == 8  # "grate" is an ASR error, not scored
    assert a.wrong == 1  # "not" was given to the clinician
    assert a.error == pytest.approx(1 / 8)


# --------------------------------------------------------------------------- profiles


def _profile(cid="dr-a"):
    return SpeakerProfile.from_embedding(cid, "resemblyzer-0.1.4", np.arange(256, dtype=np.float32) / 256,
                                         speech_seconds=31.0, windows=40)


def test_profile_round_trip_is_encrypted_and_deletable(tmp_path):
    from scribe.store import EncryptionKeyError
    from scribe.trust.crypto import Keyring

    store = Store(tmp_path / "s.db", keyring=Keyring(os.urandom(32)))
    repo = ProfileRepository(store)
    repo.save(_profile())
    got = repo.get("dr-a")
    assert np.allclose(got.embedding, _profile().embedding)
    raw = store.db.execute("SELECT ciphertext FROM speaker_profiles").fetchone()[0]
    assert b"embedding" not in raw and b"dr-a" not in raw
    with pytest.raises(EncryptionKeyError):  # another key does not even open the store
        Store(tmp_path / "s.db", keyring=Keyring(os.urandom(32)))
    with pytest.raises(ProfileError, match="encrypted store"):
        ProfileRepository(Store(tmp_path / "plain.db"))
    # a ciphertext moved onto another clinician's row does not open (id is authenticated)
    with store.tx() as db:
        db.execute("INSERT INTO speaker_profiles SELECT 'dr-b', model, nonce, ciphertext, created_at "
                   "FROM speaker_profiles WHERE clinician_id='dr-a'")
    with pytest.raises(ProfileError, match="cannot be decrypted"):
        repo.get("dr-b")
    assert repo.delete("dr-a") and repo.get("dr-a") is None
    assert not repo.delete("dr-a")


def test_profiles_rotate_with_the_data_key(tmp_path):
    """One key ring for everything encrypted: after ``rotate`` and retiring the old key, a
    profile opens with the new key alone."""
    from scribe.database import ENCRYPTED_COLUMNS
    from scribe.trust.crypto import Keyring, rotate

    old, new = os.urandom(32), os.urandom(32)
    store = Store(tmp_path / "s.db", keyring=Keyring(old))
    ProfileRepository(store).save(_profile())
    report = rotate(store, Keyring(new, [old]), ENCRYPTED_COLUMNS)
    assert report.rewrapped >= 1
    store.keyring = Keyring(new)
    assert np.allclose(ProfileRepository(store).get("dr-a").embedding, _profile().embedding)


def test_profiles_under_the_old_speakers_key_are_moved_to_the_key_ring(tmp_path):
    """What older versions wrote (AES-GCM under speakers.key, the nonce in its own column) is
    re-sealed with the store's key ring when the repository opens with the old key; without
    it, reading such a profile says what to do."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from scribe.trust.crypto import Keyring

    store = Store(tmp_path / "s.db", keyring=Keyring(os.urandom(32)))
    ProfileRepository(store)  # the table
    legacy, nonce, profile = os.urandom(32), os.urandom(12), _profile()
    ct = AESGCM(legacy).encrypt(nonce, profile.model_dump_json().encode(),
                                ProfileRepository._legacy_aad("dr-a", profile.model))
    with store.tx() as db:
        db.execute("INSERT INTO speaker_profiles VALUES (?,?,?,?,?)",
                   ("dr-a", profile.model, nonce, ct, profile.created_at.isoformat()))
    with pytest.raises(ProfileError, match="old speakers key"):
        ProfileRepository(store).get("dr-a")
    moved = ProfileRepository(store, legacy).get("dr-a")
    assert np.allclose(moved.embedding, profile.embedding)
    assert store.db.execute("SELECT length(nonce) FROM speaker_profiles").fetchone()[0] == 0
    assert ProfileRepository(store).get("dr-a") is not None  # no longer needs the old key


def test_key_file_created_private_and_refused_when_readable(tmp_path):
    path = tmp_path / "keys" / "speakers.key"
    key = _key_from_file(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _key_from_file(path) == key
    path.chmod(0o644)
    with pytest.raises(ProfileError, match="chmod 600"):
        _key_from_file(path)
    path.chmod(0o600)
    path.write_text(base64.b64encode(b"short").decode())
    with pytest.raises(ProfileError, match="32 bytes"):
        _key_from_file(path)


def test_window_plan_covers_short_and_long_audio():
    assert plan_windows(int(0.2 * 16000)) == []
    assert plan_windows(int(0.8 * 16000)) == [(0, 12800)]
    plan = plan_windows(16000 * 5)
    assert plan[0][0] == 0 and plan[-1][1] == 16000 * 5
    assert all(e - s == int(1.6 * 16000) for s, e in plan)


def test_mel_frontend_matches_librosa():
    librosa = pytest.importorskip("librosa")
    from scribe.diarize.features import mel_spectrogram

    wav = (0.1 * np.random.default_rng(1).normal(size=16000 * 2)).astype(np.float32)
    ours = mel_spectrogram(wav)
    ref = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= 1e-4 * np.max(np.abs(ref))


# --------------------------------------------------------------------------- settling


def _seg(i: int, speaker: Speaker = Speaker.clinician) -> Segment:
    return Segment(id=Segment.make_id(i), index=i, start=i, end=i + 1, text=f"line {i}", speaker=speaker)


def test_segments_are_released_only_when_their_label_is_final():
    from scribe.diarize.settle import SettledSegments

    q = SettledSegments(hold=3)
    assert q.push([_seg(0), _seg(1), _seg(2)]) == []
    # seg 0 was first guessed clinician; the labeller revised it before it was released
    out = q.push([_seg(3, Speaker.patient)], {"seg-00000": Speaker.patient, "seg-00099": Speaker.other})
    assert [(s.id, s.speaker) for s in out] == [("seg-00000", Speaker.patient)]
    out = q.push([_seg(4), _seg(5)], {"seg-00002": Speaker.other})
    assert [s.id for s in out] == ["seg-00001", "seg-00002"] and out[1].speaker is Speaker.other
    assert [s.id for s in q.flush()] == ["seg-00003", "seg-00004", "seg-00005"]
    assert len(q) == 0 and q.flush() == []


def test_without_a_labeller_segments_pass_straight_through():
    from scribe.diarize.settle import SettledSegments

    q = SettledSegments(hold=0)
    assert [s.id for s in q.push([_seg(0), _seg(1)])] == ["seg-00000", "seg-00001"]


def test_one_question_shaped_sentence_does_not_split_a_dictation():
    """A dictation's halves separate weakly; a single question-shaped sentence (a stray "any…",
    a mis-recognised "?") must not be taken for a conversation between two voices."""
    def dictate(tracker: SpeakerTracker) -> None:
        rng = np.random.default_rng(11)
        drift = rng.normal(size=256)  # the voice shifts a little halfway (a turn of the head)
        for i in range(12):
            text = "Any questions about the dose?" if i == 5 else "Continue metformin one thousand milligrams."
            e = 4 * BASE + VOICE_A + (0.9 * drift if i % 2 else 0) + 0.3 * rng.normal(size=(3, 256))
            e /= np.linalg.norm(e, axis=1, keepdims=True)
            tracker.observe(Observation(f"seg-{i:05d}", i * 4.0, i * 4.0 + 3.5, text, e,
                                        [(i * 4.0 + k * 0.8, i * 4.0 + k * 0.8 + 1.6) for k in range(3)]))

    careless = SpeakerTracker(TrackerConfig(min_answered=1))
    dictate(careless)
    assert careless.voices == 2  # what one answered question used to do
    tr = SpeakerTracker()
    dictate(tr)
    assert tr.voices == 1 and set(tr.labels.values()) == {Speaker.clinician}


def test_turns_give_who_spoke_when_at_word_resolution():
    tr = SpeakerTracker()
    _dialogue(tr)
    turns = tr.turns()
    assert [(t.segment_id, t.speaker) for t in turns] == list(tr.labels.items())  # no split: one turn each
    assert all(t.start < t.end for t in turns)
    # a segment whose words the in-segment split gave two speakers becomes two turns
    it = tr.items[-1]
    it.word_speakers = (Speaker.patient, Speaker.clinician, Speaker.clinician)
    object.__setattr__(it.obs, "word_times", ((28.0, 28.5), (29.0, 29.5), (29.5, 31.0)))
    last = [t for t in tr.turns() if t.segment_id == it.obs.segment_id]
    assert [(t.start, t.end, t.speaker) for t in last] == [(28.0, 28.5, Speaker.patient),
                                                          (29.0, 31.5, Speaker.clinician)]
