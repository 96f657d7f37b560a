"""FHIR delivery: the pure document builder (``document``) and note renderer (``render``).

The client, outbox and targets (the I/O shell) build on these; nothing here does I/O.
"""

from scribe.fhir.document import (
    DEFAULT_IDENTIFIER_SYSTEM,
    NOTE_TYPES,
    AttachmentFormat,
    DocumentContext,
    attachment_bytes,
    build_document_reference,
    build_transaction_bundle,
    entered_in_error,
    fhir_instant,
    identifier_search,
    note_identifier,
    supersede,
)
from scribe.fhir.render import TextFormat, render_note

__all__ = [
    "DEFAULT_IDENTIFIER_SYSTEM",
    "NOTE_TYPES",
    "AttachmentFormat",
    "DocumentContext",
    "TextFormat",
    "attachment_bytes",
    "build_document_reference",
    "build_transaction_bundle",
    "entered_in_error",
    "fhir_instant",
    "identifier_search",
    "note_identifier",
    "render_note",
    "supersede",
]
