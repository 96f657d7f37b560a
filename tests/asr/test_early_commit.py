"""Early commits inside long utterances (``EarlyCommit`` and the transcriber that drives it),
with a scripted recogniser and VAD: behaviour, not durations (latency lives in the benchmark)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scribe.asr.commit import WINDOW, EarlyCommit, HypWord, SegmenterConfig
from scribe.asr.streaming import Committed, UtteranceTranscriber, _drop_boundary_repeat
from scribe.asr.whisper import Recognized
from scribe.models import Word

SR = 16_000

# One speaker, one 12 s turn: four sentences with pauses of 250–300 ms between them (shorter
# than the 500 ms that closes an utterance), then silence.
SCRIPT = [
    "the patient reports a dry cough.",
    "it started four days ago after a cold.",
    "she has no fever and no chest pain.",
    "she takes ramipril five milligrams daily.",
]
PAUSES = [0.3, 0.25, 0.3]


def script_words(first: float = 0.5, per_word: float = 0.35, script: list[str] = SCRIPT,
                 pauses: list[float] = PAUSES) -> list[Word]:
    words, t = [], first
    for k, sentence in enumerate(script):
        for text in sentence.split():
            # a distinct probability per word, to check that it survives to the segment
            words.append(Word(text=text, start=round(t, 3), end=round(t + per_word - 0.05, 3),
                              probability=round(0.5 + (len(words) % 40) / 100, 2)))
            t += per_word
        if k < len(script) - 1:
            t += pauses[k % len(pauses)]
    return words


WORDS = script_words()
SPEECH_END = WORDS[-1].end


class ScriptedVad:
    """Speech probability 0.9 inside a scripted word, 0.05 between words; the state carries
    across calls like the real one."""

    def __init__(self, words: list[Word]):
        self.words = words
        self.fed = 0
        self.rest = 0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        n = (self.rest + len(samples)) // WINDOW
        self.rest = (self.rest + len(samples)) % WINDOW
        out = []
        for i in range(self.fed, self.fed + n):
            t = (i + 0.5) * WINDOW / SR
            # gaps between words inside a sentence are 50 ms: speech-ish, like real audio
            inside = any(w.start - 0.03 <= t <= w.end + 0.05 for w in self.words)
            out.append(0.9 if inside else 0.05)
        self.fed += n
        return np.array(out, dtype=np.float32)


class ScriptedRecognizer:
    """Returns the scripted words wholly inside the decoded audio, as one segment."""

    def __init__(self, words: list[Word]):
        self.words = words
        self.calls: list[tuple[float, float, bool]] = []
        self.model = None

    def transcribe(self, audio: np.ndarray, *, offset: float, final: bool = True) -> list[Recognized]:
        end = offset + len(audio) / SR
        self.calls.append((offset, end, final))
        words = tuple(w for w in self.words if w.start >= offset - 0.02 and w.end <= end)
        if not words:
            return []
        return [Recognized(text=" ".join(w.text for w in words), start=words[0].start, end=words[-1].end,
                           words=words if final else ())]


def stream(early_commit_s: float, *, allow_partial: bool = True, words: list[Word] = WORDS, **kw: float):
    rec = ScriptedRecognizer(words)
    tr = UtteranceTranscriber(rec, ScriptedVad(words), SegmenterConfig.from_ms(soft_max_utterance_s=None),
                              early_commit_s=early_commit_s, **kw)
    duration = words[-1].end + 2.0
    audio = np.zeros(int(duration * SR), dtype=np.float32)
    commits: list[tuple[float, Committed]] = []
    for i in range(0, len(audio), 1600):
        for e in tr.feed(audio[i:i + 1600], allow_partial=allow_partial):
            if isinstance(e, Committed):
                commits.append(((i + 1600) / SR, e))
    for e in tr.flush():
        if isinstance(e, Committed):
            commits.append((duration, e))
    return commits, rec


def text_of(commits) -> str:
    return " ".join(s.text for _, c in commits for s in c.segments)


def test_a_long_utterance_commits_its_early_sentences_before_it_ends():
    commits, _ = stream(2.0)
    full = " ".join(SCRIPT)
    assert text_of(commits) == full  # nothing lost, nothing twice
    first_end = WORDS[len(SCRIPT[0].split()) - 1].end
    when = next(t for t, c in commits if c.segments)
    assert when < SPEECH_END  # the first sentence did not wait for the end of the turn...
    assert when - first_end < 1.0  # ...but came at the pause after it
    early = [s for t, c in commits for s in c.segments if t < SPEECH_END]
    assert [s.text for s in early][:3] == SCRIPT[:3]


def test_sentences_said_without_a_pause_commit_a_second_after_they_end():
    """Speech with no pause between sentences (the VAD never drops): with ``unpaused_s`` the
    open audio is re-decoded anyway and a sentence heard ``right_context_s`` before the audio's
    end is committed; without it the whole turn waits for its end."""
    words = script_words(pauses=[0.0])
    end = words[-1].end
    first_end = words[len(SCRIPT[0].split()) - 1].end
    commits, _ = stream(2.0, words=words, unpaused_s=0.0)
    assert text_of(commits) == " ".join(SCRIPT)
    assert all(t > end for t, c in commits if c.segments)  # no pause: nothing early
    commits, rec = stream(2.0, words=words, unpaused_s=1.5, right_context_s=0.8)
    assert text_of(commits) == " ".join(SCRIPT)  # nothing lost, nothing twice
    when = next(t for t, c in commits if c.segments)
    assert when - first_end <= 1.5 + 0.8 + 0.2
    assert [s.text for t, c in commits for s in c.segments if t < end][:2] == SCRIPT[:2]
    assert all(final for *_, final in rec.calls)  # the re-decodes stand in for partials


def test_without_early_commits_the_turn_is_committed_once_at_its_end():
    commits, rec = stream(0.0)
    assert text_of(commits) == " ".join(SCRIPT)
    assert all(t > SPEECH_END for t, c in commits if c.segments)
    assert sum(1 for *_, final in rec.calls if final) == 1


def test_a_caller_that_is_behind_gets_no_early_commits():
    commits, rec = stream(2.0, allow_partial=False)
    assert text_of(commits) == " ".join(SCRIPT)
    assert all(t > SPEECH_END for t, c in commits if c.segments)
    assert len(rec.calls) == 1


def test_early_segments_keep_word_probabilities_times_and_order():
    commits, _ = stream(2.0)
    segments = [s for _, c in commits for s in c.segments]
    assert [s.index for s in segments] == list(range(len(segments)))
    got = [w for s in segments for w in s.words]
    assert [(w.text, w.start, w.end, w.probability) for w in got] == \
        [(w.text, w.start, w.end, w.probability) for w in WORDS]
    for s in segments:
        assert s.start == s.words[0].start and s.end == s.words[-1].end


def test_resume_point_never_passes_uncommitted_speech():
    """A stream resumes at the last ``until``: every word before it must be committed."""
    commits, _ = stream(2.0)
    committed: set[float] = set()
    for _, c in commits:
        committed |= {x.start for s in c.segments for x in s.words}
        assert all(word.start in committed for word in WORDS if word.end <= c.until / SR)
    assert any(c.until / SR < SPEECH_END and c.segments for _, c in commits)  # early ones advanced it


def test_a_monologue_past_the_length_cap_loses_and_repeats_nothing():
    """Twelve sentences, 33 s without a pause long enough to close the utterance: the length
    cap's cut and the early commits must not drop or repeat a word."""
    script = SCRIPT * 3
    words = script_words(script=script)
    assert words[-1].end > 30  # twice the cap
    commits, _ = stream(2.0, words=words)
    assert text_of(commits) == " ".join(script)
    assert [s.index for _, c in commits for s in c.segments] == list(range(sum(len(c.segments) for _, c in commits)))


