"""The harder speaker-labelling cases rebuilt from recordings (scribe.diarize.harder): pure."""

from __future__ import annotations

import numpy as np

from scribe.diarize.harder import clinician_silent, patient_first, short, similar_voices, splice
from scribe.diarize.scoring import hypothesis_words, reference_words
from scribe.diarize.visitor import Recording
from scribe.models import Segment, Speaker, Word

SR = 16000
LINES = [("doctor", "what brings you in today"), ("patient", "a cough for two weeks"),
         ("doctor", "any fever at night"), ("patient", "no fever but tired"),
         ("doctor", "any blood in the sputum"), ("patient", "none at all doctor")]


def recording(name: str, level: float, lines=LINES, seconds: float = 10.0) -> Recording:
    segments, t = [], 0.0
    for i, (_, text) in enumerate(lines):
        ws = text.split()
        words = [Word(text=w, start=t + 0.5 * k, end=t + 0.5 * k + 0.4, probability=0.9) for k, w in enumerate(ws)]
        segments.append(Segment(id=Segment.make_id(i), index=i, start=t, end=t + seconds, text=text, words=words))
        t += seconds + 1.0
    audio = np.full(int(t * SR), level, dtype=np.float32)
    roles = [Speaker.clinician if who == "doctor" else Speaker.patient for who, _ in lines]
    return Recording(name, segments, audio, reference_words(lines), roles)


def test_splice_keeps_each_segments_audio_text_and_reference_words() -> None:
    a, b = recording("a", 0.1), recording("b", 0.2)
    case = splice("x", "test", [(a, 1), (b, 0)])
    assert [s.text for s in case.segments] == [LINES[1][1], LINES[0][1]]
    assert [w.token for w in case.reference] == (LINES[1][1] + " " + LINES[0][1]).split()
    assert case.segment_roles == [Speaker.patient, Speaker.clinician]
    # audio of segment 2 is b's, at its new time; hypothesis words line up with the reference
    s = case.segments[1]
    assert np.allclose(case.audio[int(s.start * SR) + 10:int(s.end * SR) - 10], 0.2)
    assert [w.token for w in hypothesis_words(case.segments)] == [w.token for w in case.reference]
    assert case.segments[1].start > case.segments[0].end


def test_the_harder_cases() -> None:
    rec = recording("a", 0.1)
    assert len(short(rec, seconds=25).segments) == 2
    first = patient_first(rec, seconds=15)
    assert first is not None and first.segment_roles[:2] == [Speaker.patient, Speaker.patient]
    assert sorted(s.text for s in first.segments) == sorted(t for _, t in LINES)
    silent = clinician_silent(recording("a", 0.1, LINES * 2), share=0.5)
    roles = silent.segment_roles
    assert len(roles) < 12 and roles[3:6] == [Speaker.patient] * 3  # the middle is the patient alone
    others = [recording("b", 0.2), recording("c", 0.3), recording("d", 0.4)]
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    cents = {"a": {Speaker.clinician: unit(np.array([1.0, 0.0])), Speaker.patient: unit(np.array([0.0, 1.0]))},
             "b": {Speaker.patient: unit(np.array([0.6, 0.8]))}, "c": {Speaker.patient: unit(np.array([0.85, 0.5]))},
             "d": {Speaker.patient: unit(np.array([0.99, 0.1]))}}  # the clinician's own voice: skipped
    similar = similar_voices(rec, others, lambda r: cents[r.name])
    assert similar is not None and "(c," in similar.name  # c's patient is nearest a's clinician
    assert np.allclose(similar.audio[int(similar.segments[1].start * SR) + 10], 0.3)
