"""The record pass's pure rules (scribe.asr.record): window planning, span replacement, speaker
carry-over by time, label revisions, what is not speech. No model, no store."""

from __future__ import annotations

from scribe.asr.record import (
    Decoded,
    RecordPass,
    carry_speakers,
    not_speech,
    plan_window,
    prompt_from,
    relabel,
    replaced_by,
    unheard,
)
from scribe.audio import SAMPLE_RATE
from scribe.models import Segment, Speaker, Word

SR = SAMPLE_RATE


def seg(i: int, start: float, end: float, speaker: Speaker = Speaker.unknown, text: str = "x") -> Segment:
    return Segment(id=Segment.make_id(i), index=i, start=start, end=end, text=text, speaker=speaker)


def words(*spans: tuple[str, float, float]) -> tuple[Word, ...]:
    return tuple(Word(text=t, start=a, end=b, probability=0.9) for t, a, b in spans)


# Live segments every 4 s: speech [4k, 4k+3], a 1 s pause after each.
LIVE = [seg(i, 4 * i, 4 * i + 3, Speaker.clinician if i % 2 == 0 else Speaker.patient) for i in range(20)]


def test_no_window_until_a_window_of_finished_audio_waits() -> None:
    assert plan_window(0, LIVE, 29 * SR, window_s=30) is None
    plan = plan_window(0, LIVE, 40 * SR, window_s=30)
    assert plan is not None


def test_a_window_ends_in_the_latest_pause_within_the_window() -> None:
    plan = plan_window(0, LIVE, 40 * SR, window_s=30, min_window_s=10)
    # pauses are (3,4), (7,8), … (27,28): the latest inside 30 s is cut at 27.5 s
    assert plan.start == 0 and plan.end == int(27.5 * SR)
    assert plan.replaces == tuple(s.id for s in LIVE[:7])
    # never inside a live segment
    assert not any(s.start * SR < plan.end < s.end * SR for s in LIVE)


def test_windows_follow_on_and_every_live_segment_is_replaced_once() -> None:
    done, seen = 0, []
    end = int(LIVE[-1].end * SR) + SR
    while (plan := plan_window(done, LIVE, end, window_s=30, final=True)) is not None:
        assert plan.start == done and plan.end > done
        assert plan.seconds <= 30
        seen += plan.replaces
        done = plan.end
    assert done == end
    assert seen == [s.id for s in LIVE]


def test_final_takes_the_rest_in_one_window_when_short() -> None:
    plan = plan_window(10 * SR, LIVE, 25 * SR, window_s=30, final=True)
    assert (plan.start, plan.end) == (10 * SR, 25 * SR)
    assert plan_window(10 * SR, LIVE, 25 * SR, window_s=30) is None


def test_a_monologue_without_pauses_is_cut_at_the_window() -> None:
    long = [seg(0, 0.0, 100.0)]
    plan = plan_window(0, long, 100 * SR, window_s=30)
    assert plan.end == 30 * SR


def test_replaced_by_uses_the_middle_of_a_segment() -> None:
    assert [s.id for s in replaced_by(LIVE, 0, 6 * SR)] == [LIVE[0].id, LIVE[1].id]  # 1.5 s and 5.5 s
    assert [s.id for s in replaced_by(LIVE, 0, 5 * SR)] == [LIVE[0].id]


def test_speakers_are_carried_over_by_time_and_a_segment_spanning_a_turn_is_split() -> None:
    live = [seg(0, 0.0, 3.0, Speaker.clinician), seg(1, 4.0, 6.0, Speaker.patient)]
    decoded = [Decoded(text="How are you? Fine.", start=0.0, end=6.0,
                       words=words(("How", 0.2, 0.5), ("are", 0.5, 0.8), ("you?", 0.8, 1.2), ("Fine.", 4.2, 4.8)))]
    out = carry_speakers(decoded, live, first_index=7)
    assert [(s.text, s.speaker) for s in out] == [("How are you?", Speaker.clinician), ("Fine.", Speaker.patient)]
    assert [s.index for s in out] == [7, 8] and [s.id for s in out] == ["rec-00007", "rec-00008"]
    assert out[1].start == 4.2 and out[1].end == 4.8
    assert all(w.probability == 0.9 for s in out for w in s.words)  # kept for the guard


