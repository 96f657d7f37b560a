"""Streaming transcribers: audio in, partial text and committed segments out.

These are synchronous and single-threaded on purpose: the server runs each session's
transcriber in a worker thread (model calls block), feeding it audio in order. Memory is
bounded: only the open utterance (≤ ``max_utterance_s``) plus padding is kept, whatever the
length of the visit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE
from ..models import Segment, Word
from .cleanup import collapse_loops, drop_overlap
from .commit import HypWord, LocalAgreement, SegmenterConfig, UtteranceSegmenter
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


class UtteranceTranscriber:
    """VAD-delimited utterances, each decoded once at end of speech (the CPU default).

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
        self._tail: list[str] = []
        """The last committed words, to drop any that leak back in from lead-in audio."""

    @property
    def committed_until(self) -> int:
        return self.segmenter.settled()

    def feed(self, samples: np.ndarray, *, allow_partial: bool = True) -> list[TranscriberEvent]:
        self.buffer.append(samples)
        events: list[TranscriberEvent] = []
        for utt in self.segmenter.feed(self.vad(samples)):
            events.append(self._commit(utt.start, utt.end, cut=utt.reason == "max_length"))
        if events or not self.segmenter.in_speech:
            self._last_partial = self.segmenter.position
        if allow_partial and self.partial_interval > 0 and self.segmenter.in_speech:
            start = self.segmenter.open_start()
            pos = self.segmenter.position
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

    def _commit(self, start: int, end: int, *, cut: bool = False) -> Committed:
        lead = max(self.buffer.start, start - self.context)
        audio = self.buffer.slice(lead, end)
        self.decoded_seconds += len(audio) / SAMPLE_RATE
        recognized = self.recognizer.transcribe(audio, offset=lead / SAMPLE_RATE, final=True)
        segments = _segments(recognized, self.next_index, not_before=start / SAMPLE_RATE if lead < start else None,
                             previous=self._tail)
        self._tail = (self._tail + [w.text for seg in segments for w in seg.words])[-30:]
        if cut:
            covered = max((w.end for seg in segments for w in seg.words), default=start / SAMPLE_RATE)
            if end / SAMPLE_RATE - covered > self.uncovered_tolerance_s:
                self.segmenter.reopen(int(covered * SAMPLE_RATE))
                end = int(covered * SAMPLE_RATE)
        self.next_index += len(segments)
        return Committed(tuple(segments), end)


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
