"""The shared, expensive engines of the service: one recogniser, one voice encoder, one ASR
thread pool and one notes thread, and the factories that give each live encounter its
streaming transcriber, speaker labeller and draft session.

Built once by the composition root (``service.app``); a session never loads a model itself.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..asr.streaming import AgreementTranscriber, Committed, PartialText, UtteranceTranscriber
from ..config import Settings
from ..store import Store

if TYPE_CHECKING:
    from ..notes.writers import DraftSession

log = logging.getLogger(__name__)


class StreamingTranscriber(Protocol):
    committed_until: int
    next_index: int

    def feed(self, samples: np.ndarray, *, allow_partial: bool = True) -> list[Committed | PartialText]: ...

    def flush(self) -> list[Committed | PartialText]: ...


class Engine:
    """The shared, expensive parts: one recogniser, one VAD factory, one ASR thread pool."""

    def __init__(self, settings: Settings, recognizer: Any | None = None, record_recognizer: Any | None = None):
        self.settings = settings
        self._recognizer = recognizer
        asr = settings.asr
        # One executor thread per decode worker the recogniser allows (asr.parallelism()).
        self.executor = ThreadPoolExecutor(max_workers=asr.parallelism()[1], thread_name_prefix="scribe-asr")
        self.notes_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scribe-notes")
        """Per-segment drafting work (classification, fact extraction): off the ASR thread."""
        self.speaker_encoder: Any | None = None
        """The voice encoder for speaker labels (None: labels off or the model is missing)."""
        self.record_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scribe-record",
                                                  initializer=_lower_priority)
        """The record pass (``recording.py``): one decode at a time, at a lower CPU priority."""
        self._record_recognizer: Any | None = record_recognizer
        self._record_loading: asyncio.Future[Any] | None = None

    @property
    def recognizer(self) -> Any:
        if self._recognizer is None:
            raise RuntimeError("engine not loaded")
        return self._recognizer

    def load(self) -> None:
        if self.settings.speakers.enabled and self.speaker_encoder is None:
            from ..diarize.encoder import EncoderMissing, load_encoder

            try:
                self.speaker_encoder = load_encoder()
            except EncoderMissing as exc:
                # Transcription still works; segments carry speaker "unknown".
                log.warning("speaker labels off: %s", exc)
        if self._recognizer is None:
            from ..asr.whisper import WhisperRecognizer

            self._recognizer = WhisperRecognizer.from_settings(self.settings)

    async def record_recognizer(self) -> Any:
        """The record pass's recogniser (``asr.record_model``), loaded once, on the record
        thread (so the decoder's own threads inherit its lower priority). Raises
        ``ModelNotFound`` when the model is not on this machine."""
        if self._record_recognizer is not None:
            return self._record_recognizer
        if self._record_loading is None:
            from ..asr.whisper import WhisperRecognizer

            loop = asyncio.get_running_loop()
            self._record_loading = asyncio.ensure_future(loop.run_in_executor(
                self.record_executor, WhisperRecognizer.for_record_pass, self.settings))
        try:
            self._record_recognizer = await asyncio.shield(self._record_loading)
        except Exception:
            self._record_loading = None  # a later session tries again
            raise
        return self._record_recognizer

    def policy(self) -> str:
        asr = self.settings.asr
        if asr.policy != "auto":
            return asr.policy
        device = getattr(self._recognizer, "device", "cpu")
        return "local_agreement" if device == "cuda" else "utterance"

    def diarizer(self, clinician_id: str, store: Store) -> Any | None:
        """A speaker labeller for one stream, with the clinician's enrolled voice if any."""
        if self.speaker_encoder is None:
            return None
        from ..diarize.diarizer import OnlineDiarizer
        from ..diarize.profiles import ProfileError, ProfileRepository, legacy_key

        profile = None
        try:
            repo = ProfileRepository(store, legacy_key(self.settings))
            profile = repo.get(clinician_id)
        except (ProfileError, OSError, ValueError) as exc:
            log.warning("voice profile unavailable; roles are inferred: %s", type(exc).__name__)
        try:
            return OnlineDiarizer(self.speaker_encoder, profile=profile)
        except ValueError:  # a profile from another encoder version: re-enrol
            log.warning("voice profile is for another model; roles are inferred")
            return OnlineDiarizer(self.speaker_encoder)

    def draft_session(self, encounter_id: str, language: str) -> DraftSession | None:
        """A note draft that grows with the transcript (None when drafting is off)."""
        notes = self.settings.notes
        if not notes.draft_on_stop:
            return None
        from ..notes import load_template
        from ..notes.writers import writer_from_settings

        writer = writer_from_settings(self.settings)
        return writer.start(encounter_id, load_template(notes.template, notes.templates_dir), language=language)

    def unsupported_language(self, language: str | None) -> str | None:
        check = getattr(self.recognizer, "unsupported_language", None)
        return check(language) if check else None

    def transcriber(self, *, origin: int, first_index: int, language: str | None = None) -> StreamingTranscriber:
        asr = self.settings.asr
        recognizer = self.recognizer
        if language and language != getattr(recognizer, "language", None):
            recognizer = _SessionLanguage(recognizer, language)
        if self.policy() == "local_agreement":
            return AgreementTranscriber(recognizer, origin=origin, first_index=first_index)
        from ..asr.vad import StreamingVad

        config = asr.segmenter_config()
        return UtteranceTranscriber(
            recognizer,
            StreamingVad(),
            config,
            origin=origin,
            first_index=first_index,
            **asr.utterance_options(),
        )


def _lower_priority() -> None:
    """Run the calling thread (and the threads it starts) at a lower CPU priority (Linux: a
    thread's nice value; elsewhere nothing)."""
    import os
    import threading

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


class _SessionLanguage:
    """The shared recogniser, decoding in one session's spoken language."""

    def __init__(self, recognizer: Any, language: str):
        self.recognizer = recognizer
        self.language = language

    def transcribe(self, audio: np.ndarray, *, offset: float, final: bool = True) -> Any:
        return self.recognizer.transcribe(audio, offset=offset, final=final, language=self.language)

    def transcribe_speech(self, audio: np.ndarray, *, offset: float) -> Any:
        # optional on a recogniser (whisper.Recognizer): without it, no second decode
        again = getattr(self.recognizer, "transcribe_speech", None)
        return [] if again is None else again(audio, offset=offset, language=self.language)
