"""The shell around the tracker: committed segments + their audio in, speaker labels out.

This is the API the live server wires in (one ``OnlineDiarizer`` per encounter stream):

    diarizer = OnlineDiarizer(load_encoder(), profile=repo.get(clinician_id))  # profile optional
    update = diarizer.add(segment, audio)      # audio: float32 16 kHz, the segment's span
                                                # (mono (n,) or stereo (n, 2))
    segment.model_copy(update={"speaker": update.speaker})
    for r in update.revisions: ...              # segment id → new speaker, for the protocol

``add`` runs the encoder (~10–30 ms per second of audio on one CPU thread): call it in the
worker thread that ran the recogniser, never on the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from ..models import Segment, Speaker
from .encoder import SpeakerEncoder, Windows
from .features import SAMPLE_RATE, voiced
from .profiles import SpeakerProfile
from .stereo import dominant_channel
from .tracker import LabelUpdate, Observation, Revision, SpeakerTracker, TrackerConfig, Turn

log = logging.getLogger(__name__)


class OnlineDiarizer:
    def __init__(self, encoder: SpeakerEncoder, *, profile: SpeakerProfile | None = None,
                 config: TrackerConfig | None = None):
        if profile is not None and profile.model != encoder.model_id:
            raise ValueError(f"profile was made with {profile.model}, the encoder is {encoder.model_id}: re-enrol")
        self.encoder = encoder
        self.tracker = SpeakerTracker(config or TrackerConfig(),
                                      clinician_profile=profile.embedding if profile is not None else None)
        self.compute_s = 0.0
        """CPU seconds spent (encoder + tracker), for the extra-compute figure."""
        self._stereo: bool | None = None

    def add(self, segment: Segment, audio: np.ndarray) -> LabelUpdate:
        t0 = time.process_time()
        audio = np.asarray(audio, dtype=np.float32)
        channel = None
        if audio.ndim == 2 and audio.shape[1] == 2:
            # Decided per segment: one segment usually holds one voice, so "each channel has
            # its own speaker" shows as one channel clearly louder (a mono mix copied to both
            # channels never is, and falls through to the embeddings).
            channel = dominant_channel(audio)
            if channel is not None:
                self._stereo = True
            mono = audio.mean(axis=1)
        else:
            mono = audio.reshape(-1)
        windows = self._embed(mono, segment.start)
        obs = Observation(
            segment_id=segment.id, start=segment.start, end=segment.end, text=segment.text,
            windows=windows.embeddings, window_spans=windows.spans,
            word_times=[(w.start, w.end) for w in segment.words], channel=channel,
        )
        update = self.tracker.observe(obs)
        self.compute_s += time.process_time() - t0
        if update.revisions:
            log.debug("speaker revisions n=%d", len(update.revisions))
        return update

    def hindsight(self) -> tuple[Revision, ...]:
        """Every label re-decided with the whole visit so far (``SpeakerTracker.hindsight``):
        no audio is embedded again, so it costs one re-clustering."""
        t0 = time.process_time()
        revisions = self.tracker.hindsight()
        self.compute_s += time.process_time() - t0
        if revisions:
            log.debug("speaker revisions with hindsight n=%d", len(revisions))
        return revisions

    def turns(self) -> list[Turn]:
        """Who spoke when, at word resolution where a segment was split (``SpeakerTracker.turns``)."""
        return self.tracker.turns()

    def _embed(self, mono: np.ndarray, offset: float) -> Windows:
        # Pauses are cut before embedding; spans are then only approximate encounter times
        # (scaled back over the segment), which is all the in-segment split needs.
        speech = voiced(mono)
        w = self.encoder.embed_windows(speech)
        if not len(w) or not len(speech):
            return w
        scale = len(mono) / len(speech)
        spans = [(offset + s * scale, offset + e * scale) for s, e in w.spans]
        return Windows(w.embeddings, spans)

    @property
    def labels(self) -> dict[str, Speaker]:
        return self.tracker.labels

    @property
    def word_labels(self) -> dict[str, list[Speaker]]:
        return self.tracker.word_labels


def label_segments(encoder: SpeakerEncoder, segments: Sequence[Segment], audio: np.ndarray, *,
                   profile: SpeakerProfile | None = None, config: TrackerConfig | None = None,
                   hindsight: bool = False) -> tuple[list[Segment], OnlineDiarizer]:
    """Offline convenience: run the online labeller over a whole transcript (in order, as the
    stream would) and return the segments with their final labels (``hindsight``: re-decided
    with the whole visit at the end, as the transcript of record is)."""
    d = OnlineDiarizer(encoder, profile=profile, config=config)
    for seg in segments:
        a, b = int(seg.start * SAMPLE_RATE), int(seg.end * SAMPLE_RATE)
        d.add(seg, audio[a:b])
    if hindsight:
        d.hindsight()
    labels = d.labels
    return [s.model_copy(update={"speaker": labels.get(s.id, Speaker.unknown)}) for s in segments], d
