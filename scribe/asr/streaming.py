"""Streaming transcribers: audio in, partial text and committed segments out.

These are synchronous and single-threaded on purpose: the server runs each session's
transcriber in a worker thread (model calls block), feeding it audio in order. Memory is
bounded: only the open utterance (≤ ``max_utterance_s``) plus padding is kept, whatever the
length of the visit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypedDict, TypeVar

import numpy as np

from ..audio import SAMPLE_RATE
from ..models import Segment, Word
from .cleanup import _key, collapse_loops, drop_overlap
from .commit import WINDOW, EarlyCommit, HypWord, LocalAgreement, SegmenterConfig, UtteranceSegmenter
from .whisper import Recognized, Recognizer


@dataclass(frozen=True)
class PartialText:
    """Unstable text of the open utterance, for display only."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Committed:
    """Final segments; ``until`` is the sample up to which audio is fully transcribed."""

    segments: tuple[Segment, ...]
    until: int


TranscriberEvent = PartialText | Committed


def _segments(
    recognized: list[Recognized], first_index: int, *, not_before: float | None = None, previous: list[str] | None = None
) -> list[Segment]:
    """Turn recogniser output into numbered segments.

    ``not_before``: words centred before this time belonged to context audio decoded only to
    steady the model; they were committed with the previous utterance and are dropped here.
    Loops are collapsed (``cleanup.collapse_loops``).
    """
    out: list[Segment] = []
    floor = not_before
    history = list(previous or [])
    for r in recognized:
        words = list(r.words)
        if floor is not None and words:
            # Whisper sometimes re-emits audio it already covered (from the lead-in or an
            # earlier segment of the same decode): keep only words centred after the floor,
            # then drop a leading repeat of what was just committed.
            words = [w for w in words if (w.start + w.end) / 2 >= floor]
            if history:
                words, _ = drop_overlap(history, words, text_of=lambda w: w.text)
        if words:
            words, _ = collapse_loops(words, text_of=lambda w: w.text)
            text = " ".join(w.text for w in words).strip()
        elif floor is not None and r.start < floor:
            continue  # no word alignment and inside audio already covered: a re-emission
        else:
            tokens, _ = collapse_loops(r.text.split())
            text = " ".join(tokens)
        if not any(ch.isalnum() for ch in text):
            continue  # "." or "..." alone: Whisper's reading of a breath or a click
        index = first_index + len(out)
        out.append(
            Segment(
                id=Segment.make_id(index),
                index=index,
                start=words[0].start if words else r.start,
                end=words[-1].end if words else r.end,
                text=text,
                words=words,
                avg_logprob=r.avg_logprob,
                no_speech_prob=r.no_speech_prob,
            )
        )
        floor = out[-1].end
        history = (history + [w.text for w in words])[-30:]
    return out