def test_a_repeat_across_the_commit_point_is_dropped():
    tail = ["she", "has", "no", "fever."]
    again = [HypWord("fever.", 3.05, 3.3), HypWord("she", 3.5, 3.7)]
    assert [x.text for x in _drop_boundary_repeat(tail, again, 3.0)] == ["she"]
    later = [HypWord("fever", 6.0, 6.3)]  # the same word said again later is kept
    assert _drop_boundary_repeat(tail, later, 3.0) == later


def test_a_clause_heard_well_before_the_audios_end_commits_however_unsure_its_words():
    """The synthetic dictation's "tick bite" ("tick by it." in one decode, "Dig Myet," in
    the next) never agreed and waited 3.9 s for its utterance to end; a clause ended
    ``settled_s`` before the decoded audio's end is final on one hypothesis."""
    unsure = [HypWord("tick", 2.9, 3.1, 0.29), HypWord("by", 3.1, 3.4, 0.31), HypWord("it.", 3.4, 3.86, 0.49),
              HypWord("prescription", 4.0, 4.6, 0.73), HypWord("for", 4.6, 4.9, 0.83)]
    assert EarlyCommit().update(unsure, stable_until=4.5) == []  # no audio end given: confidence rules
    assert EarlyCommit().update(unsure, stable_until=4.5, heard_until=5.0) == []  # heard 1.1 s past it
    [group] = EarlyCommit().update(unsure, stable_until=5.3, heard_until=6.1)  # heard 2.2 s past it
    assert [w.text for w in group] == ["tick", "by", "it."]
    made_up = [HypWord("are", 0.6, 0.8, 0.55), HypWord("you.", 1.1, 1.1, 0.98)]  # no length: never
    assert EarlyCommit().update(made_up, stable_until=1.4, heard_until=9.0) == []


