"""Signed note + encounter context → FHIR R4 US Core ``DocumentReference`` (pure).

Bytes and models in, a JSON-ready ``dict`` out; no I/O, no clock, no randomness: the same inputs
always give the same resource, which is what makes delivery idempotent (stable ``identifier``,
conditional create).

Resources are built with ``fhir.resources.R4B`` (R4-compatible; the package's default is R5,
which R4 servers reject). Its own validation is loose (it accepts unknown codes and empty
lists), so the rules that matter are enforced here and checked against a validating server in
the tests.

What a built document carries (US Core DocumentReference):

- ``meta.profile``       US Core DocumentReference (optional, ``DocumentContext.profile``)
- ``identifier``         ``{system: ctx.identifier_system, value: uuid5(encounter id, version)}``
- ``status``             ``current`` (``entered_in_error()``/``supersede()`` change it later)
- ``docStatus``          ``final``; ``amended`` for a later version; ``preliminary`` for drafts
- ``type``               LOINC from ``note.loinc`` (11506-3 progress, 34117-2 H&P, 11488-4 consult…)
- ``category``           us-core ``clinical-note``
- ``subject``            ``Patient/…``;  ``context.encounter`` ``Encounter/…``; ``context.period``
- ``author``             ``Practitioner/…`` (or PractitionerRole); ``authenticator`` the signer
- ``date``               when signed;  ``custodian`` ``Organization/…`` if configured
- ``relatesTo``          ``replaces`` → the previous version, for amendments
- ``content[0]``         ``attachment`` (contentType, language, base64 data, size, SHA-1 hash,
                         title, creation) and ``format`` (IHE mimeTypeSufficient)
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference
from scribe.fhir.render import TextFormat, render_note
from scribe.fhir.render import _clean as _clean_text
from scribe.models import Encounter, Note, SignedNote

# --------------------------------------------------------------------------- constants

LOINC = "http://loinc.org"
US_CORE_CATEGORY_SYSTEM = (
    "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
)
US_CORE_DOCUMENTREFERENCE_PROFILE = (
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference"
)
IHE_FORMAT_SYSTEM = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
DEFAULT_IDENTIFIER_SYSTEM = "urn:scribe:note"

NOTE_TYPES: dict[str, str] = {
    "11506-3": "Progress note",
    "34117-2": "History and physical note",
    "11488-4": "Consult note",
    "18842-5": "Discharge summary",
    "28570-0": "Procedure note",
    "34111-1": "Emergency department note",
    "34746-8": "Nurse note",
}
"""LOINC document types scribe's templates use, with their LOINC display names."""

TEMPLATE_LOINC: dict[str, str] = {
    "soap": "11506-3",
    "progress": "11506-3",
    "hp": "34117-2",
    "h_and_p": "34117-2",
    "history_and_physical": "34117-2",
    "consult": "11488-4",
    "discharge": "18842-5",
    "procedure": "28570-0",
}
"""Fallback when a note carries no LOINC code: template name → LOINC."""

# uuid5 namespace for note identifiers; never change it (it would re-identify every note).
_IDENTIFIER_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:scribe:note")

_ID = r"[A-Za-z0-9\-.]{1,64}"
_REFERENCE = re.compile(
    rf"^(?:(?P<base>https?://\S+)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_ID})(?:/_history/{_ID})?$"
)


class AttachmentFormat(StrEnum):
    """MIME type of the note text; some EHRs accept only one of these."""

    plain = "text/plain; charset=utf-8"
    markdown = "text/markdown; charset=utf-8"
    xhtml = "text/html; charset=utf-8"

    @property
    def text_format(self) -> TextFormat:
        return {
            AttachmentFormat.plain: TextFormat.plain,
            AttachmentFormat.markdown: TextFormat.markdown,
            AttachmentFormat.xhtml: TextFormat.xhtml,
        }[self]


DocStatus = Literal["preliminary", "final", "amended", "entered-in-error"]

# --------------------------------------------------------------------------- helpers


