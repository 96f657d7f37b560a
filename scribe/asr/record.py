"""The record pass, pure: which finished audio to re-transcribe next, which live segments the
result replaces, which speaker each new segment carries, and what text is not speech.

The live pass decodes each utterance alone as soon as it ends: quick, but it loses what long
windows and the previous text give Whisper (on held-out OSCE recordings tiny.en streamed at
27 % WER against 22 % offline). The record pass follows behind the live edge and decodes the
same audio the way offline transcription does, in windows of about ``window_s`` seconds with
the previous window's text as the prompt. Its segments replace the live ones for the same
span. This module holds the rules; the service (``scribe/service/recording.py``) does the I/O
and ``scribe.asr.offline.transcribe_window`` the decoding. No model, no store, no clock.

Windows are cut in a pause the live pass found (between two live segments), never inside a
live segment, so every live segment is replaced by exactly one window and no word is split.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..audio import SAMPLE_RATE
from ..models import Segment, Speaker, Word

PROMPT_WORDS = 60
"""Words of the previous record-pass text given as the next window's prompt: a few sentences
of context (Whisper's prompt holds up to 224 tokens; more invites repeating it)."""


@dataclass(frozen=True)
class WindowPlan:
    """Re-transcribe samples ``[start, end)``; ``replaces``: the live segment ids inside."""

    start: int
    end: int
    replaces: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def replaced_by(live: Iterable[Segment], start: int, end: int) -> list[Segment]:
    """Live segments whose middle lies in samples ``[start, end)``: the ones a window replaces."""
    out = []
    for seg in live:
        mid = (seg.start + seg.end) / 2 * SAMPLE_RATE
        if start <= mid < end:
            out.append(seg)
    return out


def plan_window(done: int, live: Sequence[Segment], live_until: int, *, window_s: float = 30.0,
                min_window_s: float = 10.0, final: bool = False) -> WindowPlan | None:
    """The next window after sample ``done``, or None when it should wait.

    ``live``: the live segments (sorted), ``live_until``: the sample the live pass has
    committed up to (the audio before it is finished). During the visit a window is planned once
    ``window_s`` of finished audio is waiting; it ends in the latest pause between two live
    segments that leaves it between ``min_window_s`` and ``window_s`` long (without such a pause,
    a long monologue, it ends in the widest pause past ``min_window_s``, else at ``window_s``).
    ``final`` (after stop, ``live_until`` = the end of the audio): whatever remains, in windows of
    at most ``window_s`` cut the same way; the last one runs to the end.
    """
    if live_until <= done:
        return None
    window = int(window_s * SAMPLE_RATE)
    waiting = live_until - done
    if waiting < window and not final:
        return None
    if waiting <= window:  # final: the rest in one window
        return WindowPlan(done, live_until, tuple(s.id for s in replaced_by(live, done, live_until)))
    lo, hi = done + int(min_window_s * SAMPLE_RATE), done + window
    after = [s for s in live if (s.start + s.end) / 2 * SAMPLE_RATE >= done]
    cuts: list[tuple[int, int]] = []  # (cut sample, pause width in samples)
    for a, b in zip(after, after[1:]):
        gap_lo, gap_hi = int(a.end * SAMPLE_RATE), int(b.start * SAMPLE_RATE)
        if gap_hi < gap_lo:
            gap_lo = gap_hi = (gap_lo + gap_hi) // 2  # overlapping segments: cut between them
        cut = (gap_lo + gap_hi) // 2
        if lo <= cut <= hi and cut <= live_until:
            cuts.append((cut, gap_hi - gap_lo))
    if cuts:
        end = max(cuts)[0]  # the latest pause in range
    else:
        end = min(hi, live_until)
    return WindowPlan(done, end, tuple(s.id for s in replaced_by(live, done, end)))


# Whisper, trained on subtitles, writes these over silence, music and hum. None of them is
# something a clinician or patient says in a consultation; anything else is kept.
_HALLUCINATIONS = re.compile(
    r"(thanks?( you)? (so much )?for watching|please subscribe|like and subscribe|subtitles? (by|created)|"
    r"amara\.org|transcri(bed|ption) by|captions? by|see you in the next video|www\.|\.com\b)",
    re.IGNORECASE,
)


def not_speech(text: str, *, no_speech_prob: float | None, avg_logprob: float | None) -> bool:
    """Whether a decoded segment is not speech: Whisper's own rule (it thought there was no
    speech and was unsure of the text it wrote anyway), or one of the subtitle phrases it
    writes over silence and noise."""
    if no_speech_prob is not None and avg_logprob is not None and no_speech_prob > 0.6 and avg_logprob < -1.0:
        return True
    return hallucinated(text)


def hallucinated(text: str) -> bool:
    """One of the subtitle phrases Whisper writes over silence and noise."""
    return bool(_HALLUCINATIONS.search(text))


def prompt_from(segments: Sequence[Segment], words: int = PROMPT_WORDS) -> str | None:
    """The previous text given as the next window's context: its last ``words`` words."""
    tail: list[str] = []
    for seg in reversed(segments):
        tail[:0] = seg.text.split()
        if len(tail) >= words:
            break
    return " ".join(tail[-words:]) or None


@dataclass
class _Piece:
    speaker: Speaker
    words: list[Word] = field(default_factory=list)


class Voiced(Protocol):
    """A stretch of one voice: a live segment, or a turn of the labeller's word-level timeline."""

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def speaker(self) -> Speaker: ...


class Timeline:
    """Who spoke when: stretches of one voice in time order, asked by time (bisection, so a
    whole visit's record segments can be relabelled against a whole visit's turns)."""

    def __init__(self, spans: Iterable[Voiced]):
        self.spans = sorted(spans, key=lambda v: (v.start, v.end))
        self.starts = [v.start for v in self.spans]

    def __bool__(self) -> bool:
        return bool(self.spans)

    @property
    def end(self) -> float:
        return max((v.end for v in self.spans), default=0.0)

    def at(self, t: float) -> Speaker:
        """The speaker of the stretch that holds time ``t``, else of the nearest one."""
        k = bisect_right(self.starts, t)
        best, dist = Speaker.unknown, float("inf")
        # a stretch holding t starts at or before it; the longest earlier stretches may reach
        # past later ones, so look back a few, and at the next one for the nearest
        for v in self.spans[max(0, k - 4):k + 1]:
            if v.start <= t <= v.end:
                return v.speaker
            d = min(abs(v.start - t), abs(v.end - t))
            if d < dist:
                best, dist = v.speaker, d
        return best

    @classmethod
    def of(cls, spans: Sequence[Voiced] | Timeline) -> Timeline:
        """``spans`` as a timeline (built once per call of the functions that take either)."""
        return spans if isinstance(spans, Timeline) else cls(spans)


@dataclass(frozen=True)
class Decoded:
    """One segment the record pass decoded (times in encounter seconds)."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


def record_id(index: int) -> str:
    """A record-pass segment's id: ``rec-`` and its index (live segments are ``seg-``)."""
    return f"rec-{index:05d}"


def carry_speakers(decoded: Sequence[Decoded], live: Sequence[Voiced] | Timeline, *,
                   first_index: int) -> list[Segment]:
    """Record-pass segments with the live pass's speaker labels, carried over by time.

    Each word takes the speaker of the live segment (or the labeller's turn, which may be a
    part of one) it falls in (the nearest one when it falls in a pause); a decoded segment that spans a change of speaker (Whisper joins a short answer
    to the question before it) is split there, so a segment has one speaker, as live ones do.
    Words keep their probabilities (the guard flags low-confidence words from them).
    """
    timeline = Timeline.of(live)
    out: list[Segment] = []
    for d in decoded:
        if not d.words:
            pieces = [_Piece(timeline.at((d.start + d.end) / 2))]
        else:
            pieces = []
            for w in d.words:
                who = timeline.at((w.start + w.end) / 2)
                if not pieces or pieces[-1].speaker != who:
                    pieces.append(_Piece(who))
                pieces[-1].words.append(w)
        for piece in pieces:
            if piece.words:
                text = " ".join(w.text for w in piece.words)
                start, end = piece.words[0].start, piece.words[-1].end
                if len(pieces) == 1:
                    text, start, end = d.text, min(d.start, start), max(d.end, end)
            else:
                text, start, end = d.text, d.start, d.end
            if not text.strip():
                continue
            index = first_index + len(out)
            out.append(Segment(id=record_id(index), index=index, start=round(start, 3), end=round(end, 3),
                               text=text.strip(), words=list(piece.words), speaker=piece.speaker,
                               avg_logprob=d.avg_logprob, no_speech_prob=d.no_speech_prob))
    return out


UNHEARD_MIN_WORDS = 3
"""Fewest words a live segment needs to be kept when the record decode has nothing for it: a
short one ("Thank you.", "you") is more likely Whisper's over noise than speech it skipped."""


def unheard(covered: Sequence[Segment], decoded: Sequence[Decoded], *, slack: float = 0.5) -> list[Segment]:
    """Live segments of a window for which the record decode has no word within ``slack``
    seconds of their span. faster-whisper skips up to 30 s of audio it takes for silence when
    it is also unsure of the text (no-speech probability over 0.6, mean log-probability under
    -1; an 8 s dictated utterance with a mumbled drug name sat at 0.60); what the live pass heard
    there must not leave the transcript of record because the record pass did not."""
    spans = [(w.start, w.end) for d in decoded for w in (d.words or (d,))]
    out = []
    for seg in covered:
        if sum(1 for w in seg.text.split() if any(ch.isalnum() for ch in w)) < UNHEARD_MIN_WORDS:
            continue
        if not any(a < seg.end + slack and b > seg.start - slack for a, b in spans):
            out.append(seg)
    return out


def relabel(record: Sequence[Segment], live: Sequence[Voiced] | Timeline) -> dict[str, Speaker]:
    """Label revisions of the live pass, carried to the record segments that cover them: each
    record segment takes the speaker of the live segment (or turn) holding most of its words
    (its middle when it has no words). Returns only the segments whose speaker changes."""
    timeline = Timeline.of(live)
    out: dict[str, Speaker] = {}
    for seg in record:
        if seg.words:
            votes: dict[Speaker, int] = {}
            for w in seg.words:
                who = timeline.at((w.start + w.end) / 2)
                votes[who] = votes.get(who, 0) + 1
            speaker = max(votes.items(), key=lambda kv: kv[1])[0]
        else:
            speaker = timeline.at((seg.start + seg.end) / 2)
        if speaker != seg.speaker:
            out[seg.id] = speaker
    return out


@dataclass(frozen=True)
class Revision:
    """One record-pass window done: ``segments`` replace the live segments ``replaces`` for
    samples ``[start, end)``. ``number`` counts the encounter's windows from 0."""

    number: int
    start: int
    end: int
    replaces: tuple[str, ...]
    segments: tuple[Segment, ...]


class RecordPass:
    """One encounter's record pass, as state: the live segments not yet replaced, where the
    record pass has got to, and its recent segments (the next prompt; label revisions).

    The caller feeds it the live pass (``add_live``), asks for the next window (``next``),
    decodes the window's audio and hands the result back (``accept``). A resume starts it from
    what the store holds (``done``, ``next_index``, ``number`` and the record segments so far).
    """

    KEEP = 2000
    """Record and replaced live segments kept in memory for label revisions (re-decided over the
    whole visit: ``Labeller.hindsight``) and the prompt; about two hours of conversation."""

    def __init__(self, *, window_s: float = 30.0, done: int = 0, next_index: int = 0, number: int = 0,
                 record: Sequence[Segment] = (), live: Sequence[Segment] = (), live_until: int = 0):
        self.window_s = window_s
        self.done = done
        self.next_index = next_index
        self.number = number
        self.record: list[Segment] = list(record)[-self.KEEP:]
        self.live: list[Segment] = []
        self.replaced: list[Segment] = []
        """Live segments already replaced, recent ones (label revisions may still name them)."""
        self.turns = Timeline(())
        """The labeller's word-level timeline of the visit so far (``set_turns``): finer than the
        live segments, which may hold both voices; empty without a labeller."""
        self.live_until = live_until
        self.add_live(live, live_until)

    def add_live(self, segments: Iterable[Segment], until: int) -> None:
        """Newly committed live segments, and the sample the live pass has committed up to."""
        for seg in segments:
            if (seg.start + seg.end) / 2 * SAMPLE_RATE >= self.done:
                self.live.append(seg)
            else:
                self.replaced.append(seg)
        self.replaced = self.replaced[-self.KEEP:]
        self.live_until = max(self.live_until, until)

    def next(self, *, final: bool = False) -> WindowPlan | None:
        return plan_window(self.done, self.live, self.live_until, window_s=self.window_s, final=final)

    @property
    def prompt(self) -> str | None:
        """The previous text, for the next window's prompt (``asr.record_prompt``)."""
        return prompt_from(self.record)

    def accept(self, plan: WindowPlan, decoded: Sequence[Decoded]) -> Revision:
        """The window's decoded segments: labelled by time from the live segments they replace
        (and their neighbours), numbered on from the last record segment. A live segment the
        decode has nothing for (``unheard``) stays in the record as it was."""
        covered = replaced_by(self.live, plan.start, plan.end)
        ids = {s.id for s in covered}
        context: Sequence[Voiced] | Timeline = covered or self.live[:1] or self.replaced[-1:]
        if self.turns and self.turns.end >= max((s.end for s in covered), default=0.0) - 0.01:
            context = self.turns  # it has heard every live segment of this window
        segments = carry_speakers(decoded, context, first_index=self.next_index)
        kept = unheard(covered, decoded)
        if kept:  # in the record as the live pass heard them, in time order, numbered on
            segments = [s.model_copy(update={"id": record_id(self.next_index + i), "index": self.next_index + i})
                        for i, s in enumerate(sorted([*segments, *kept], key=lambda s: s.start))]
        self.live = [s for s in self.live if s.id not in ids]
        self.replaced = [*self.replaced, *covered][-self.KEEP:]
        self.record = [*self.record, *segments][-self.KEEP:]
        self.next_index += len(segments)
        self.done = plan.end
        revision = Revision(self.number, plan.start, plan.end, tuple(s.id for s in covered), tuple(segments))
        self.number += 1
        return revision

    def relabel(self, revisions: dict[str, Speaker]) -> dict[str, Speaker]:
        """The live pass revised speaker labels: the same revisions, for the record segments
        that replaced those live segments (the others are not replaced yet: nothing to do)."""
        hit = False
        for i, seg in enumerate(self.replaced):
            if seg.id in revisions:
                self.replaced[i] = seg.model_copy(update={"speaker": revisions[seg.id]})
                hit = True
        for i, seg in enumerate(self.live):
            if seg.id in revisions:
                self.live[i] = seg.model_copy(update={"speaker": revisions[seg.id]})
        if not hit:
            return {}
        lo = min(s.start for s in self.replaced if s.id in revisions) - 1.0
        hi = max(s.end for s in self.replaced if s.id in revisions) + 1.0
        affected = [s for s in self.record if s.end >= lo and s.start <= hi]
        return self._apply(relabel(affected, self.replaced))

    def set_turns(self, turns: Iterable[Voiced]) -> dict[str, Speaker]:
        """The labeller's timeline of the whole visit so far, re-decided with hindsight: the
        record segments whose speaker it changes (all of them held, not only recent ones), with
        the change applied; the next windows are labelled from it."""
        self.turns = Timeline(turns)
        if not self.turns:
            return {}
        return self._apply(relabel(self.record, self.turns))

    def _apply(self, changed: dict[str, Speaker]) -> dict[str, Speaker]:
        """Record segments' new speakers, applied to those held; returned as given."""
        if changed:
            self.record = [s.model_copy(update={"speaker": changed[s.id]}) if s.id in changed else s
                           for s in self.record]
        return changed
