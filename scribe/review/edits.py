"""The pure rules of review: what an edit does to evidence and flags, what resolving a flag
means, and which review state an encounter is in. Notes in, notes and change records out;
no store, no HTTP, so every rule is tested directly.

Why these rules:

* An edited sentence becomes the clinician's own words (``clinician_authored``): the guard no
  longer second-guesses it, and its open flags count as resolved *by editing*. Evidence is kept
  only where the new text still matches what it cites, so the evidence pane never shows support
  for a claim the sentence no longer makes.
* A client sends text and order only. Evidence and flags always come from the server's copy, so
  no client can clear a flag by omitting it or forge evidence.
* Deleting a sentence resolves its flags as ``deleted``; accepting needs a reason in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..models import Delivery, DeliveryState, EncounterStatus, Evidence, Flag, Note, Section, Segment, Sentence
from ..notes import check_note, link_evidence
from .models import ReviewState, replace_sentence


class EditError(ValueError):
    """A review action that cannot be applied; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Change:
    """One audit-worthy change (the service stores it with who and when)."""

    action: str
    sentence_id: str | None = None
    flag_kind: str | None = None
    resolution: str | None = None
    reason: str | None = None
    before: str | None = None
    after: str | None = None


def kept_evidence(text: str, evidence: Sequence[Evidence], segments: Sequence[Segment]) -> list[Evidence]:
    """The old evidence items whose segment still supports ``text`` (by the guard's linker)."""
    cited_ids = {e.segment_id for e in evidence}
    cited = [s for s in segments if s.id in cited_ids]
    if not cited:
        return []
    still = {e.segment_id for e in link_evidence(text, cited)}
    return [e for e in evidence if e.segment_id in still]


def _resolve_open(flags: list[Flag], resolution: str, reason: str | None = None) -> list[Flag]:
    return [
        f if f.resolved else f.model_copy(update={"resolved": True, "resolution": resolution,
                                                  "resolution_reason": reason})
        for f in flags
    ]


def _new_sentence_id(section_key: str, taken: set[str]) -> str:
    n = 1
    while f"{section_key}.c{n}" in taken:
        n += 1
    return f"{section_key}.c{n}"


def apply_edits(old: Note, new: Note, segments: Sequence[Segment]) -> tuple[Note, list[Change]]:
    """The server's note after a client's edit of ``old`` into ``new``, and what changed.

    Sentences are matched by id. Changed text → clinician-authored, evidence kept where it
    still matches, open flags resolved as ``edited``. A new id (or an empty one) → a new
    clinician-authored sentence with evidence linked from the whole transcript. A missing id →
    deleted, its open flags resolved as ``deleted``. The guard is then re-run over the note.
    """
    if new.encounter_id != old.encounter_id:
        raise EditError(f"the note is for encounter {new.encounter_id!r}, not {old.encounter_id!r}")
    old_keys = [s.key for s in old.sections]
    new_keys = [s.key for s in new.sections]
    if new_keys != old_keys:
        raise EditError(f"the note's sections must stay {old_keys} (got {new_keys}); edit sentences, not sections")
    previous: dict[str, tuple[Sentence, str]] = {s.id: (s, sec.key) for sec in old.sections for s in sec.sentences}
    seen: set[str] = set()
    taken = set(previous)
    changes: list[Change] = []
    sections: list[Section] = []
    for old_sec, new_sec in zip(old.sections, new.sections):
        sentences: list[Sentence] = []
        for s in new_sec.sentences:
            text = s.text.strip()
            if not text:
                raise EditError(
                    f"sentence {s.id or '(new)'} is empty; delete the sentence instead of blanking it"
                )
            if s.id and s.id in seen:
                raise EditError(f"sentence id {s.id} appears twice in the note")
            if s.id in previous:
                before, _ = previous[s.id]
                seen.add(s.id)
                if text == before.text.strip():
                    sentences.append(before)
                    continue
                sentence = before.model_copy(update={
                    "text": text,
                    "evidence": kept_evidence(text, before.evidence, segments),
                    "flags": _resolve_open(before.flags, "edited"),
                    "clinician_authored": True,
                })
                changes.append(Change("edit", s.id, before=before.text, after=text))
                changes += [Change("resolve", s.id, flag_kind=f.kind.value, resolution="edited",
                                   before=before.text, after=text)
                            for f in before.flags if not f.resolved]
                sentences.append(sentence)
            else:
                sid = s.id if s.id and s.id not in taken else _new_sentence_id(new_sec.key, taken)
                taken.add(sid)
                seen.add(sid)
                sentence = Sentence(id=sid, text=text, evidence=link_evidence(text, segments),
                                    clinician_authored=True)
                changes.append(Change("add", sid, after=text))
                sentences.append(sentence)
        sections.append(old_sec.model_copy(update={"sentences": sentences}))
    for sid, (before, _) in previous.items():
        if sid not in seen:
            changes.append(Change("delete", sid, before=before.text))
            changes += [Change("resolve", sid, flag_kind=f.kind.value, resolution="deleted", before=before.text)
                        for f in before.flags if not f.resolved]
    note = old.model_copy(update={"sections": sections})
    return check_note(note, segments), changes