def _reference(value: str, allowed: tuple[str, ...], what: str) -> str:
    """Normalise ``"123"`` → ``"Patient/123"``; check ``Type/id`` or an absolute URL to one."""
    value = value.strip()
    if re.fullmatch(_ID, value):
        return f"{allowed[0]}/{value}"
    m = _REFERENCE.match(value)
    if not m:
        raise ValueError(f"{what} must be a FHIR reference like '{allowed[0]}/123', got {value!r}")
    if m["type"] not in allowed:
        raise ValueError(f"{what} must reference {' or '.join(allowed)}, got {m['type']}")
    return value


def _aware(dt: datetime, what: str) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return dt


def fhir_instant(dt: datetime) -> str:
    """UTC, millisecond precision, ``Z``: e.g. ``2024-05-01T14:03:07.250Z``."""
    dt = _aware(dt, "datetime").astimezone(timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def note_identifier(
    encounter_id: str, version: int | str, system: str = DEFAULT_IDENTIFIER_SYSTEM
) -> dict[str, str]:
    """The business identifier of one version of an encounter's note.

    ``value`` is ``uuid5(encounter id, version)``: stable across retries, restarts and machines,
    opaque (no PHI, nothing that needs escaping in a search), different for each version.
    Drafts use version ``"draft"``.
    """
    label = version if isinstance(version, str) else f"v{int(version)}"
    value = str(uuid.uuid5(_IDENTIFIER_NAMESPACE, f"{encounter_id}\n{label}"))
    return {"system": system, "value": value}


def _escape_token(text: str) -> str:
    # FHIR search escaping for token parts: \ | , $
    return re.sub(r"([\\|,$])", r"\\\1", text)


def identifier_search(identifier: Mapping[str, str]) -> str:
    """``identifier=system|value`` for ``If-None-Exist`` or a search URL (escaped, URL-encoded)."""
    token = f"{_escape_token(identifier['system'])}|{_escape_token(identifier['value'])}"
    return "identifier=" + quote(token, safe=":/|")


def _loinc_type(note: Note) -> dict[str, Any]:
    code = (note.loinc or "").strip() or TEMPLATE_LOINC.get(note.template.lower(), "11506-3")
    display = NOTE_TYPES.get(code)
    coding: dict[str, str] = {"system": LOINC, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": display or note.title}


def _dump(resource: DocumentReference | Bundle) -> dict[str, Any]:
    return resource.model_dump(mode="json", exclude_none=True)


# --------------------------------------------------------------------------- context


class DocumentContext(BaseModel):
    """Where a note goes in the EHR: who it is about, which visit, who wrote and signed it.

    References accept ``"Patient/123"``, an absolute URL to one, or a bare id (``"123"``, which
    gets the expected type prefixed). Datetimes must be timezone-aware.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    patient: str
    """``Patient/…``: DocumentReference.subject."""
    encounter: str
    """``Encounter/…`` in the EHR: DocumentReference.context.encounter."""
    practitioner: str
    """``Practitioner/…`` (or ``PractitionerRole/…``): the author."""
    authenticator: str | None = None
    """Who attested the note; defaults to ``practitioner``."""
    period_start: datetime
    period_end: datetime | None = None
    custodian: str | None = None
    """``Organization/…`` that keeps the document, if the site wants it stated."""
    identifier_system: str = DEFAULT_IDENTIFIER_SYSTEM
    attachment_format: AttachmentFormat = AttachmentFormat.plain
    language: str | None = "en"
    """BCP-47 language of the note text (attachment.language); None to omit."""
    profile: str | None = US_CORE_DOCUMENTREFERENCE_PROFILE
    """Profile claimed in meta.profile; None to claim none."""

    @field_validator("patient")
    @classmethod
    def _patient(cls, v: str) -> str:
        return _reference(v, ("Patient",), "patient")

    @field_validator("encounter")
    @classmethod
    def _encounter(cls, v: str) -> str:
        return _reference(v, ("Encounter",), "encounter")

    @field_validator("practitioner")
    @classmethod
    def _practitioner(cls, v: str) -> str:
        return _reference(v, ("Practitioner", "PractitionerRole"), "practitioner")

    @field_validator("authenticator")
    @classmethod
    def _authenticator(cls, v: str | None) -> str | None:
        return (
            None
            if v is None
            else _reference(
                v, ("Practitioner", "PractitionerRole", "Organization"), "authenticator"
            )
        )

    @field_validator("custodian")
    @classmethod
    def _custodian(cls, v: str | None) -> str | None:
        return None if v is None else _reference(v, ("Organization",), "custodian")

    @field_validator("identifier_system")
    @classmethod
    def _system(cls, v: str) -> str:
        if not v or re.search(r"\s", v):
            raise ValueError("identifier_system must be a non-empty URI without spaces")
        return v

    @field_validator("attachment_format", mode="before")
    @classmethod
    def _format(cls, v: Any) -> Any:
        # also accept the short names: "plain", "markdown", "xhtml"
        return (
            AttachmentFormat[v] if isinstance(v, str) and v in AttachmentFormat.__members__ else v
        )

    @field_validator("period_start", "period_end")
    @classmethod
    def _tz(cls, v: datetime | None) -> datetime | None:
        return None if v is None else _aware(v, "period")

    @model_validator(mode="after")
    def _period(self) -> DocumentContext:
        if self.period_end is not None and self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self

    @classmethod
    def from_encounter(
        cls,
        encounter: Encounter,
        *,
        ehr_encounter: str,
        practitioner: str | None = None,
        period_end: datetime | None = None,
        **options: Any,
    ) -> DocumentContext:
        """Context from scribe's ``Encounter``: patient from ``patient_ref``, author from
        ``clinician_id`` (unless given), start from ``created_at``, language from the encounter.
        ``ehr_encounter`` is the EHR's Encounter reference (scribe's encounter id is not one)."""
        options.setdefault("language", encounter.language)
        return cls(
            patient=encounter.patient_ref,
            encounter=ehr_encounter,
            practitioner=practitioner or encounter.clinician_id,
            period_start=encounter.created_at,
            period_end=period_end,
            **options,
        )


# --------------------------------------------------------------------------- builder


def _replaces_target(
    replaces: str | Mapping[str, Any] | None, encounter_id: str, version: int, system: str
) -> dict[str, Any] | None:
    if isinstance(replaces, Mapping):
        return dict(replaces)
    if replaces:
        return {"reference": _reference(replaces, ("DocumentReference",), "replaces")}
    if version > 1:
        # The previous version's server id is unknown here: refer to it by its identifier.
        return {
            "type": "DocumentReference",
            "identifier": note_identifier(encounter_id, version - 1, system),
        }
    return None


def build_document_reference(
    source: SignedNote | Note,
    ctx: DocumentContext,
    *,
    doc_status: DocStatus | None = None,
    replaces: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the ``DocumentReference`` for a signed note (or, ``preliminary``, an unsigned draft).

    ``doc_status``: defaults to ``final`` for version 1, ``amended`` for a later version and
    ``preliminary`` for a bare ``Note``. ``replaces``: the DocumentReference this one replaces
    (``"DocumentReference/id"``, an id, or a Reference dict); defaults to ``SignedNote.replaces``,
    else, for version > 1, a logical reference to the previous version's identifier.
    Returns FHIR JSON as a dict, ready to POST.
    """
    signed = source if isinstance(source, SignedNote) else None
    note = signed.note if signed else source
    assert isinstance(note, Note)
    if doc_status is None:
        doc_status = (
            "preliminary"
            if signed is None
            else ("amended" if signed.version > 1 or signed.replaces or replaces else "final")
        )
    if signed is None and doc_status != "preliminary":
        raise ValueError("an unsigned note can only be sent as docStatus 'preliminary'")

    text = render_note(note, ctx.attachment_format.text_format)
    data = text.encode("utf-8")
    when = signed.signed_at if signed else note.created_at
    version_label: int | str = signed.version if signed else "draft"

    attachment: dict[str, Any] = {
        "contentType": ctx.attachment_format.value,
        "data": base64.b64encode(data).decode("ascii"),
        "size": len(data),
        "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),
        # Same cleaning as the rendered text: a control character is invalid in a FHIR string.
        "title": _clean_text(note.title) or _loinc_type(note)["text"],
        "creation": fhir_instant(when),
    }
    if ctx.language:
        attachment["language"] = ctx.language

    period: dict[str, str] = {"start": fhir_instant(ctx.period_start)}
    if ctx.period_end is not None:
        period["end"] = fhir_instant(ctx.period_end)

    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "identifier": [note_identifier(note.encounter_id, version_label, ctx.identifier_system)],
        "status": "current",
        "docStatus": doc_status,
        "type": _loinc_type(note),
        "category": [
            {
                "coding": [
                    {
                        "system": US_CORE_CATEGORY_SYSTEM,
                        "code": "clinical-note",
                        "display": "Clinical Note",
                    }
                ]
            }
        ],
        "subject": {"reference": ctx.patient},
        "date": fhir_instant(when),
        "author": [{"reference": ctx.practitioner}],
        "content": [
            {
                "attachment": attachment,
                "format": {
                    "system": IHE_FORMAT_SYSTEM,
                    "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                    "display": "mimeType Sufficient",
                },
            }
        ],
        "context": {"encounter": [{"reference": ctx.encounter}], "period": period},
    }
    if ctx.profile:
        doc["meta"] = {"profile": [ctx.profile]}
    if signed is not None:
        doc["authenticator"] = {"reference": ctx.authenticator or ctx.practitioner}
    if ctx.custodian:
        doc["custodian"] = {"reference": ctx.custodian}
    if signed is not None:
        target = _replaces_target(
            replaces or signed.replaces, note.encounter_id, signed.version, ctx.identifier_system
        )
        if target:
            doc["relatesTo"] = [{"code": "replaces", "target": target}]

    # Type-check through fhir.resources (R4B) and emit its canonical JSON.
    return _dump(DocumentReference.model_validate(doc))


