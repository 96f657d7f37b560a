"""Commit policies: when a stretch of live audio becomes final transcript. Pure code.

Two policies, chosen by hardware:

``UtteranceSegmenter`` (CPU default). Speech probabilities from the VAD, one per 32 ms
window, open and close utterances; each closed utterance is decoded **once**. Cost per audio
second is flat however long the visit runs (no growing buffer is re-decoded), and latency is
the end-of-speech silence plus one decode. A cap on utterance length commits a monologue in
pieces, cut at the quietest recent window so a word is not split.

``LocalAgreement`` (GPU). Re-decode the open buffer every step and commit the longest prefix
on which the last two hypotheses agree (Macháček et al., 2023). Lower latency inside long
utterances, at several times the compute: right for a GPU, measured too costly on 2 CPU cores
as the only policy.

``EarlyCommit`` joins the two on a CPU: short utterances are still decoded once at their end,
but once an utterance has run a few seconds its open audio is re-decoded at each short pause
(a breath between sentences, shorter than the silence that closes an utterance); the complete
sentences and clauses before the pause, and the words two consecutive re-decodes agree on, are
committed, so a long utterance's early words do not wait for its end (the latency tail).

Both take plain numbers and lists and return plain values; they never see audio, models,
threads or clocks, so the tests can drive them with any split of the input.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

WINDOW = 512


@dataclass(frozen=True)
class SegmenterConfig:
    threshold: float = 0.5
    neg_threshold: float | None = None
    """Below this a window counts as silence (hysteresis); default threshold − 0.15."""
    min_silence_windows: int = 16
    """Silence that closes an utterance (16 × 32 ms ≈ 0.5 s)."""
    min_speech_windows: int = 4
    """Shorter bursts (clicks, coughs) are dropped (~130 ms)."""
    max_windows: int = 469
    """Cap on utterance length (469 × 32 ms ≈ 15 s)."""
    pad_windows: int = 6
    """Audio kept on both sides of speech so word edges are not clipped (~190 ms)."""
    min_utterance_windows: int = 31
    """An utterance shorter than this (~1 s) is not closed by a short pause: Whisper
    hallucinates on fragments ("Thank you.", "ok ok ok"), so it waits for more speech..."""
    max_silence_windows: int = 47
    """...unless the pause grows to this (~1.5 s): then even a short utterance is closed."""
    soft_max_windows: int | None = None
    """Past this length an utterance closes on a shorter pause (``short_silence_windows``):
    in a brisk conversation turns follow each other within 0.5 s, so without it utterances
    run to the cap and commit seconds after their speech ended. None disables it."""
    short_silence_windows: int = 8
    """The pause (~250 ms) that closes an utterance longer than ``soft_max_windows``."""

    @classmethod
    def from_ms(
        cls,
        *,
        threshold: float = 0.5,
        min_silence_ms: int = 500,
        max_utterance_s: float = 15.0,
        speech_pad_ms: int = 200,
        min_speech_ms: int = 130,
        min_utterance_s: float = 1.0,
        max_silence_ms: int = 1500,
        soft_max_utterance_s: float | None = None,
        short_silence_ms: int = 250,
        sample_rate: int = 16_000,
    ) -> SegmenterConfig:
        w = WINDOW / sample_rate * 1000.0
        min_silence = max(1, round(min_silence_ms / w))
        return cls(
            soft_max_windows=None if soft_max_utterance_s is None else max(1, round(soft_max_utterance_s * 1000.0 / w)),
            short_silence_windows=max(1, min(min_silence, round(short_silence_ms / w))),
            threshold=threshold,
            min_silence_windows=min_silence,
            min_utterance_windows=max(1, round(min_utterance_s * 1000.0 / w)),
            max_silence_windows=max(min_silence, round(max_silence_ms / w)),
            min_speech_windows=max(1, round(min_speech_ms / w)),
            max_windows=max(8, round(max_utterance_s * 1000.0 / w)),
            pad_windows=max(0, round(speech_pad_ms / w)),
        )

    @property
    def low(self) -> float:
        return self.neg_threshold if self.neg_threshold is not None else max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True)
class Utterance:
    """A closed utterance, as sample offsets in encounter time, ready to decode once."""

    start: int
    end: int
    reason: Literal["silence", "max_length", "flush"]


@dataclass
class SegmenterState:
    """Everything the segmenter remembers; small and bounded by ``max_windows``."""

    window: int = 0
    """Index of the next window to be fed (encounter time in windows, after ``origin``)."""
    in_speech: bool = False
    start: int = 0
    """First window of the open utterance (before padding)."""
    last_voiced: int = 0
    """Last window at or above the threshold in the open utterance."""
    voiced: int = 0
    """Windows at or above the threshold in the open utterance."""
    floor: int = 0
    """Nothing before this window may be emitted again (end of the last utterance)."""
    probs: deque[float] = field(default_factory=deque)
    """Probabilities of the open utterance's windows (for choosing a cut point)."""


