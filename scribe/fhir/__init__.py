"""FHIR delivery of signed notes.

Pure core: the document builder (``document``), the note renderer (``render``) and the error
wording/backoff arithmetic (``outcome``). I/O shell: the REST client (``client``, ``smart``),
patient/encounter resolution (``resolve``), delivery targets (``targets``: FHIR REST endpoint or
a directory of FHIR JSON) and the durable outbox (``outbox``). The shell modules are imported
lazily by their users so that ``import scribe.fhir`` stays light.
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