def test_a_word_in_a_pause_takes_the_nearest_speaker() -> None:
    live = [seg(0, 0.0, 3.0, Speaker.clinician), seg(1, 6.0, 8.0, Speaker.patient)]
    decoded = [Decoded(text="okay", start=5.0, end=5.5, words=words(("okay", 5.0, 5.5)))]
    assert carry_speakers(decoded, live, first_index=0)[0].speaker is Speaker.patient


def test_relabel_follows_the_live_majority() -> None:
    live = [seg(0, 0.0, 3.0, Speaker.patient)]
    rec = carry_speakers([Decoded(text="a b", start=0, end=3, words=words(("a", 0, 1), ("b", 1, 2)))],
                         [seg(0, 0.0, 3.0, Speaker.clinician)], first_index=0)
    assert relabel(rec, live) == {rec[0].id: Speaker.patient}
    assert relabel(rec, [seg(0, 0.0, 3.0, Speaker.clinician)]) == {}


def test_not_speech() -> None:
    assert not_speech("Thank you for watching.", no_speech_prob=0.1, avg_logprob=-0.2)
    assert not_speech("Thanks for watching!", no_speech_prob=None, avg_logprob=None)
    assert not_speech("Subtitles by the Amara.org community", no_speech_prob=0.1, avg_logprob=-0.2)
    assert not_speech("the pain started", no_speech_prob=0.9, avg_logprob=-1.5)  # Whisper's own rule
    assert not not_speech("Thank you, doctor.", no_speech_prob=0.1, avg_logprob=-0.3)
    assert not not_speech("the pain started", no_speech_prob=0.9, avg_logprob=-0.3)


def test_prompt_is_the_tail_of_the_previous_text() -> None:
    segs = [seg(i, i, i + 1, text=" ".join(f"w{i}{j}" for j in range(10))) for i in range(10)]
    prompt = prompt_from(segs, words=15)
    assert prompt.split() == [f"w8{j}" for j in range(5, 10)] + [f"w9{j}" for j in range(10)]
    assert prompt_from([]) is None


def test_record_pass_state_replaces_in_order_and_carries_revisions() -> None:
    state = RecordPass(window_s=30)
    for s in LIVE[:10]:
        state.add_live([s], int(s.end * SR))
    plan = state.next()
    assert plan is not None and plan.start == 0
    decoded = [Decoded(text=f"r{i}", start=s.start, end=s.end, words=words((f"r{i}", s.start + 0.1, s.end - 0.1)))
               for i, s in enumerate(LIVE) if s.id in plan.replaces]
    rev = state.accept(plan, decoded)
    assert rev.number == 0 and rev.replaces == plan.replaces
    assert [s.speaker for s in rev.segments] == [LIVE[i].speaker for i in range(len(rev.segments))]
    assert state.done == plan.end and state.next_index == len(rev.segments)
    assert all((s.start + s.end) / 2 * SR >= plan.end for s in state.live)
    # a label revision of a replaced live segment reaches the record segment that replaced it
    carried = state.relabel({LIVE[0].id: Speaker.patient})
    assert carried == {rev.segments[0].id: Speaker.patient}
    # one of a segment not yet replaced changes nothing in the record pass
    assert state.relabel({LIVE[9].id: Speaker.clinician}) == {}
    nxt = state.next(final=True)
    assert nxt.start == plan.end
    rev2 = state.accept(nxt, [])
    assert rev2.number == 1 and rev2.segments == ()