class _TimedWord(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def start(self) -> float: ...


_W = TypeVar("_W", bound=_TimedWord)

SPEECH_NOT_SKIPPED_S = 2.0
"""An utterance's final decode that gives no words for this much VAD-voiced audio is decoded
again without Whisper's skip of silence (a recogniser's optional ``transcribe_speech``)."""


def _drop_boundary_repeat(tail: list[str], words: list[_W], floor: float | None) -> list[_W]:
    """Drop the first one to three words when they repeat the last committed ones and start
    within half a second of the commit point: the same word decoded again with its timestamps
    shifted past the point (word times move by 0.1–0.3 s between decodes of the same audio)."""
    if not words or floor is None or words[0].start > floor + 0.5:
        return words
    done = [_key(t) for t in tail]
    for n in (3, 2, 1):
        if len(done) >= n and len(words) >= n and [_key(w.text) for w in words[:n]] == done[-n:]:
            return words[n:]
    return words


def _boundary(r: Recognized, tail: list[str], floor: float | None) -> Recognized | None:
    """``r`` without words centred before ``floor`` or repeating the committed tail across it."""
    if floor is None or not r.words:
        return r
    words = [w for w in r.words if (w.start + w.end) / 2 >= floor]
    kept = _drop_boundary_repeat(tail, words, floor)
    if not kept:
        return None
    return Recognized(text=" ".join(w.text for w in kept), start=kept[0].start, end=kept[-1].end,
                      words=tuple(kept), avg_logprob=r.avg_logprob, no_speech_prob=r.no_speech_prob)


class _Buffer:
    """Audio kept in memory, addressed by encounter-time sample offsets."""

    def __init__(self, origin: int):
        self.start = origin
        self.data = np.zeros(0, dtype=np.float32)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def append(self, samples: np.ndarray) -> None:
        self.data = np.concatenate([self.data, samples.astype(np.float32, copy=False)])

    def slice(self, start: int, end: int) -> np.ndarray:
        return self.data[max(0, start - self.start) : max(0, end - self.start)]

    def drop_before(self, sample: int) -> None:
        sample = min(sample, self.end)
        if sample > self.start:
            self.data = self.data[sample - self.start :].copy()
            self.start = sample


class UtteranceOptions(TypedDict):
    """The ``UtteranceTranscriber`` keywords that come from settings (``AsrSettings.utterance_options``)."""

    partial_interval_s: float
    context_s: float
    early_commit_s: float
    unpaused_s: float


class UtteranceTranscriber:
    """VAD-delimited utterances, each decoded once at end of speech (the CPU default).

    ``early_commit_s`` > 0: once an utterance has run that long, its open audio is re-decoded
    at each short pause (``pause_s`` below the VAD threshold, shorter than the silence that
    closes an utterance) and the complete sentences and clauses heard before it are committed
    (``commit.EarlyCommit``), so a long utterance's early words do not wait for its end; the
    final decode then covers only what was not committed. ``unpaused_s`` > 0: speech that runs
    that long with no pause is re-decoded anyway, and sentences ending ``right_context_s``
    before the audio's end are committed (these decodes replace the display partials). Like
    partials, these re-decodes are skipped when the caller is behind (``allow_partial=False``):
    under load the policy falls back to one decode per utterance.

    ``origin`` and ``first_index`` let a stream resume mid-encounter: the server restarts the
    transcriber at the last committed sample with the next segment index, so resumed audio
    yields no duplicate and skips nothing.
    """

    def __init__(
        self,
        recognizer: Recognizer,
        vad: Callable[[np.ndarray], np.ndarray],
        config: SegmenterConfig | None = None,
        *,
        origin: int = 0,
        first_index: int = 0,
        partial_interval_s: float = 2.0,
        partial_window_s: float = 6.0,
        context_s: float = 0.0,
        early_commit_s: float = 0.0,
        pause_s: float = 0.096,
        max_pending_s: float = 6.0,
        early_context_s: float = 3.0,
        pause_wait_s: float = 0.3,
        unpaused_s: float = 0.0,
        right_context_s: float = 0.8,
    ):
        self.recognizer = recognizer
        self.vad = vad
        self.context = int(context_s * SAMPLE_RATE)
        """Already-committed audio decoded again before an utterance (its words dropped):
        Whisper is steadier with a little lead-in than on a bare fragment."""
        self.segmenter = UtteranceSegmenter(config or SegmenterConfig(), origin=origin)
        self.buffer = _Buffer(origin)
        self.next_index = first_index
        self.partial_interval = int(partial_interval_s * SAMPLE_RATE)
        self.partial_window = int(partial_window_s * SAMPLE_RATE)
        self._last_partial = origin
        self.decoded_seconds = 0.0
        """Audio seconds sent to the recogniser (final + partial), for cost accounting."""
        self.partial_seconds = 0.0
        self.partial_wall_s = 0.0
        """Audio sent for display-only partials, and the wall time those decodes took (the bench reports it)."""
        self.uncovered_tolerance_s = 1.0
        self._probs: deque[float] = deque(maxlen=int(self.segmenter.config.max_windows * 1.5) + 64)
        """Recent VAD probabilities (the last ends at ``segmenter.position``)."""
        self._tail: list[str] = []
        """The last committed words, to drop any that leak back in from lead-in audio."""
        self.early_commit = int(early_commit_s * SAMPLE_RATE)
        self.pause = max(1, round(pause_s * SAMPLE_RATE / WINDOW))
        """Windows below the VAD threshold that make a pause worth a decode (~100 ms: fluent
        speech often makes no pause of 160 ms between sentences, docs/benchmarks.md)."""
        self.early_context = int(early_context_s * SAMPLE_RATE)
        self.pause_wait = int(pause_wait_s * SAMPLE_RATE)
        """The decode at a pause waits this long after it began: Whisper writes the last word
        before a pause more reliably when it also hears what follows (speech or silence)."""
        self.unpaused = int(unpaused_s * SAMPLE_RATE)
        self.right_context = right_context_s
        """Speech with no pause: after ``unpaused`` samples without an early decode, decode anyway
        and commit the sentences heard ``right_context`` seconds or more before the audio's end."""
        self._last_agree = origin
        self._pause_decoded: int | None = None
        self._pause_seen: int | None = None
        self._quiet = 0
        self.early = EarlyCommit(max_pending_s=max_pending_s, committed_until=origin / SAMPLE_RATE)
        self._early_until = origin
        """End of the last early-committed segment (a resume may start there)."""
        self.early_seconds = 0.0
        self.early_wall_s = 0.0
        """Audio re-decoded for early commits, and the wall time it took (the bench reports it)."""

    @property
    def committed_until(self) -> int:
        return max(self.segmenter.settled(), self._early_until)

    def feed(self, samples: np.ndarray, *, allow_partial: bool = True) -> list[TranscriberEvent]:
        self.buffer.append(samples)
        events: list[TranscriberEvent] = []
        probs = self.vad(samples)
        self._probs.extend(probs.tolist())
        self._note_pauses(probs)
        for utt in self.segmenter.feed(probs):
            events.append(self._commit(utt.start, utt.end, cut=utt.reason == "max_length"))
        if events or not self.segmenter.in_speech:
            self._last_partial = self.segmenter.position
        start = self.segmenter.open_start()
        pos = self.segmenter.position
        pause = self._early_due(start, pos) if allow_partial and start is not None else None
        if pause is not None and start is not None:
            self._last_partial = pos
            events.extend(self._agree(start, pos, pause / SAMPLE_RATE + 0.3))  # word ends run ~0.3 s into a pause
        elif allow_partial and start is not None and self._unpaused_due(start, pos):
            self._last_partial = pos
            events.extend(self._agree(start, pos, pos / SAMPLE_RATE - self.right_context))
        elif allow_partial and self.partial_interval > 0 and self.segmenter.in_speech:
            if start is not None and pos - max(self._last_partial, start) >= self.partial_interval:
                self._last_partial = pos
                # Only the last few seconds: a partial is a display hint, and re-decoding the
                # whole open utterance every interval would grow quadratically with its length.
                start = max(start, pos - self.partial_window)
                audio = self.buffer.slice(start, pos)
                self.decoded_seconds += len(audio) / SAMPLE_RATE
                self.partial_seconds += len(audio) / SAMPLE_RATE
                t0 = time.perf_counter()
                hyp = self.recognizer.transcribe(audio, offset=start / SAMPLE_RATE, final=False)
                self.partial_wall_s += time.perf_counter() - t0
                text = " ".join(r.text for r in hyp).strip()
                if text:
                    events.append(PartialText(text, start / SAMPLE_RATE, pos / SAMPLE_RATE))
        self.buffer.drop_before(self.segmenter.settled() - self.context)
        return events

    def flush(self) -> list[TranscriberEvent]:
        events: list[TranscriberEvent] = [self._commit(u.start, u.end) for u in self.segmenter.flush()]
        end = self.segmenter.position
        self.buffer.drop_before(end)
        events.append(Committed((), end))
        return events

    def _early_on(self, start: int, pos: int) -> bool:
        """Early commits are on and the open utterance (opened at ``start``) is long enough for them."""
        return bool(self.early_commit) and (self.early.active or pos - start >= self.early_commit)

    def _early_due(self, start: int, pos: int) -> int | None:
        """The sample where a new short pause began, if the open utterance is long enough to
        re-decode there (None: not now)."""
        if not self._early_on(start, pos):
            return None
        pause = self._pause_seen
        if (pause is not None and pause != self._pause_decoded and pos - pause >= self.pause_wait
                and pause - self._decode_from(start) >= SAMPLE_RATE):
            self._pause_decoded = pause
            return pause
        return None

    def _unpaused_due(self, start: int, pos: int) -> bool:
        """Whether speech has run ``unpaused`` without an early decode (no pause to decode at:
        sentences said back to back, where the VAD never drops) and there is open audio to
        commit from (a second past ``right_context``)."""
        if not self.unpaused or not self._early_on(start, pos):
            return False
        return (pos - max(self._last_agree, start) >= self.unpaused
                and pos - self._decode_from(start) >= self.right_context * SAMPLE_RATE + SAMPLE_RATE)

    def _note_pauses(self, probs: np.ndarray) -> None:
        """Remember where the latest pause began (``pause`` windows below the VAD threshold,
        stricter than the segmenter's hysteresis), also one a busy caller had no time to
        decode at: the next decode still commits what was said before it."""
        threshold = self.segmenter.config.threshold
        first = self.segmenter.position - len(probs) * WINDOW
        for k, p in enumerate(probs):
            if p >= threshold:
                self._quiet = 0
                continue
            self._quiet += 1
            if self._quiet == self.pause:
                self._pause_seen = first + (k + 1 - self.pause) * WINDOW

    def _lead_in(self, start: int) -> int:
        """Where a re-decode starts: ``early_context`` before the first uncommitted sentence
        (the words there are dropped), so Whisper hears how the sentence began."""
        return max(self.buffer.start, start, self._decode_from(start) - self.early_context)

    def _voiced(self, start: int, end: int) -> int:
        """VAD windows at or above the threshold between two samples (recent audio only)."""
        last = (self.segmenter.position - self.segmenter.origin) // WINDOW  # window index past the newest
        first = last - len(self._probs)
        a = max(first, (start - self.segmenter.origin) // WINDOW)
        b = min(last, (end - self.segmenter.origin + WINDOW - 1) // WINDOW)
        threshold = self.segmenter.config.threshold
        return sum(1 for i in range(a, b) if self._probs[i - first] >= threshold)

    def _decode_from(self, start: int) -> int:
        """Where a decode of the open utterance starts: after its early-committed sentences."""
        lead = max(self.buffer.start, start)
        if self.early.decode_from is not None:
            lead = max(lead, int(self.early.decode_from * SAMPLE_RATE))
        return lead

    def _agree(self, start: int, pos: int, stable_until: float) -> list[TranscriberEvent]:
        """Re-decode the open utterance; commit the complete sentences that end before
        ``stable_until`` (seconds: just after the pause decoded at, or ``right_context`` before
        the audio's end when there was none) and the words the previous decode agreed on."""
        if pos - self._decode_from(start) < SAMPLE_RATE:
            return []  # under a second since the last committed sentence: wait for more
        self._last_agree = pos
        lead = self._lead_in(start)
        audio = self.buffer.slice(lead, pos)
        self.decoded_seconds += len(audio) / SAMPLE_RATE
        self.early_seconds += len(audio) / SAMPLE_RATE
        t0 = time.perf_counter()
        recognized = self.recognizer.transcribe(audio, offset=lead / SAMPLE_RATE, final=True)
        self.early_wall_s += time.perf_counter() - t0
        floor = self.early.committed_until
        hyp = [HypWord(w.text, w.start, w.end, w.probability) for r in recognized for w in r.words
               if (w.start + w.end) / 2 > floor]
        hyp, _ = drop_overlap(self._tail, hyp, text_of=lambda w: w.text)  # lead-in words that leaked back
        hyp = _drop_boundary_repeat(self._tail, hyp, floor)
        events: list[TranscriberEvent] = []
        groups = self.early.update(hyp, stable_until=stable_until, heard_until=pos / SAMPLE_RATE)
        self.early.agreement.committed.clear()  # kept by LocalAgreement for the GPU path; unbounded here
        for group in groups:
            seg = self._word_segment(group)
            if seg is not None:
                self._early_until = max(self._early_until, int(round(seg.end * SAMPLE_RATE)))
                events.append(Committed((seg,), self._early_until))
        shown = self.early.pending + self.early.unstable
        if shown:
            events.append(PartialText(" ".join(w.text for w in shown), shown[0].start, pos / SAMPLE_RATE))
        return events

    def _word_segment(self, group: list[HypWord]) -> Segment | None:
        """Agreed words as a segment (loops collapsed; None for punctuation alone)."""
        words, _ = collapse_loops([Word(text=w.text, start=w.start, end=w.end, probability=w.probability)
                                   for w in group], text_of=lambda w: w.text)
        text = " ".join(w.text for w in words).strip()
        if not any(ch.isalnum() for ch in text):
            return None
        self._tail = (self._tail + [w.text for w in words])[-30:]
        index = self.next_index
        self.next_index += 1
        return Segment(id=Segment.make_id(index), index=index, start=words[0].start, end=words[-1].end,
                       text=text, words=words)

    def _commit(self, start: int, end: int, *, cut: bool = False) -> Committed:
        early = self.early.active and self.early.committed_until > start / SAMPLE_RATE
        if early and cut and end - self._decode_from(start) < self.segmenter.config.max_windows * WINDOW // 2:
            # The length cap is for utterances decoded once; here only the audio since the last
            # committed sentence is open, and it goes on (unless that too has run long).
            self.segmenter.reopen(min(end, self._decode_from(start)))
            return Committed((), self.committed_until)
        if early:
            # Part of this utterance was committed early: decode only from the last committed
            # sentence and keep the words past the agreed ones.
            lead = self._lead_in(start)
            not_before: float | None = self.early.committed_until
        else:
            lead = max(self.buffer.start, start - self.context)
            not_before = start / SAMPLE_RATE if lead < start else None
        pending = self.early.close(end / SAMPLE_RATE, cut=cut)
        recognized: list[Recognized] = []
        if lead < end and (not early or self._voiced(lead, end) >= self.segmenter.config.min_speech_windows):
            # (After early commits, a tail of padding and silence alone is not decoded: Whisper
            # reads "Thank you." into it.)
            audio = self.buffer.slice(lead, end)
            self.decoded_seconds += len(audio) / SAMPLE_RATE
            recognized = self.recognizer.transcribe(audio, offset=lead / SAMPLE_RATE, final=True)
            again = getattr(self.recognizer, "transcribe_speech", None)
            if (again is not None and not any(r.words for r in recognized)
                    and self._voiced(lead, end) * WINDOW >= SPEECH_NOT_SKIPPED_S * SAMPLE_RATE):
                # Seconds of what the VAD heard as speech gave no words: Whisper skipped it as
                # silence (WhisperRecognizer.transcribe_speech). A cough or a rustle is shorter.
                self.decoded_seconds += len(audio) / SAMPLE_RATE
                recognized = again(audio, offset=lead / SAMPLE_RATE)
        first = self.next_index
        if early:
            recognized = [r for r in (_boundary(r, self._tail + [w.text for w in pending], not_before)
                                      for r in recognized) if r is not None]
        segments = _segments(recognized, first, not_before=not_before,
                             previous=self._tail + [w.text for w in pending])
        if pending:
            # Agreed words short of a sentence end: they begin the sentence the final decode ends.
            head, _ = collapse_loops([Word(text=w.text, start=w.start, end=w.end, probability=w.probability)
                                      for w in pending], text_of=lambda w: w.text)
            if segments:
                seg = segments[0]
                segments[0] = seg.model_copy(update={"start": head[0].start, "words": head + list(seg.words),
                                                     "text": " ".join([w.text for w in head] + [seg.text])})
            elif any(ch.isalnum() for w in head for ch in w.text):
                segments = [Segment(id=Segment.make_id(first), index=first, start=head[0].start, end=head[-1].end,
                                    text=" ".join(w.text for w in head), words=head)]
        self._tail = (self._tail + [w.text for seg in segments for w in seg.words])[-30:]
        if cut:
            covered = max((w.end for seg in segments for w in seg.words), default=start / SAMPLE_RATE)
            if early:
                covered = max(covered, self.early.committed_until)
            if end / SAMPLE_RATE - covered > self.uncovered_tolerance_s:
                self.segmenter.reopen(int(covered * SAMPLE_RATE))
                end = int(covered * SAMPLE_RATE)
            if early:
                self.early.decode_from = max(self.early.decode_from or 0.0, end / SAMPLE_RATE)
        self.early.committed(end / SAMPLE_RATE)
        self.next_index += len(segments)
        return Committed(tuple(segments), max(end, self._early_until))


class AgreementTranscriber:
    """LocalAgreement-2 over a growing buffer (for GPUs, where re-decoding is cheap).

    Every ``step_s`` of new audio the open buffer is decoded; words two consecutive
    hypotheses agree on are committed. Committed words become a segment at sentence end
    (or after ``max_segment_s``), and the buffer is trimmed there, so it never grows past
    ``max_buffer_s`` plus one step.
    """

    def __init__(
        self,
        recognizer: Recognizer,
        *,
        origin: int = 0,
        first_index: int = 0,
        step_s: float = 1.0,
        max_segment_s: float = 10.0,
        max_buffer_s: float = 20.0,
    ):
        self.recognizer = recognizer
        self.buffer = _Buffer(origin)
        self.agreement = LocalAgreement()
        self.agreement.committed_until = origin / SAMPLE_RATE
        self.next_index = first_index
        self.step = int(step_s * SAMPLE_RATE)
        self.max_segment_s = max_segment_s
        self.max_buffer = int(max_buffer_s * SAMPLE_RATE)
        self._pending: list[HypWord] = []
        self._since_decode = 0
        self._until = origin
        self.decoded_seconds = 0.0

    @property
    def committed_until(self) -> int:
        return self._until

    def feed(self, samples: np.ndarray, *, allow_partial: bool = True) -> list[TranscriberEvent]:
        self.buffer.append(samples)
        self._since_decode += len(samples)
        events: list[TranscriberEvent] = []
        while self._since_decode >= self.step:
            self._since_decode -= self.step
            events.extend(self._step(final=False))
        return events

    def flush(self) -> list[TranscriberEvent]:
        events = self._step(final=True)
        end = self.buffer.end
        self.buffer.drop_before(end)
        self._until = end
        events.append(Committed((), end))
        return events

    def _hypothesis(self) -> list[HypWord]:
        audio = self.buffer.data
        self.decoded_seconds += len(audio) / SAMPLE_RATE
        rec = self.recognizer.transcribe(audio, offset=self.buffer.start / SAMPLE_RATE, final=True)
        return [HypWord(w.text, w.start, w.end, w.probability) for r in rec for w in r.words]

    def _step(self, *, final: bool) -> list[TranscriberEvent]:
        events: list[TranscriberEvent] = []
        hyp = self._hypothesis() if len(self.buffer.data) else []
        new = self.agreement.update(hyp)
        if final:
            new = new + self.agreement.flush()
        self._pending.extend(new)
        seg_words: list[HypWord] = []
        for w in list(self._pending):
            seg_words.append(w)
            sentence_end = w.text.rstrip().endswith((".", "?", "!"))
            too_long = seg_words[-1].end - seg_words[0].start >= self.max_segment_s
            if sentence_end or too_long:
                events.append(self._emit(seg_words))
                seg_words = []
        self._pending = seg_words
        if final and self._pending:
            events.append(self._emit(self._pending))
            self._pending = []
        if len(self.buffer.data) > self.max_buffer and self._pending:
            events.append(self._emit(self._pending))
            self._pending = []
        if len(self.buffer.data) > self.max_buffer and not self._pending:
            # Nothing agreed for a whole buffer (noise or a language switch): drop the oldest
            # step so the buffer stays bounded; the words in it were never stable.
            self.buffer.drop_before(max(self._until, self.buffer.end - self.max_buffer))
            self._until = max(self._until, self.buffer.start)
        if allow_partial_text := [w.text for w in self.agreement.previous]:
            if not final:
                events.append(
                    PartialText(" ".join(allow_partial_text), self._until / SAMPLE_RATE, self.buffer.end / SAMPLE_RATE)
                )
        return events

    def _emit(self, words: list[HypWord]) -> Committed:
        index = self.next_index
        self.next_index += 1
        seg = Segment(
            id=Segment.make_id(index),
            index=index,
            start=words[0].start,
            end=words[-1].end,
            text=" ".join(w.text for w in words).strip(),
            words=[Word(text=w.text, start=w.start, end=w.end, probability=w.probability) for w in words],
        )
        end_sample = int(round(words[-1].end * SAMPLE_RATE))
        self._until = max(self._until, end_sample)
        self.buffer.drop_before(end_sample)
        return Committed((seg,), self._until)
