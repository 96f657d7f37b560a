"""Typed values of the review API: what crosses the wire between the service and the review app.

Request models forbid unknown fields so a typo in a client is a clear 400, not a silently
ignored option. The app (``tui/``) imports these models and ``scribe.models``; it never
touches the store.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..models import Delivery, Note, Segment, Sentence, SignedNote, utcnow


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReviewState(StrEnum):
    """Where an encounter stands from the reviewing clinician's point of view."""

    recording = "recording"
    drafting = "drafting"
    draft_ready = "draft_ready"
    signed = "signed"
    delivered = "delivered"
    failed = "failed"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class EncounterSummary(_Model):
    id: str
    patient_ref: str
    clinician_id: str
    status: str
    """The store's ``EncounterStatus``."""
    state: ReviewState
    created_at: datetime
    updated_at: datetime
    segment_count: int
    draft_version: int | None = None
    sentences: int = 0
    open_flags: int = 0
    signed_version: int | None = None
    delivery: Delivery | None = None
    """The latest delivery of the latest signed version, if any."""


class EncounterList(_Model):
    encounters: list[EncounterSummary]
    counts: dict[ReviewState, int]
    """Per state, over all encounters (not only the filtered ones)."""


class TranscriptView(_Model):
    encounter_id: str
    status: str
    segments: list[Segment]
    segment_count: int
    """Segments the live pass has committed."""
    revisions: int = 0
    """Record-pass windows stored so far: when it grows, earlier segments were replaced
    (fetch the transcript again from the start)."""


class DraftProgress(_Model):
    """How far a draft being written has got (``done`` of ``total`` transcript segments)."""

    encounter_id: str
    done: int
    total: int
    finished: bool = False
    error: str | None = None


class DraftView(_Model):
    encounter_id: str
    version: int
    note: Note
    state: ReviewState
    open_flags: int
    progress: DraftProgress | None = None


class DraftUpdate(_Model):
    """``PUT …/draft``: the whole edited note plus the version the edit was made on.

    Only sentence texts, their order and their sections are taken from the client; evidence
    and flags are the server's (a client cannot mark a flag resolved by sending it so).
    """

    base_version: int
    note: Note
    actor: str | None = None


# The edits a client makes to its copy of the note before sending it (``DraftUpdate``), and the
# service's rules build on (``edits.resolve_flag``). Plain list edits on the wire values: the
# service re-links evidence and re-runs the guard on whatever it receives.


def replace_sentence(note: Note, sentence_id: str, sentence: Sentence | None) -> Note:
    """The note with one sentence replaced (or removed when ``sentence`` is None)."""
    sections = []
    for sec in note.sections:
        items = []
        for s in sec.sentences:
            if s.id != sentence_id:
                items.append(s)
            elif sentence is not None:
                items.append(sentence)
        sections.append(sec.model_copy(update={"sentences": items}))
    return note.model_copy(update={"sections": sections})


def with_text(note: Note, sentence_id: str, text: str | None) -> Note:
    """The note with one sentence's text changed, or the sentence removed when ``text`` is None."""
    if text is None:
        return replace_sentence(note, sentence_id, None)
    for s in note.sentences():
        if s.id == sentence_id:
            return replace_sentence(note, sentence_id, s.model_copy(update={"text": text}))
    return note.model_copy()


def with_sentence_after(note: Note, after: str | None, text: str) -> Note:
    """The note with a new sentence (no id yet: the service gives it one) after ``after``, or at
    the end of the last section when ``after`` is not in the note."""
    sections = []
    placed = False
    for sec in note.sections:
        items = []
        for s in sec.sentences:
            items.append(s)
            if s.id == after:
                items.append(Sentence(id="", text=text))
                placed = True
        sections.append(sec.model_copy(update={"sentences": items}))
    if not placed and sections:
        sections[-1] = sections[-1].model_copy(update={"sentences": [*sections[-1].sentences,
                                                                     Sentence(id="", text=text)]})
    return note.model_copy(update={"sections": sections})


class FlagResolution(_Model):
    base_version: int
    sentence_id: str
    flag: int = Field(ge=0, description="index of the flag in the sentence's flags list")
    resolution: Literal["edited", "accepted", "deleted"]
    reason: str | None = None
    """Required for ``accepted``: why the clinician keeps the sentence as it is."""
    text: str | None = None
    """Required for ``edited``: the sentence's new text."""
    actor: str | None = None

    @field_validator("reason", "text")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() if isinstance(v, str) else v


class SignRequest(_Model):
    version: int
    """The draft version the clinician read; signing a newer one needs a fresh look."""
    confirm: bool
    actor: str | None = None


class AmendRequest(_Model):
    """Start an amendment of the latest signed note: a new editable draft from it."""

    reason: str
    actor: str | None = None

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("an amendment needs a reason")
        return v.strip()


class SignResult(_Model):
    signed: SignedNote
    deliveries: list[Delivery]


class DeliveryView(_Model):
    encounter_id: str
    signed: list[SignedNote]
    deliveries: list[Delivery]


class ReviewEvent(_Model):
    """One audit record: who changed what, when, with the before and after."""

    seq: int
    encounter_id: str
    at: datetime = Field(default_factory=utcnow)
    actor: str
    action: Literal["draft", "edit", "add", "delete", "resolve", "sign", "amend"]
    sentence_id: str | None = None
    flag_kind: str | None = None
    resolution: str | None = None
    reason: str | None = None
    before: str | None = None
    after: str | None = None
    draft_version: int | None = None


class LiveEvent(_Model):
    """A server-sent event: ``type`` says what changed; the client re-reads what it shows."""

    type: Literal["encounter", "segments", "draft", "draft_progress", "delivery", "review", "hello"]
    encounter_id: str | None = None
    data: dict = Field(default_factory=dict)