def _with_status(resource: Mapping[str, Any], status: str) -> dict[str, Any]:
    if resource.get("resourceType") != "DocumentReference":
        raise ValueError("not a DocumentReference")
    out = copy.deepcopy(
        dict(resource)
    )  # everything else as the server has it (id, meta for If-Match)
    out["status"] = status
    DocumentReference.model_validate(out)  # still a well-formed R4 DocumentReference
    return out


def entered_in_error(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The same resource (id, meta kept for If-Match) retracted: status ``entered-in-error``."""
    return _with_status(resource, "entered-in-error")


def supersede(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The same resource marked ``superseded`` (what the old version becomes after an amendment)."""
    return _with_status(resource, "superseded")


def attachment_bytes(resource: Mapping[str, Any], index: int = 0) -> bytes:
    """The decoded bytes of ``content[index].attachment.data``."""
    return base64.b64decode(resource["content"][index]["attachment"]["data"], validate=True)


def build_transaction_bundle(
    documents: Iterable[Mapping[str, Any]], *, conditional: bool = True
) -> dict[str, Any]:
    """A ``transaction`` Bundle that creates each document; with ``conditional``, each entry has
    ``ifNoneExist`` on its first identifier so replaying the Bundle creates nothing twice.
    Documents that already have an ``id`` become updates (``PUT Type/id``)."""
    entries: list[dict[str, Any]] = []
    for doc in documents:
        doc = dict(doc)
        rtype = doc["resourceType"]
        ident = (doc.get("identifier") or [None])[0]
        if doc.get("id"):
            full_url = f"{rtype}/{doc['id']}"
            request: dict[str, Any] = {"method": "PUT", "url": f"{rtype}/{doc['id']}"}
            version = (doc.get("meta") or {}).get("versionId")
            if version:
                request["ifMatch"] = f'W/"{version}"'
        else:
            seed = f"{ident['system']}|{ident['value']}" if ident else repr(sorted(doc.items()))
            full_url = f"urn:uuid:{uuid.uuid5(_IDENTIFIER_NAMESPACE, seed)}"
            request = {"method": "POST", "url": rtype}
            if conditional and ident:
                request["ifNoneExist"] = identifier_search(ident)
        entries.append({"fullUrl": full_url, "resource": doc, "request": request})
    if not entries:
        raise ValueError("a transaction Bundle needs at least one entry")
    return _dump(
        Bundle.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    )
