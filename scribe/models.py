"""The typed values that flow through scribe, in one module.

A reader can follow one encounter from the microphone to the EHR by reading these types
in order: ``AudioFrame`` → ``Segment`` → ``Transcript`` → ``Note`` (``Section`` →
``Sentence`` → ``Evidence`` + ``Flag``) → ``SignedNote`` → ``Delivery``.

Every model is a frozen-by-convention pydantic model so that it can cross a boundary (a
websocket, the store, a worker thread, a file) and come back identical: ``Model.model_validate_json(
m.model_dump_json()) == m`` is a property the tests check.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    """Timezone-aware now; naive datetimes never cross a boundary."""
    return datetime.now(timezone.utc)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- audio


class AudioFrame(_Model):
    """One numbered chunk of PCM16 mono audio as the client sent it.

    ``seq`` starts at 0 and increases by one per frame; it is what makes resume after a
    dropped connection exact (no gap, no duplicate).
    """

    seq: int = Field(ge=0)
    pcm: bytes
    sample_rate: int = 16_000

    @property
    def num_samples(self) -> int:
        return len(self.pcm) // 2


# --------------------------------------------------------------------------- transcript


class Speaker(StrEnum):
    clinician = "clinician"
    patient = "patient"
    other = "other"
    unknown = "unknown"


class Word(_Model):
    """A recognised word with encounter-time bounds and the recogniser's confidence.

    ``probability`` is kept so later stages can flag a low-confidence lexicon word (hotword
    biasing can put a drug name where none was said).
    """

    text: str
    start: float
    end: float
    probability: float = Field(ge=0.0, le=1.0)


LOW_CONFIDENCE_WORD = 0.5
"""Word probability below which the review app marks a word and the guard flags a drug name,
dose or number that rests on it (``low_confidence_word``). Measured with
``scripts/bench_word_confidence.py`` on the dev audio (docs/benchmarks.md)."""


class Segment(_Model):
    """A committed stretch of transcript: stable once emitted, never revised in text.

    ``start``/``end`` are seconds from the start of the encounter (not of the utterance).
    ``index`` is the 0-based position in the encounter; ``id`` is derived from it so the
    same audio always yields the same id after a resume.
    """

    id: str
    index: int = Field(ge=0)
    start: float
    end: float
    text: str
    words: list[Word] = Field(default_factory=list)
    speaker: Speaker = Speaker.unknown
    avg_logprob: float | None = None
    no_speech_prob: float | None = None

    @staticmethod
    def make_id(index: int) -> str:
        return f"seg-{index:05d}"


class Transcript(_Model):
    encounter_id: str
    language: str = "en"
    segments: list[Segment] = Field(default_factory=list)
    duration: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


# --------------------------------------------------------------------------- encounters


class EncounterStatus(StrEnum):
    recording = "recording"
    transcribed = "transcribed"
    drafting = "drafting"
    draft_ready = "draft_ready"
    signed = "signed"
    delivered = "delivered"
    failed = "failed"
    withdrawn = "withdrawn"
    """Consent was withdrawn: audio, transcript and drafts deleted; only the audit record remains."""


class Consent(_Model):
    """Who agreed to being recorded, how, when, and who recorded it.

    The server refuses to start a new recording unless all of it is present and recent
    (``scribe.trust.consent.validate_consent``); ``given`` alone is not a consent record."""

    given: bool
    given_by: Literal["patient", "guardian", "representative"] | None = None
    method: Literal["verbal", "written", "electronic", "unspecified"] = "unspecified"
    recorded_by: str | None = None
    at: datetime | None = None

    @classmethod
    def recorded_now(
        cls,
        recorded_by: str,
        *,
        method: Literal["verbal", "written", "electronic"] = "verbal",
        given_by: Literal["patient", "guardian", "representative"] = "patient",
    ) -> Consent:
        """A complete consent obtained just now (what ``scribe record --consent`` sends)."""
        return cls(given=True, given_by=given_by, method=method, recorded_by=recorded_by, at=utcnow())


class Encounter(_Model):
    id: str
    clinician_id: str
    patient_ref: str
    language: str = "en"
    sample_rate: int = 16_000
    consent: Consent
    status: EncounterStatus = EncounterStatus.recording
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    last_seq: int = -1
    """Highest frame sequence number persisted (what ``ack`` reports)."""
    samples_received: int = 0
    """Encounter-time length of the persisted audio, in 16 kHz samples."""
    committed_until: int = 0
    """Sample up to which audio has been transcribed and committed (resume point)."""
    segment_count: int = 0


# --------------------------------------------------------------------------- notes


class Evidence(_Model):
    """A pointer from a note sentence back to what was said."""

    segment_id: str
    start: float
    end: float
    quote: str
    """The exact span of the segment's text that supports the sentence."""


