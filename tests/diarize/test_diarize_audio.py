"""Speaker labels on real audio through the real embedding model (resemblyzer weights).

Audio: the synthetic two-voice dialogue and single-voice dictation in samples/ (espeak-ng
renderings of PriMock57 / ACI-Bench text, CC BY 4.0 — see samples/README.md), with the exact
segment times of their manifests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scribe.audio import load_audio
from scribe.diarize.diarizer import OnlineDiarizer, label_segments
from scribe.diarize.encoder import load_encoder
from scribe.diarize.enroll import EnrolmentError, build_profile
from scribe.diarize.scoring import attribution, hypothesis_words, reference_words, role_of
from scribe.models import Segment, Speaker

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
pytestmark = pytest.mark.slow


def _case(name: str):
    manifest = json.loads((SAMPLES / f"{name}.json").read_text())
    audio = load_audio(SAMPLES / f"{name}.flac")
    segs = [Segment(id=Segment.make_id(i), index=i, start=s["start"], end=s["end"], text=s["text"])
            for i, s in enumerate(manifest["segments"])]
    roles = [role_of(s["speaker"]) for s in manifest["segments"]]
    turns = [(s["speaker"], s["text"]) for s in manifest["segments"]]
    return audio, segs, roles, turns


@pytest.fixture(scope="module")
def encoder():
    return load_encoder()


def _error(turns, labelled, word_labels=None):
    return attribution(reference_words(turns), hypothesis_words(labelled, word_labels)).error


def test_two_voice_dialogue_is_labelled_accurately(encoder):
    audio, segs, roles, turns = _case("synth_dialogue_dev_01")
    labelled, d = label_segments(encoder, segs, audio)
    assert d.tracker.two_voices
    assert _error(turns, labelled) <= 0.05
    got = [s.speaker for s in labelled]
    assert sum(g == r for g, r in zip(got, roles)) >= len(roles) - 1


def test_enrolment_improves_attribution(encoder):
    """Without text cues and with the patient speaking first, roles can only be guessed; an
    enrolled profile (built from earlier doctor audio, not scored) settles them."""
    audio, segs, roles, turns = _case("synth_dialogue_dev_01")
    doctor = [s for s, r in zip(segs, roles) if r == Speaker.clinician][:3]
    profile = build_profile(encoder, "dr-test",
                            np.concatenate([audio[int(s.start * 16000):int(s.end * 16000)] for s in doctor]))
    first = next(i for i, s in enumerate(segs) if i > segs.index(doctor[-1]) and roles[i] == Speaker.patient)
    later = [s.model_copy(update={"text": "mm"}) for s in segs[first:]]
    truth_turns = turns[first:]
    plain, _ = label_segments(encoder, later, audio)
    enrolled, _ = label_segments(encoder, later, audio, profile=profile)
    e_plain = _error(truth_turns, [s.model_copy(update={"text": t}) for s, (_, t) in zip(plain, truth_turns)])
    e_enr = _error(truth_turns, [s.model_copy(update={"text": t}) for s, (_, t) in zip(enrolled, truth_turns)])
    assert e_enr <= 0.1
    assert e_enr < e_plain


def test_stereo_channels_decide(encoder):
    audio, segs, roles, _turns = _case("synth_dialogue_dev_01")
    stereo = np.zeros((len(audio), 2), dtype=np.float32)
    for s, r in zip(segs, roles):
        a, b = int(s.start * 16000), int(s.end * 16000)
        ch = 0 if r == Speaker.clinician else 1
        stereo[a:b, ch] = audio[a:b]
        stereo[a:b, 1 - ch] = 0.03 * audio[a:b]  # crosstalk from the other microphone
    d = OnlineDiarizer(encoder)
    for s in segs:
        d.add(s, stereo[int(s.start * 16000):int(s.end * 16000)])
    assert d._stereo is True
    assert [it.obs.channel for it in d.tracker.items] == [0 if r == Speaker.clinician else 1 for r in roles]
    assert [d.labels[s.id] for s in segs] == roles


def test_single_speaker_dictation_gets_one_speaker(encoder):
    audio, segs, _, _ = _case("synth_dictation_dev_01")
    labelled, d = label_segments(encoder, segs, audio)
    assert not d.tracker.two_voices
    assert {s.speaker for s in labelled} == {Speaker.clinician}


def test_a_visitor_in_a_real_recording_is_labelled_other(encoder):
    """Real voices: a doctor and a patient (OSCE RES0205) and a visitor who joins twice
    (another recording's patient, a different person; samples/README.md). With the third-voice
    search the visitor's words become ``other`` and clinician and patient keep their labels;
    with at most two voices the visitor is folded into one of them."""
    from scribe.diarize.scoring import OtherLabels, confusion
    from scribe.diarize.tracker import TrackerConfig

    manifest = json.loads((SAMPLES / "visit_with_visitor_dev_01.json").read_text())
    audio = load_audio(SAMPLES / "visit_with_visitor_dev_01.flac")
    segs = [Segment(id=Segment.make_id(i), index=i, start=s["start"], end=s["end"], text=s["text"])
            for i, s in enumerate(manifest["segments"])]
    ref = reference_words([(t["speaker"], t["text"]) for t in manifest["dialogue"]])

    labelled, d = label_segments(encoder, segs, audio)
    hyp = hypothesis_words(labelled, d.word_labels)
    conf = confusion(ref, hyp)
    other = OtherLabels.of(conf)
    assert d.tracker.voices == 3
    assert other.visitor_as_other >= 0.8 * other.visitor_words
    assert other.others_as_other <= 0.06 * other.others_words
    with_third = attribution(ref, hyp).error
    assert with_third <= 0.08

    plain, d2 = label_segments(encoder, segs, audio, config=TrackerConfig(third_voice=False))
    assert Speaker.other not in {s.speaker for s in plain}
    assert attribution(ref, hypothesis_words(plain, d2.word_labels)).error > with_third + 0.05


def test_bad_enrolment_audio_gives_a_clear_error(encoder):
    with pytest.raises(EnrolmentError, match="silent"):
        build_profile(encoder, "dr-x", np.zeros(16000 * 30, dtype=np.float32))
    audio, _segs, _, _ = _case("synth_dictation_dev_01")
    with pytest.raises(EnrolmentError, match="only .* s of speech"):
        build_profile(encoder, "dr-x", audio[: 16000 * 4])
    noise = (0.01 * np.random.default_rng(0).normal(size=16000 * 30)).astype(np.float32)
    with pytest.raises(EnrolmentError):
        build_profile(encoder, "dr-x", noise)


def test_enroll_cli_stores_encrypted_refuses_bad_audio_and_deletes(tmp_path, monkeypatch, capsys):
    from scribe.cli import main
    from scribe.config import load_settings
    from scribe.diarize.profiles import ProfileRepository
    from scribe.database import open_store

    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SCRIBE_SPEAKERS__KEY", raising=False)
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(16000 * 30, dtype=np.float32), 16000)
    assert main(["enroll", "--clinician", "dr-a", str(silent)]) == 2
    assert "silent" in capsys.readouterr().err
    assert main(["enroll", "--clinician", "dr-a", str(SAMPLES / "synth_dictation_dev_01.flac")]) == 0
    settings = load_settings()
    repo = ProfileRepository(open_store(settings))
    assert repo.get("dr-a").speech_seconds >= 20
    assert not (tmp_path / "keys" / "speakers.key").exists()  # sealed with the store's data key
    assert main(["enroll", "--delete", "dr-a"]) == 0
    assert repo.get("dr-a") is None
    assert main(["enroll", "--delete", "dr-a"]) == 2