def test_live_speech_the_record_decode_skipped_stays_in_the_record() -> None:
    """faster-whisper skips up to 30 s it takes for silence when it is also unsure of the text
    (an 8 s dictated utterance was lost so in the live pass, session 12): the live words stay."""
    said = [seg(0, 0.0, 3.0, Speaker.clinician, "assessment and plan, number one."),
            seg(1, 4.0, 12.0, Speaker.clinician, "prescription for doxycycline 100 milligrams twice a day"),
            seg(2, 13.0, 14.0, Speaker.patient, "thank you."),
            seg(3, 15.0, 19.0, Speaker.clinician, "number two, hypertension.")]
    state = RecordPass(window_s=30)
    state.add_live(said, 20 * SR)
    plan = state.next(final=True)
    decoded = [Decoded(text="Assessment and plan, number one.", start=0.1, end=2.9,
                       words=words(("Assessment", 0.1, 0.8), ("one.", 2.3, 2.9))),
               Decoded(text="Number two, hypertension.", start=15.0, end=18.9,
                       words=words(("Number", 15.0, 15.4), ("hypertension.", 17.5, 18.9)))]
    rev = state.accept(plan, decoded)
    assert [s.text for s in rev.segments] == ["Assessment and plan, number one.",
                                              "prescription for doxycycline 100 milligrams twice a day",
                                              "Number two, hypertension."]  # not the short "thank you."
    assert [s.index for s in rev.segments] == [0, 1, 2] and rev.segments[1].id == "rec-00001"
    assert rev.segments[1].speaker is Speaker.clinician and set(rev.replaces) == {s.id for s in said}
    # a word of the decode inside the span counts as heard
    assert unheard(said[1:2], [Decoded(text="for", start=6.0, end=6.3, words=words(("for", 6.0, 6.3)))]) == []
    assert unheard(said[1:2], []) == said[1:2]


def test_record_pass_resumes_from_stored_progress() -> None:
    state = RecordPass(window_s=30, done=int(27.5 * SR), next_index=5, number=1, live=LIVE, live_until=80 * SR)
    assert [s.id for s in state.live] == [s.id for s in LIVE[7:]]
    plan = state.next()
    assert plan.start == int(27.5 * SR)
    rev = state.accept(plan, [Decoded(text="x", start=29.0, end=30.0)])
    assert rev.number == 1 and rev.segments[0].index == 5


def test_turns_finer_than_the_live_segments_label_the_record_and_relabel_it_all() -> None:
    """A live segment that holds a question and its answer ("No, no blood. Yeah, just watery")
    has one label; the labeller's word-level turns tell the two voices apart, and the record
    pass labels its own segments from them — those already stored too (hindsight)."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class T:
        start: float
        end: float
        speaker: Speaker

    state = RecordPass(window_s=30)
    live = [seg(0, 0.0, 3.0, Speaker.clinician), seg(1, 3.5, 9.0, Speaker.clinician)]  # 1 holds both voices
    state.add_live(live, int(40 * SR))
    plan = state.next()
    assert plan is not None
    turns = [T(0.0, 3.0, Speaker.clinician), T(3.5, 5.0, Speaker.clinician), T(5.2, 9.0, Speaker.patient)]
    assert state.set_turns(turns) == {}  # nothing stored yet to relabel
    decoded = [Decoded(text="Any blood? No, no blood.", start=3.5, end=9.0,
                       words=words(("Any", 3.6, 4.0), ("blood?", 4.0, 4.8), ("No,", 5.4, 5.8), ("no", 5.8, 6.1),
                                   ("blood.", 6.1, 6.8)))]
    rev = state.accept(plan, decoded)
    assert [(s.text, s.speaker) for s in rev.segments] == [("Any blood?", Speaker.clinician),
                                                          ("No, no blood.", Speaker.patient)]
    # later, with the whole visit heard, the labeller re-decides the first voice: stored segments follow
    changed = state.set_turns([T(0.0, 3.0, Speaker.clinician), T(3.5, 5.0, Speaker.patient),
                               T(5.2, 9.0, Speaker.patient)])
    assert changed == {rev.segments[0].id: Speaker.patient}
    assert [s.speaker for s in state.record] == [Speaker.patient, Speaker.patient]


def test_turns_that_have_not_heard_the_window_are_not_used() -> None:
    state = RecordPass(window_s=30)
    state.add_live([seg(0, 0.0, 3.0, Speaker.clinician), seg(1, 4.0, 8.0, Speaker.patient)], int(40 * SR))
    state.set_turns([seg(0, 0.0, 3.0, Speaker.clinician)])  # stale: decided before segment 1 was heard
    plan = state.next()
    assert plan is not None
    rev = state.accept(plan, [Decoded(text="fine", start=4.0, end=8.0, words=words(("fine", 4.5, 5.0)))])
    assert rev.segments[0].speaker is Speaker.patient  # from the live segment, not the nearest stale turn