class FlagKind(StrEnum):
    no_evidence = "no_evidence"
    unsupported_number = "unsupported_number"
    unsupported_drug = "unsupported_drug"
    dose_status = "dose_status"
    negation_mismatch = "negation_mismatch"
    section_placement = "section_placement"
    low_confidence_word = "low_confidence_word"
    degenerate_output = "degenerate_output"
    contradicted_later = "contradicted_later"
    """A plan item the clinician seemed to take back later ("not a thumb spica, …")."""
    unsupported_relative = "unsupported_relative"
    """A family member the cited lines never name ("father has depression" from "I have depression")."""


class Flag(_Model):
    kind: FlagKind
    message: str
    """Plain words a clinician can act on (contains no more PHI than the note itself)."""
    span: str | None = None
    resolved: bool = False
    resolution: Literal["edited", "accepted", "deleted"] | None = None
    resolution_reason: str | None = None


class Sentence(_Model):
    id: str
    text: str
    evidence: list[Evidence] = Field(default_factory=list)
    flags: list[Flag] = Field(default_factory=list)
    clinician_authored: bool = False


class Section(_Model):
    key: str
    title: str
    sentences: list[Sentence] = Field(default_factory=list)


class Note(_Model):
    encounter_id: str
    template: str = "soap"
    title: str = "SOAP note"
    loinc: str = "11506-3"
    sections: list[Section] = Field(default_factory=list)
    writer: str = "extractive"
    created_at: datetime = Field(default_factory=utcnow)
    omissions: list[str] = Field(default_factory=list)
    """Facts extracted from the transcript that no sentence covers."""

    def sentences(self) -> list[Sentence]:
        return [s for sec in self.sections for s in sec.sentences]

    @property
    def open_flags(self) -> list[Flag]:
        return [f for s in self.sentences() for f in s.flags if not f.resolved]


class SignedNote(_Model):
    note: Note
    signed_by: str
    signed_at: datetime = Field(default_factory=utcnow)
    version: int = 1
    replaces: str | None = None
    id: str | None = None
    """Signature id in the outbox (``sig-…``); None before it is recorded."""
    content_hash: str | None = None
    """SHA-256 of the note content (what makes signing the same note twice a no-op)."""
    retracted_at: datetime | None = None
    """Set when the clinician retracted this version (sent as ``entered-in-error``)."""


class DeliveryState(StrEnum):
    queued = "queued"
    in_flight = "in_flight"
    delivered = "delivered"
    failed = "failed"


class Delivery(_Model):
    id: str
    encounter_id: str
    target: str
    state: DeliveryState = DeliveryState.queued
    attempts: int = 0
    resource_id: str | None = None
    error: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    signature_id: str | None = None
    version: int | None = None
    action: Literal["create", "retract"] = "create"
    """``create`` delivers a version; ``retract`` marks a delivered one ``entered-in-error``."""
    next_attempt_at: datetime | None = None
    location: str | None = None
    """Where the target put it: the EHR's resource URL or the file written."""
    created_at: datetime | None = None