class UtteranceSegmenter:
    """VAD-delimited utterances from a stream of per-window speech probabilities.

    Guarantees (property-tested): utterances are ordered and never overlap; every window at
    or above the threshold lies in exactly one emitted utterance unless it belongs to a burst
    shorter than ``min_speech_windows``; feeding the probabilities in any split gives the
    same utterances.
    """

    def __init__(self, config: SegmenterConfig, *, origin: int = 0):
        self.config = config
        self.origin = origin
        """Sample offset of window 0 (non-zero when a stream resumes mid-encounter)."""
        self.state = SegmenterState()

    # -- queries

    @property
    def in_speech(self) -> bool:
        return self.state.in_speech

    @property
    def position(self) -> int:
        """Sample offset just past the last fed window."""
        return self._sample(self.state.window)

    def open_start(self) -> int | None:
        """Sample where the open utterance starts (padded), or None outside speech."""
        if not self.state.in_speech:
            return None
        return self._sample(max(self.state.floor, self.state.start - self.config.pad_windows))

    def settled(self) -> int:
        """Sample before which no future utterance can start: audio older than this can be
        dropped from memory and counts as committed for resume."""
        s = self.state
        if s.in_speech:
            return self._sample(max(s.floor, s.start - self.config.pad_windows))
        return self._sample(max(s.floor, s.window - self.config.pad_windows))

    # -- updates

    def feed(self, probs: np.ndarray | list[float]) -> list[Utterance]:
        out: list[Utterance] = []
        for p in probs:
            u = self._step(float(p))
            if u is not None:
                out.append(u)
        return out

    def flush(self) -> list[Utterance]:
        """End of stream: close the open utterance, if it holds enough speech."""
        s = self.state
        if not s.in_speech:
            return []
        end_window = min(s.window, s.last_voiced + 1 + self.config.pad_windows)
        u = self._close(end_window, "flush")
        return [u] if u is not None else []

    def _sample(self, window: int) -> int:
        return self.origin + window * WINDOW

    def _step(self, p: float) -> Utterance | None:
        c, s = self.config, self.state
        i = s.window
        s.window += 1
        if not s.in_speech:
            if p >= c.threshold:
                s.in_speech = True
                s.start = i
                s.last_voiced = i
                s.voiced = 1
                s.probs.clear()
                s.probs.append(p)
            return None
        s.probs.append(p)
        if p >= c.threshold:
            s.last_voiced = i
            s.voiced += 1
        elif p < c.low and i - s.last_voiced >= self._silence_needed():
            long_enough = s.last_voiced + 1 - s.start >= c.min_utterance_windows
            if long_enough or i - s.last_voiced >= c.max_silence_windows:
                return self._close(s.last_voiced + 1 + c.pad_windows, "silence")
        elif p >= c.low:
            # Between the thresholds: still speech-ish, the silence run restarts (hysteresis).
            s.last_voiced = i
        if i + 1 - s.start >= c.max_windows:
            return self._cut()
        return None

    def _silence_needed(self) -> int:
        c, s = self.config, self.state
        if c.soft_max_windows is not None and s.last_voiced + 1 - s.start >= c.soft_max_windows:
            return c.short_silence_windows
        return c.min_silence_windows

    def _close(self, end_window: int, reason: Literal["silence", "max_length", "flush"]) -> Utterance | None:
        c, s = self.config, self.state
        start_window = max(s.floor, s.start - c.pad_windows)
        end_window = min(end_window, s.window)
        enough = s.voiced >= c.min_speech_windows
        s.in_speech = False
        s.probs.clear()
        if not enough:
            return None
        s.floor = end_window
        return Utterance(self._sample(start_window), self._sample(end_window), reason)

    def _cut(self) -> Utterance | None:
        """The utterance hit the cap: cut inside its second half at the longest pause
        (latest on ties), and keep the rest open as a new utterance. A cut inside a pause
        between sentences keeps words whole and lets the recogniser finish its sentence."""
        c, s = self.config, self.state
        probs = list(s.probs)
        half = len(probs) // 2
        best_rel, best_key = len(probs) - 1, (-1, -1.0)
        run = 0
        for rel in range(len(probs)):
            run = run + 1 if probs[rel] < c.low else 0
            if rel >= half:
                key = (run, -probs[rel]) if run else (0, -probs[rel])
                if key >= best_key:
                    best_key, best_rel = key, rel
        if best_key[0] > 0:
            # Cut in the middle of the pause, so both sides keep some padding.
            best_rel -= best_key[0] // 2
        cut = s.start + best_rel
        tail = probs[best_rel + 1 :]
        u = Utterance(self._sample(max(s.floor, s.start - c.pad_windows)), self._sample(cut + 1), "max_length")
        s.floor = cut + 1
        s.start = cut + 1
        s.probs = deque(tail)
        s.voiced = sum(1 for q in tail if q >= c.threshold)
        if s.voiced == 0:
            # Nothing voiced after the cut: the rest is trailing silence, wait for speech.
            s.in_speech = False
            s.probs.clear()
        return u

    def reopen(self, sample: int) -> None:
        """Un-commit audio from ``sample`` on: the recogniser did not cover it (Whisper drops
        an unfinished last sentence), so it joins the next utterance instead of being lost."""
        s = self.state
        w = max(0, (sample - self.origin) // WINDOW)
        if w >= s.window:
            return
        s.floor = min(s.floor, w)
        if s.in_speech:
            if w < s.start:
                s.probs.extendleft([self.config.threshold] * (s.start - w))
                s.start = w
        else:
            s.in_speech = True
            s.start = w
            s.last_voiced = s.window - 1
            s.probs = deque([self.config.threshold] * (s.window - w))
        s.voiced = max(s.voiced, self.config.min_speech_windows)


# --------------------------------------------------------------------------- LocalAgreement


@dataclass(frozen=True)
class HypWord:
    """A word of a hypothesis, in encounter-time seconds."""

    text: str
    start: float
    end: float
    probability: float = 1.0


def _norm(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum())


class LocalAgreement:
    """LocalAgreement-2: commit the longest prefix two consecutive hypotheses share.

    Feed each new hypothesis for the open buffer (words after ``committed_until`` seconds);
    get back the newly committed words. ``flush`` commits what remains of the last
    hypothesis at end of stream. Words are compared case- and punctuation-insensitively.
    """

    def __init__(self) -> None:
        self.previous: list[HypWord] = []
        self.committed_until = 0.0
        self.committed: list[HypWord] = []

    def _fresh(self, hyp: list[HypWord]) -> list[HypWord]:
        # Words centred before the commit point were already committed. The centre, not the
        # end: a re-decode of the same audio often moves a committed word's end a little later,
        # and that word must not be agreed on (committed) a second time.
        return [w for w in hyp if (w.start + w.end) / 2 > self.committed_until]

    def update(self, hypothesis: list[HypWord]) -> list[HypWord]:
        hyp = self._fresh(hypothesis)
        prev = self._fresh(self.previous)
        agreed: list[HypWord] = []
        for a, b in zip(prev, hyp):
            if _norm(a.text) != _norm(b.text):
                break
            agreed.append(b)
        self.previous = hyp
        if agreed:
            self.committed_until = agreed[-1].end
            self.committed.extend(agreed)
            self.previous = hyp[len(agreed) :]
        return agreed

    def flush(self) -> list[HypWord]:
        rest = self._fresh(self.previous)
        self.previous = []
        if rest:
            self.committed_until = rest[-1].end
            self.committed.extend(rest)
        return rest


# --------------------------------------------------------------------------- EarlyCommit


def _sentence_end(word: str) -> bool:
    return word.rstrip().endswith((".", "?", "!"))


def _clause_end(word: str) -> bool:
    return word.rstrip().endswith((".", "?", "!", ",", ";", ":"))


def _heard(word: HypWord) -> bool:
    """A word with a duration and a letter or digit (Whisper gives made-up words no length)."""
    return word.end > word.start and any(ch.isalnum() for ch in word.text)


class EarlyCommit:
    """Early commits inside one open utterance, a sentence at a time.

    The transcriber feeds hypotheses of the utterance's open audio (from ``decode_from``
    seconds to now); ``update`` returns the groups of words now final. A word is final when two
    consecutive hypotheses agree on it (LocalAgreement-2), or when it belongs to a complete
    sentence or clause (ending in . ? ! , ; :) that ends before ``stable_until``, a pause the
    speaker made after it, and either Whisper was sure of its last words or it ended
    ``settled_s`` before the decoded audio's end: Whisper does not rewrite what it heard the speaker finish, and
    committing it at once costs one decode instead of two a step apart (a step of
    LocalAgreement is as long as the latency target). Final
    words are grouped up to a sentence end, or all of them once they span ``max_pending_s`` (a
    run-on turn still commits); words short of that wait in ``pending``. After a group is committed
    ``decode_from`` moves to the gap after it, so the re-decoded audio stays a few seconds long
    however long the utterance runs. When the utterance ends, ``close`` hands back the pending
    words; the final decode covers only what was not agreed (words centred after
    ``committed_until``). Committed words are never retracted.
    """

    def __init__(self, *, max_pending_s: float = 6.0, committed_until: float = 0.0, settled_s: float = 1.6):
        self.max_pending_s = max_pending_s
        self.min_probability = 0.3
        """Least word probability in the last three words of a sentence committed on one hypothesis."""
        self.settled_s = settled_s
        """A clause that ended this long before the decoded audio's end is final on one hypothesis
        whatever its word probabilities: the probability test is for endings made up at the edge
        of the audio, and words Whisper is unsure of (a dictated "Number one, tick bite." heard
        as "tick by it." then "Dig Myet,") would otherwise wait for two decodes to agree on it,
        which they may never do before the utterance ends (3.9 s on the synthetic dictation)."""
        self.agreement = LocalAgreement()
        self.agreement.committed_until = committed_until
        self.pending: list[HypWord] = []
        self.decode_from: float | None = None
        """Seconds: where the next decode of the open utterance starts (None: at its start)."""
        self.hypotheses = 0
        """Hypotheses fed for the open utterance (0: the utterance is decoded once, at its end)."""

    @property
    def committed_until(self) -> float:
        """End of the last agreed word (pending ones included), seconds."""
        return self.agreement.committed_until

    @property
    def unstable(self) -> list[HypWord]:
        """The latest hypothesis's words past the agreed prefix (display only)."""
        return list(self.agreement.previous)

    def update(self, hypothesis: list[HypWord], *, stable_until: float | None = None,
               heard_until: float | None = None) -> list[list[HypWord]]:
        """Feed a hypothesis; return the groups of words committed by it. ``stable_until``
        (seconds): complete sentences ending before it are final without a second hypothesis
        (the speaker paused there, or the decode heard a second or more past it) when Whisper was
        confident of their last words, or when they ended ``settled_s`` before ``heard_until``
        (the end of the decoded audio)."""
        self.hypotheses += 1
        self.pending.extend(self.agreement.update(hypothesis))
        through = False
        if stable_until is not None:
            rest = self.agreement.previous
            settled = None if heard_until is None else heard_until - self.settled_s
            ends = [i for i, w in enumerate(rest)
                    if _clause_end(w.text) and w.end <= stable_until
                    and (self._confident(rest[: i + 1]) or (settled is not None and w.end <= settled and _heard(w)))]
            if ends:
                done = rest[: ends[-1] + 1]
                self.agreement.previous = rest[len(done) :]
                self.agreement.committed_until = done[-1].end
                self.pending.extend(done)
                through = True
        groups: list[list[HypWord]] = []
        start = 0
        for i, w in enumerate(self.pending):
            if (_sentence_end(w.text) or w.end - self.pending[start].start >= self.max_pending_s
                    or (through and i == len(self.pending) - 1)):
                groups.append(self.pending[start : i + 1])
                start = i + 1
        self.pending = self.pending[start:]
        if groups:
            last = groups[-1][-1]
            following = [w for w in hypothesis if (w.start + w.end) / 2 > last.end]
            nxt = following[0].start if following else last.end
            # Start the next decode in the gap after the committed words (not inside a word).
            self.decode_from = max(self.decode_from or 0.0, (last.end + max(nxt, last.end)) / 2)
        return groups

    def _confident(self, words: list[HypWord]) -> bool:
        """A sentence end Whisper heard, not one it made up at the edge of the audio: made-up
        endings ("… are . Thank you.", a bare "Thanks.") come with low word probabilities
        and zero-length words."""
        last = words[-1]
        return (_heard(last) and last.probability >= 0.5
                and min(w.probability for w in words[-3:]) >= self.min_probability)

    @property
    def active(self) -> bool:
        """Whether the open utterance has been re-decoded (then its final decode keeps only
        the words past ``committed_until``)."""
        return self.hypotheses > 0

    def close(self, end: float, *, cut: bool = False) -> list[HypWord]:
        """The utterance closed at ``end`` seconds: return the pending words to commit with its
        final decode. ``cut``: it was cut there at the length cap and goes on, so pending words
        past ``end`` stay pending (the caller moves ``decode_from`` to the cut)."""
        if cut:
            out = [w for w in self.pending if (w.start + w.end) / 2 <= end]
            self.pending = self.pending[len(out) :]
        else:
            out, self.pending = self.pending, []
            self.decode_from = None
            self.hypotheses = 0
        self.agreement.previous = []
        return out

    def committed(self, until: float) -> None:
        """Audio up to ``until`` seconds is committed (by the final decode): never agree on it."""
        self.agreement.committed_until = max(self.agreement.committed_until, until)
