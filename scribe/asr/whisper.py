"""faster-whisper behind the ``Recognizer`` seam.

One ``WhisperRecognizer`` is shared by every session of a server: CTranslate2 lets
``num_workers`` decodes run at once from different threads, and loading the model once
keeps memory flat as sessions are added.

Short utterances are cheap here because the encoder is not fed 30 s of padding. Whisper
pads every window to 30 s; on a 2-core CPU that costs ~0.4 s per call with tiny.en whatever
the utterance length, which would dominate a streaming budget of ~0.15 s per audio second.
CTranslate2 accepts shorter encoder inputs, so ``_TrimmedWhisper.encode`` drops the padding
beyond one second of it (the encoder still sees where the audio ends). Accuracy against the
padded encoder is reported by ``scribe bench asr`` (offline column vs streaming column).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..audio import SAMPLE_RATE
from ..models import Word
from .cleanup import collapse_loops
from .record import hallucinated
from .registry import ModelInfo, resolve_model

log = logging.getLogger(__name__)

_TOKENS_PER_SECOND = 8
"""Token budget per audio second: fast speech is ~3–4 tokens/s, so 8 leaves room for
punctuation and numbers while cutting a runaway loop short."""


@dataclass(frozen=True)
class Recognized:
    """One decoded stretch of speech, times in encounter seconds."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...]
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


SURELY_SILENT = 0.8
"""No-speech probability above which ``transcribe_speech`` drops a segment: Whisper's own skip
starts at 0.6 (and only with an unsure text); the skipped speech measured here sat at 0.6-0.7."""
MIN_WORDS_PER_S = 0.5
"""Fewest words a second ``transcribe_speech`` accepts: a fifth of conversational speech (2-3
words a second; the skipped dictation had 2)."""


class Recognizer(Protocol):
    """What the streaming transcriber needs from a speech recogniser. One may also offer
    ``transcribe_speech(audio, *, offset)``: a final decode that never skips audio as silence
    (``WhisperRecognizer.transcribe_speech``); the utterance transcriber uses it when seconds of
    speech gave no words."""

    model: Any
    """The decoder (faster-whisper's ``WhisperModel``, or a test double)."""

    @contextmanager
    def padded_encoder(self) -> Iterator[None]:
        """Decode with Whisper's standard 30 s padded windows inside the block (the offline
        baseline). Not for use while streaming sessions share this recogniser."""
        previous = getattr(self.model, "trim_enabled", None)
        if previous is None:
            yield
            return
        self.model.trim_enabled = False
        try:
            yield
        finally:
            self.model.trim_enabled = previous

    def transcribe(self, audio: np.ndarray, *, offset: float, final: bool = True) -> list[Recognized]:
        """Decode ``audio`` (float32 16 kHz mono) that starts ``offset`` seconds into the
        encounter. ``final=False`` asks for a cheap, display-only hypothesis."""
        ...


def detect_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # a broken CUDA install must not stop the CPU path
        return "cpu"


def default_compute_type(device: str, compute_type: str) -> str:
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


def load_lexicon(path: Path | None) -> list[str]:
    """Terms for hotwords: one per line, ``#`` comments ignored."""
    if path is None:
        from ..resources import default_lexicon_path

        path = default_lexicon_path()
    if path is None or not Path(path).is_file():
        return []
    terms = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        term = line.split("#", 1)[0].strip()
        if term:
            terms.append(term)
    return terms


def _trimmed_model_class() -> type[Any]:
    from faster_whisper import WhisperModel

    class _TrimmedWhisper(WhisperModel):  # type: ignore[misc]  # faster-whisper ships no types
        trim_margin_frames = 100  # keep 1 s of padding: the encoder sees where speech ends
        min_frames = 1000
        """The encoder sees at least 10 s (content + silence). Whisper was trained on 30 s
        windows; on a 2 s window tiny.en dropped and repeated words (JFK clip: WER 0.36 → 0.05
        at 10 s, OSCE 0.35 → 0.30) for ~25 % more compute (docs/benchmarks.md)."""
        trim_enabled = True
        _local = threading.local()

        def encode(self, features: np.ndarray) -> Any:
            if not self.trim_enabled:
                return super().encode(features)
            min_frames = getattr(self._local, "min_frames", None) or self.min_frames
            if features.ndim == 2:
                features = features[None]
            columns = np.flatnonzero(np.any(features[0] != 0, axis=0))
            content = int(columns[-1]) + 1 if columns.size else 0
            keep = min(features.shape[-1], max(min_frames, content + self.trim_margin_frames))
            keep += keep % 2  # the encoder's conv stride is 2
            return super().encode(np.ascontiguousarray(features[..., :keep]))

    return _TrimmedWhisper


