"""The commit policies: pure, property-tested."""

from hypothesis import given, settings
from hypothesis import strategies as st

from scribe.asr.cleanup import collapse_loops
from scribe.asr.commit import WINDOW, HypWord, LocalAgreement, SegmenterConfig, UtteranceSegmenter

CFG = SegmenterConfig(min_silence_windows=5, min_speech_windows=2, max_windows=40, pad_windows=1,
                      min_utterance_windows=4, max_silence_windows=8)


def run(probs, splits=None, cfg=CFG):
    seg = UtteranceSegmenter(cfg)
    out = []
    if splits is None:
        out += seg.feed(probs)
    else:
        i = 0
        for n in splits:
            out += seg.feed(probs[i:i + n])
            i += n
        out += seg.feed(probs[i:])
    out += seg.flush()
    return out


def test_single_utterance_closed_by_silence():
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 10
    [u] = run(probs)
    assert u.reason == "silence"
    assert u.start == (10 - 1) * WINDOW and u.end == (30 + 1) * WINDOW


def test_short_pause_inside_a_short_utterance_does_not_close_it():
    probs = [0.9] * 3 + [0.0] * 6 + [0.9] * 3 + [0.0] * 20
    [u] = run(probs)  # first part is shorter than min_utterance: it waits for more speech
    assert u.start == 0 and u.end >= 12 * WINDOW


def test_click_is_dropped():
    assert run([0.0] * 5 + [0.9] + [0.0] * 20) == []


def test_long_speech_is_cut_at_the_longest_pause():
    probs = [0.9] * 25 + [0.05] * 3 + [0.9] * 5 + [0.2] * 1 + [0.9] * 30 + [0.0] * 10
    us = run(probs)
    assert us[0].reason == "max_length"
    assert 25 * WINDOW <= us[0].end <= 28 * WINDOW
    assert all(a.end <= b.start for a, b in zip(us, us[1:]))


def test_long_utterance_closes_on_a_shorter_pause():
    """Brisk turn-taking: a 3-window pause does not end a short utterance but ends a long one."""
    short = [0.9] * 6 + [0.0] * 3 + [0.9] * 6 + [0.0] * 12
    assert len(run(short, cfg=SOFT)) == 1
    long_ = [0.9] * 14 + [0.0] * 3 + [0.9] * 6 + [0.0] * 12
    first, second = run(long_, cfg=SOFT)
    assert first.end <= second.start and first.end <= (14 + 1 + SOFT.pad_windows) * WINDOW
    assert len(run(long_, cfg=CFG)) == 1  # without the soft limit the pause is not enough


def test_reopen_moves_audio_into_the_next_utterance():
    seg = UtteranceSegmenter(CFG)
    [u] = seg.feed([0.9] * 40)
    seg.reopen(u.end - 10 * WINDOW)
    rest = seg.feed([0.9] * 5 + [0.0] * 10)
    assert rest and rest[0].start == u.end - 10 * WINDOW


probs_strategy = st.lists(st.sampled_from([0.0, 0.1, 0.4, 0.45, 0.6, 0.95]), max_size=400)


SOFT = SegmenterConfig(min_silence_windows=5, min_speech_windows=2, max_windows=40, pad_windows=1,
                       min_utterance_windows=4, max_silence_windows=8, soft_max_windows=12, short_silence_windows=2)
configs = st.sampled_from([CFG, SOFT])


@settings(max_examples=300, deadline=None)
@given(probs_strategy, st.lists(st.integers(min_value=0, max_value=50), max_size=30), configs)
def test_any_split_gives_the_same_utterances(probs, splits, cfg):
    assert run(probs, splits, cfg) == run(probs, cfg=cfg)


@settings(max_examples=300, deadline=None)
@given(probs_strategy, configs)
def test_utterances_are_ordered_disjoint_and_cover_sustained_speech(probs, cfg):
    us = run(probs, cfg=cfg)
    for u in us:
        assert u.start < u.end
    assert all(a.end <= b.start for a, b in zip(us, us[1:]))
    # every window inside a run of >= min_speech voiced windows is in exactly one utterance
    i = 0
    while i < len(probs):
        if probs[i] >= cfg.threshold:
            j = i
            while j < len(probs) and probs[j] >= cfg.threshold:
                j += 1
            if j - i >= cfg.min_speech_windows:
                for w in range(i, j):
                    hits = [u for u in us if u.start <= w * WINDOW < u.end]
                    assert len(hits) == 1, (w, us)
            i = j
        else:
            i += 1


def w(text, t):
    return HypWord(text, t, t + 0.3)


def test_local_agreement_commits_the_agreed_prefix_once():
    la = LocalAgreement()
    assert la.update([w("the", 0), w("patient", 0.4)]) == []
    got = la.update([w("the", 0), w("patient", 0.4), w("reports", 0.8)])
    assert [x.text for x in got] == ["the", "patient"]
    got = la.update([w("the", 0), w("patient", 0.4), w("reports", 0.8), w("pain", 1.2)])
    assert [x.text for x in got] == ["reports"]
    assert [x.text for x in la.flush()] == ["pain"]
    assert [x.text for x in la.committed] == ["the", "patient", "reports", "pain"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=30), st.integers(1, 6))
def test_local_agreement_on_a_growing_stable_hypothesis_commits_every_word_once(words, step):
    la = LocalAgreement()
    hyp = [w(t, i * 0.5) for i, t in enumerate(words)]
    for n in range(step, len(hyp) + step, step):
        la.update(hyp[:n])
    la.flush()
    assert [x.text for x in la.committed] == words


def test_collapse_loops_keeps_real_repeats():
    assert collapse_loops("okay okay okay okay okay okay".split())[0] == ["okay", "okay"]
    assert collapse_loops("no no I said no".split())[0] == "no no I said no".split()
