"""The clinician's edits applied to a copy of the note before it is sent (``PUT …/draft``).

Only sentence texts, their order and their sections count on the way in: the service re-links
evidence and re-runs the guard on what it receives. So these are plain list edits, kept here
rather than imported from ``scribe.review.edits``, which would bring the whole drafting engine
(``scribe.notes``) into the review app.
"""

from __future__ import annotations

from scribe.models import Note, Sentence


def with_text(note: Note, sentence_id: str, text: str | None) -> Note:
    """The note with one sentence's text changed, or the sentence removed when ``text`` is None."""
    sections = []
    for sec in note.sections:
        items = []
        for s in sec.sentences:
            if s.id != sentence_id:
                items.append(s)
            elif text is not None:
                items.append(s.model_copy(update={"text": text}))
        sections.append(sec.model_copy(update={"sentences": items}))
    return note.model_copy(update={"sections": sections})


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