class SkippingRecognizer(ScriptedRecognizer):
    """Whisper's skip of "silence" on speech it is unsure of: the first final decode of the
    turn gives nothing; ``transcribe_speech`` gives the words."""

    def __init__(self, words: list[Word]):
        super().__init__(words)
        self.again: list[tuple[float, float]] = []

    def transcribe(self, audio: np.ndarray, *, offset: float, final: bool = True) -> list[Recognized]:
        out = super().transcribe(audio, offset=offset, final=final)
        return [] if final else out

    def transcribe_speech(self, audio: np.ndarray, *, offset: float) -> list[Recognized]:
        self.again.append((offset, offset + len(audio) / SR))
        return super().transcribe(audio, offset=offset, final=True)


def test_seconds_of_speech_whisper_skipped_as_silence_are_decoded_again():
    """An 8 s dictated utterance was lost whole on the synthetic dictation: faster-whisper
    skipped it as silence (no-speech probability 0.60, unsure text). The VAD heard speech, so
    the transcriber decodes it again without the skip; a blip under two seconds is not."""
    rec = SkippingRecognizer(WORDS)
    tr = UtteranceTranscriber(rec, ScriptedVad(WORDS), SegmenterConfig.from_ms(soft_max_utterance_s=None))
    audio = np.zeros(int((SPEECH_END + 2.0) * SR), dtype=np.float32)
    events = [e for i in range(0, len(audio), 1600) for e in tr.feed(audio[i:i + 1600])] + tr.flush()
    assert " ".join(s.text for e in events if isinstance(e, Committed) for s in e.segments) == " ".join(SCRIPT)
    assert len(rec.again) == 1
    blip = script_words(script=["okay."])
    rec = SkippingRecognizer(blip)
    tr = UtteranceTranscriber(rec, ScriptedVad(blip), SegmenterConfig.from_ms(soft_max_utterance_s=None))
    events = [e for i in range(0, 3 * SR, 1600) for e in tr.feed(np.zeros(1600, dtype=np.float32))] + tr.flush()
    assert not [s for e in events if isinstance(e, Committed) for s in e.segments] and rec.again == []


def test_a_made_up_ending_at_a_pause_is_not_committed_on_one_hypothesis():
    ec = EarlyCommit()
    hyp = [HypWord("the", 0.0, 0.3, 0.9), HypWord("steps", 0.3, 0.6, 0.9), HypWord("are", 0.6, 0.8, 0.55),
           HypWord(".", 0.8, 1.1, 0.04), HypWord("Thank", 1.1, 1.1, 0.16), HypWord("you.", 1.1, 1.1, 0.98)]
    assert ec.update(hyp, stable_until=1.4) == []
    good = [HypWord("no", 0.0, 0.3, 0.9), HypWord("fever.", 0.3, 0.7, 0.95), HypWord("she", 1.0, 1.2, 0.9)]
    [group] = EarlyCommit().update(good, stable_until=1.0)
    assert [w.text for w in group] == ["no", "fever."]


def w(text: str, i: int) -> HypWord:
    return HypWord(text, i * 0.5, i * 0.5 + 0.4, 0.9)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c.", "d", "e?"]), min_size=1, max_size=30), st.integers(1, 6),
       st.booleans())
def test_growing_hypotheses_commit_every_word_once_in_order(words, step, stable):
    ec = EarlyCommit(max_pending_s=2.0)
    hyp = [w(t, i) for i, t in enumerate(words)]
    out: list[HypWord] = []
    for n in range(step, len(hyp) + step, step):
        part = hyp[:n]
        for group in ec.update(part, stable_until=part[-1].end - 1.0 if stable else None):
            assert group and (group[-1].text.endswith((".", "?")) or group[-1].end - group[0].start >= 2.0)
            out += group
    out += ec.close(hyp[-1].end + 1)
    rest = [x for x in hyp if (x.start + x.end) / 2 > ec.committed_until]  # what a final decode adds
    assert [x.text for x in out + rest] == words