class AsrConfig(Protocol):
    """The ``asr`` settings a recogniser is built from (``scribe.config.AsrSettings``; named
    structurally because ``scribe.config`` imports this module, so naming it here would be a
    cycle)."""

    @property
    def model(self) -> str: ...
    @property
    def record_model(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def compute_type(self) -> str: ...
    @property
    def cpu_threads(self) -> int: ...
    @property
    def num_workers(self) -> int: ...
    @property
    def record_threads(self) -> int: ...
    @property
    def beam_size(self) -> int: ...
    @property
    def language(self) -> str | None: ...
    @property
    def hotwords(self) -> bool | None: ...
    @property
    def lexicon(self) -> Path | None: ...

    def parallelism(self) -> tuple[int, int]: ...


class RecognizerSettings(Protocol):
    """What :meth:`WhisperRecognizer.from_settings` reads of ``scribe.config.Settings``."""

    @property
    def asr(self) -> AsrConfig: ...
    @property
    def model_cache_dir(self) -> Path: ...


class WhisperRecognizer:
    """faster-whisper with scribe's defaults: offline model resolution, device auto-pick,
    optional lexicon hotwords, per-word probabilities kept."""

    def __init__(
        self,
        model: str = "tiny.en",
        *,
        cache_dir: Path,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
        num_workers: int = 1,
        beam_size: int = 1,
        language: str | None = None,
        hotwords: bool | None = None,
        lexicon: Path | None = None,
        trim_encoder: bool = True,
    ):
        from faster_whisper import WhisperModel

        self.info: ModelInfo = resolve_model(model, cache_dir)
        self.device = detect_device(device)
        self.compute_type = default_compute_type(self.device, compute_type)
        cls = _trimmed_model_class() if trim_encoder else WhisperModel
        self.model = cls(
            str(self.info.path),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )
        self.beam_size = beam_size
        self.fallback_temperature: float | None = 0.4
        """One re-decode at this temperature when a final decode loops or is unsure; None: greedy
        only (deterministic; ``scribe bench asr --greedy``)."""
        self.language = "en" if self.info.english_only else language
        use_hotwords = self.info.hotwords_help if hotwords is None else hotwords
        terms = load_lexicon(lexicon) if use_hotwords else []
        self.hotwords = " ".join(terms) if terms else None
        log.info(
            "asr model loaded",
            extra={"model": self.info.name, "device": self.device, "compute_type": self.compute_type,
                   "hotwords": len(terms)},
        )

    @classmethod
    def from_settings(cls, settings: RecognizerSettings, *, single_stream: bool = False) -> WhisperRecognizer:
        """The recogniser ``settings.asr`` describes: the service's (one decode worker per core
        on CPU) or, ``single_stream``, one file at a time (one decode on every core) unless the
        parallelism is set explicitly. Raises ``ModelNotFound`` for a model not on disk."""
        asr = settings.asr
        threads, workers = asr.parallelism()
        if single_stream and not asr.num_workers and not asr.cpu_threads:
            threads, workers = 0, 1
        return cls(
            asr.model, cache_dir=settings.model_cache_dir, device=asr.device, compute_type=asr.compute_type,
            cpu_threads=threads, num_workers=workers, beam_size=asr.beam_size,
            language=asr.language, hotwords=asr.hotwords, lexicon=asr.lexicon,
        )

    @classmethod
    def for_record_pass(cls, settings: RecognizerSettings) -> WhisperRecognizer:
        """The record pass's recogniser (``asr.record_model``): its own model instance, with
        Whisper's padded 30 s encoder windows as offline transcription uses, one decode at a
        time on ``asr.record_threads`` threads. Load it on the thread that will run it: the
        decoder's threads inherit that thread's (lower) priority."""
        asr = settings.asr
        return cls(
            asr.record_model, cache_dir=settings.model_cache_dir, device=asr.device, compute_type=asr.compute_type,
            cpu_threads=asr.record_threads, num_workers=1, beam_size=asr.beam_size, language=asr.language,
            hotwords=asr.hotwords, lexicon=asr.lexicon, trim_encoder=False,
        )

    @contextmanager
    def padded_encoder(self) -> Iterator[None]:
        """Decode with Whisper's standard 30 s padded windows inside the block (the offline
        baseline). Not for use while streaming sessions share this recogniser."""
        previous = getattr(self.model, "trim_enabled", None)
        if previous is None:
            yield
            return
        self.model.trim_enabled = False
        try:
            yield
        finally:
            self.model.trim_enabled = previous

    def unsupported_language(self, language: str | None) -> str | None:
        """Why ``language`` cannot be transcribed with this model (None when it can)."""
        if language and self.info.english_only and language.split("-")[0].lower() != "en":
            return (f"the model {self.info.name} is English-only and cannot transcribe {language!r}; "
                    "start the server with a multilingual model (--model base) or send language 'en'")
        if language and not self.info.english_only:
            from faster_whisper.tokenizer import _LANGUAGE_CODES

            if language.split("-")[0].lower() not in _LANGUAGE_CODES:
                return f"unknown language code {language!r}; use an ISO 639-1 code such as 'en' or 'es'"
        return None

    def transcribe(
        self, audio: np.ndarray, *, offset: float, final: bool = True, language: str | None = None
    ) -> list[Recognized]:
        """``language`` overrides the recogniser's default for this call (a session's spoken
        language); English-only models ignore it after ``unsupported_language`` said yes."""
        return self._decode(audio, offset=offset, final=final, language=language)

    def transcribe_speech(self, audio: np.ndarray, *, offset: float, language: str | None = None) -> list[Recognized]:
        """A final decode that never skips the audio as silence: for an utterance the VAD heard
        as seconds of speech and ``transcribe`` returned nothing for. faster-whisper skips a
        window when it thinks there is no speech (no-speech probability over 0.6) and is unsure of
        its text (mean log-probability under -1); on the synthetic dictation an 8 s utterance
        with a mumbled drug name sat at 0.60 and was lost whole. Whisper's subtitle phrases
        ("Thank you for watching.") are still dropped (``record.not_speech``'s list), and so is a
        segment Whisper is sure is not speech (``SURELY_SILENT``): decoded without the skip,
        generated silence and noise come out as "you", "." or "I'm going to do that." at a
        no-speech probability of 0.93-0.95, so this is only for audio the VAD heard as speech.
        Nothing is returned either when the words are too few for speech (under
        ``MIN_WORDS_PER_S`` a second of audio, loops cut: hum and tones came out as "I'm..." or
        "I I I I …" over 10 s)."""
        kept = [r for r in self._decode(audio, offset=offset, final=True, language=language, skip_silence=False)
                if not hallucinated(r.text) and (r.no_speech_prob is None or r.no_speech_prob <= SURELY_SILENT)]
        said, _ = collapse_loops([w.text for r in kept for w in r.words if any(ch.isalnum() for ch in w.text)])
        return kept if len(said) >= MIN_WORDS_PER_S * len(audio) / SAMPLE_RATE else []

    def _decode(self, audio: np.ndarray, *, offset: float, final: bool, language: str | None,
                skip_silence: bool = True) -> list[Recognized]:
        if audio.size == 0:
            return []
        if self.info.english_only or not language:
            language = self.language
        # Display-only partials take the short encoder window: a quarter of the cost of a
        # final decode, and their wording is replaced by the final one anyway.
        local = getattr(self.model, "_local", None)
        if local is not None:
            local.min_frames = None if final else 200
        segments, _info = self.model.transcribe(
            audio,
            language=language.split("-")[0].lower() if language else None,
            beam_size=self.beam_size if final else 1,
            # One fallback only, and a token budget proportional to the audio: a looping
            # decode otherwise runs to 448 tokens at every temperature (measured: 34 s of
            # compute for 2.5 s of audio on a 2-core CPU).
            temperature=[0.0, self.fallback_temperature] if final and self.fallback_temperature else 0.0,
            max_new_tokens=int(10 + _TOKENS_PER_SECOND * len(audio) / SAMPLE_RATE),
            word_timestamps=final,
            without_timestamps=not final,  # timestamp mode was more accurate on utterances
            condition_on_previous_text=False,
            initial_prompt=None,  # "" is not None in faster-whisper 1.2.1: it silences long buffers
            hotwords=self.hotwords if final else None,
            vad_filter=False,
            **({} if skip_silence else {"no_speech_threshold": None}),
        )
        out: list[Recognized] = []
        for seg in segments:
            text = seg.text.strip()
            if not text:
                continue
            words = tuple(
                Word(
                    text=w.word.strip(),
                    start=round(offset + w.start, 3),
                    end=round(offset + w.end, 3),
                    probability=float(min(1.0, max(0.0, w.probability))),
                )
                for w in (seg.words or [])
                if w.word.strip()
            )
            out.append(
                Recognized(
                    text=text,
                    start=round(offset + seg.start, 3),
                    end=round(offset + seg.end, 3),
                    words=words,
                    avg_logprob=seg.avg_logprob,
                    no_speech_prob=seg.no_speech_prob,
                )
            )
        return out
