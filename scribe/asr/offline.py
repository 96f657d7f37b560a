"""Whole-file transcription: the accuracy baseline the streaming path is measured against.

Uses faster-whisper's own batch path (Silero VAD chunks up to 30 s, padded encoder windows)
rather than scribe's streaming code, so that ``scribe bench asr`` compares two independent
routes to a transcript of the same audio.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, load_audio
from ..models import Segment, Transcript, Word
from .cleanup import collapse_loops
from .record import Decoded, not_speech
from .whisper import WhisperRecognizer


def transcribe_samples(
    rec: WhisperRecognizer,
    audio: np.ndarray,
    *,
    encounter_id: str = "offline",
    progress: Callable[[float], None] | None = None,
) -> Transcript:
    with rec.padded_encoder():
        segments, _ = rec.model.transcribe(
            audio,
            language=rec.language,
            beam_size=rec.beam_size,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=True,
            hotwords=rec.hotwords,
        )
        segments = list(segments)  # the generator decodes lazily: run it inside the block
    duration = len(audio) / SAMPLE_RATE
    out: list[Segment] = []
    for seg in segments:
        words = [
            Word(text=w.word.strip(), start=round(w.start, 3), end=round(w.end, 3),
                 probability=float(min(1.0, max(0.0, w.probability))))
            for w in (seg.words or []) if w.word.strip()
        ]
        words, _ = collapse_loops(words, text_of=lambda w: w.text)
        text = " ".join(w.text for w in words) if words else seg.text.strip()
        if not text:
            continue
        index = len(out)
        out.append(Segment(id=Segment.make_id(index), index=index, start=round(seg.start, 3), end=round(seg.end, 3),
                           text=text, words=words, avg_logprob=seg.avg_logprob, no_speech_prob=seg.no_speech_prob))
        if progress and duration:
            progress(min(1.0, seg.end / duration))
    if progress:
        progress(1.0)
    return Transcript(encounter_id=encounter_id, language=rec.language or "en", segments=out, duration=duration)


def transcribe_window(
    rec: WhisperRecognizer,
    audio: np.ndarray,
    *,
    offset: float,
    prompt: str | None = None,
    language: str | None = None,
) -> list[Decoded]:
    """One record-pass window (``scribe.asr.record``): decoded as ``transcribe_samples`` does
    (Silero VAD drops silence, padded 30 s encoder windows, word timestamps and probabilities)
    with ``prompt``, the previous window's text, as context. Segments that are not speech
    (``record.not_speech``: Whisper's subtitle phrases over silence or noise) are dropped.
    Without a prompt the window is decoded alone, exactly as ``transcribe_samples`` decodes.
    Times are encounter seconds (``offset``: where ``audio`` starts)."""
    if audio.size == 0:
        return []
    if rec.info.english_only or not language:
        language = rec.language
    with rec.padded_encoder():
        segments, _ = rec.model.transcribe(
            audio,
            language=language.split("-")[0].lower() if language else None,
            beam_size=rec.beam_size,
            word_timestamps=True,
            condition_on_previous_text=bool(prompt),
            initial_prompt=prompt or None,
            vad_filter=True,
            hotwords=rec.hotwords,
        )
        segments = list(segments)
    out: list[Decoded] = []
    for seg in segments:
        words = [
            Word(text=w.word.strip(), start=round(offset + w.start, 3), end=round(offset + w.end, 3),
                 probability=float(min(1.0, max(0.0, w.probability))))
            for w in (seg.words or []) if w.word.strip()
        ]
        words, _ = collapse_loops(words, text_of=lambda w: w.text)
        text = " ".join(w.text for w in words) if words else seg.text.strip()
        if not text or not_speech(text, no_speech_prob=seg.no_speech_prob, avg_logprob=seg.avg_logprob):
            continue
        out.append(Decoded(text=text, start=round(offset + seg.start, 3), end=round(offset + seg.end, 3),
                           words=tuple(words), avg_logprob=seg.avg_logprob, no_speech_prob=seg.no_speech_prob))
    return out


def transcribe_file(rec: WhisperRecognizer, path: Path, *, progress: Callable[[float], None] | None = None) -> Transcript:
    return transcribe_samples(rec, load_audio(path), encounter_id=path.stem, progress=progress)