def find_sentence(note: Note, sentence_id: str) -> Sentence:
    for s in note.sentences():
        if s.id == sentence_id:
            return s
    raise EditError(f"the draft has no sentence {sentence_id}", status=404)


def resolve_flag(
    note: Note,
    segments: Sequence[Segment],
    *,
    sentence_id: str,
    flag: int,
    resolution: str,
    reason: str | None = None,
    text: str | None = None,
) -> tuple[Note, list[Change]]:
    """Resolve one open flag: ``accepted`` (keep the sentence, with a reason), ``edited`` (new
    text; resolves every open flag of the sentence) or ``deleted`` (drop the sentence)."""
    sentence = find_sentence(note, sentence_id)
    if flag >= len(sentence.flags):
        raise EditError(f"sentence {sentence_id} has {len(sentence.flags)} flag(s); there is no flag {flag}",
                        status=404)
    target = sentence.flags[flag]
    if target.resolved:
        raise EditError(f"that flag was already resolved ({target.resolution})", status=409)
    if resolution == "accepted":
        if not reason:
            raise EditError("accepting a flagged sentence needs a reason (why it is right as written)")
        flags = list(sentence.flags)
        flags[flag] = target.model_copy(update={"resolved": True, "resolution": "accepted",
                                                "resolution_reason": reason})
        updated = replace_sentence(note, sentence_id, sentence.model_copy(update={"flags": flags}))
        return updated, [Change("resolve", sentence_id, flag_kind=target.kind.value, resolution="accepted",
                                reason=reason, before=sentence.text, after=sentence.text)]
    if resolution == "edited":
        if not text:
            raise EditError("resolving a flag by editing needs the sentence's new text")
        if text == sentence.text.strip():
            raise EditError("the new text is the same as the old; change the sentence, or accept the flag "
                            "with a reason")
        edited = replace_sentence(note, sentence_id, sentence.model_copy(update={"text": text}))
        return apply_edits(note, edited, segments)
    if resolution == "deleted":
        return apply_edits(note, replace_sentence(note, sentence_id, None), segments)
    raise EditError(f"unknown resolution {resolution!r}: use edited, accepted or deleted")


def review_state(
    status: EncounterStatus,
    *,
    has_draft: bool,
    signed_current: bool,
    delivery: Delivery | None,
    drafting: bool = False,
) -> ReviewState:
    """One state per encounter for the list. ``signed_current``: the latest draft is the one
    signed (an amendment in progress is a draft again); ``delivery``: that signature's."""
    if signed_current:
        if delivery is not None and delivery.state is DeliveryState.delivered:
            return ReviewState.delivered
        if delivery is not None and delivery.state is DeliveryState.failed:
            return ReviewState.failed
        return ReviewState.signed
    if status is EncounterStatus.recording:
        return ReviewState.recording
    if status is EncounterStatus.failed and not has_draft:
        return ReviewState.failed
    if drafting or not has_draft or status is EncounterStatus.drafting:
        return ReviewState.drafting
    return ReviewState.draft_ready
