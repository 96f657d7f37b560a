"""Where signed notes go: one ``DeliveryTarget`` protocol, two implementations.

- ``DirectoryTarget`` (the embedded default when no EHR is configured): each delivered version
  becomes ``<out_dir>/<encounter>/note-v<N>.DocumentReference.json`` (plus, optionally, a
  transaction Bundle that loads it into any FHIR server). Writes are atomic (temp file, fsync,
  rename), so a crash leaves the old file or the new one, never half of one.
- ``FhirTarget``: a FHIR R4 REST endpoint. Resolves patient and encounter, POSTs the
  DocumentReference with ``If-None-Exist``, and — because some EHRs ignore conditional create —
  searches by the note's identifier before any POST that might repeat an earlier one (the
  outbox's write ledger says when). Amendments mark the replaced document ``superseded``;
  retractions mark it ``entered-in-error`` (read, then PUT with ``If-Match``).

Both build the document with the pure builder from the same ``DeliveryJob``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from scribe.fhir.document import (
    DEFAULT_IDENTIFIER_SYSTEM,
    US_CORE_DOCUMENTREFERENCE_PROFILE,
    AttachmentFormat,
    DocumentContext,
    build_document_reference,
    build_transaction_bundle,
    entered_in_error,
    identifier_search,
    note_identifier,
    supersede,
)
from scribe.fhir.errors import DeliveryError, FhirConflict, FhirError
from scribe.models import SignedNote

if TYPE_CHECKING:
    from scribe.config import Settings

log = logging.getLogger(__name__)

SCRIBE_ENCOUNTER_SYSTEM = "urn:scribe:encounter"
_FORMATS = {"text": AttachmentFormat.plain, "markdown": AttachmentFormat.markdown, "xhtml": AttachmentFormat.xhtml}


class DeliveryContext(BaseModel):
    """Who and which visit a signed note is about, as known at signing (snapshotted with it).

    ``patient``: ``Patient/123`` or an identifier (``mrn:123``, ``system|value``);
    ``encounter``: the EHR's ``Encounter/…`` or identifier, None to search by date.
    """

    model_config = ConfigDict(extra="forbid")

    patient: str
    encounter: str | None = None
    practitioner: str
    period_start: datetime
    period_end: datetime | None = None
    language: str | None = "en"


class DocumentOptions(BaseModel):
    """Site choices for the document (from ``Settings.fhir``)."""

    model_config = ConfigDict(extra="forbid")

    identifier_system: str = DEFAULT_IDENTIFIER_SYSTEM
    attachment_format: Literal["text", "markdown", "xhtml"] = "text"
    doc_status: Literal["final", "preliminary"] = "final"
    custodian: str | None = None
    us_core_profile: bool = True
    patient_identifier_system: str | None = None

    @classmethod
    def from_settings(cls, fhir: Any) -> DocumentOptions:
        return cls(
            identifier_system=fhir.identifier_system,
            attachment_format=fhir.attachment_format,
            doc_status=fhir.doc_status,
            custodian=fhir.custodian,
            us_core_profile=fhir.us_core_profile,
            patient_identifier_system=fhir.patient_identifier_system,
        )


Ledger = Callable[[str, str | None], Awaitable[None]]


async def _no_ledger(event: str, detail: str | None) -> None:
    return None


@dataclass
class DeliveryJob:
    """Everything a target needs for one delivery row."""

    delivery_id: str
    action: Literal["create", "retract"]
    signed: SignedNote
    context: DeliveryContext
    replaced_resource_id: str | None = None
    """This target's id of the version this one amends (None: not delivered there / not an amendment)."""
    replaced_version: int | None = None
    resource_id: str | None = None
    """For ``retract``: this target's id of the version being retracted, when known."""
    attempted_before: bool = False
    """The ledger shows a write that may have reached the target (crash or lost answer)."""
    ledger: Ledger = field(default=_no_ledger)


@dataclass
class DeliveryResult:
    resource_id: str | None
    location: str | None = None
    detail: str | None = None


@runtime_checkable
class DeliveryTarget(Protocol):
    name: str

    async def deliver(self, job: DeliveryJob) -> DeliveryResult: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- building


def build_for_job(
    job: DeliveryJob, options: DocumentOptions, *, patient: str, encounter: str, replaces: Any = None
) -> dict[str, Any]:
    """The DocumentReference for ``job`` with resolved references (pure)."""
    ctx = DocumentContext(
        patient=patient,
        encounter=encounter,
        practitioner=job.context.practitioner,
        authenticator=None,
        period_start=job.context.period_start,
        period_end=job.context.period_end,
        custodian=options.custodian,
        identifier_system=options.identifier_system,
        attachment_format=_FORMATS[options.attachment_format],
        language=job.context.language,
        profile=US_CORE_DOCUMENTREFERENCE_PROFILE if options.us_core_profile else None,
    )
    # SignedNote.replaces holds scribe's signature id, not a FHIR reference: pass the target's own.
    signed = job.signed.model_copy(update={"replaces": None})
    is_amendment = job.signed.replaces is not None
    doc_status = "amended" if is_amendment else options.doc_status
    if replaces is None and is_amendment and job.replaced_version is not None:
        replaces = {
            "type": "DocumentReference",
            "identifier": note_identifier(job.signed.note.encounter_id, job.replaced_version, options.identifier_system),
        }
    doc = build_document_reference(signed, ctx, doc_status=doc_status, replaces=replaces)
    if not is_amendment:
        doc.pop("relatesTo", None)  # a new version after a retraction replaces nothing
    return doc


def _logical_ref(given: str | None, rtype: str, *, mrn_system: str | None, fallback: dict[str, str]) -> dict[str, Any]:
    """A Reference for a file: the reference as given, else a logical (identifier) reference."""
    from scribe.fhir.resolve import parse_ref

    if given:
        try:
            spec = parse_ref(given, rtype, mrn_system=mrn_system)
        except DeliveryError:
            spec = None
        if spec is not None and spec.kind == "reference":
            return {"reference": spec.reference}
        if spec is not None:
            ident = {"value": spec.value}
            if spec.system:
                ident = {"system": spec.system, "value": spec.value}
            return {"type": rtype, "identifier": ident}
    return {"type": rtype, "identifier": fallback}


def document_for_file(job: DeliveryJob, options: DocumentOptions) -> dict[str, Any]:
    """The document as a file keeps it: references as given at encounter start (no EHR to ask)."""
    doc = build_for_job(job, options, patient="Patient/unresolved", encounter="Encounter/unresolved")
    eid = job.signed.note.encounter_id
    doc["subject"] = _logical_ref(
        job.context.patient, "Patient", mrn_system=options.patient_identifier_system,
        fallback={"system": "urn:scribe:patient", "value": "unknown"},
    )
    doc["context"]["encounter"] = [
        _logical_ref(job.context.encounter, "Encounter", mrn_system=None,
                     fallback={"system": SCRIBE_ENCOUNTER_SYSTEM, "value": eid})
    ]
    doc["id"] = doc["identifier"][0]["value"]
    return doc


# --------------------------------------------------------------------------- directory


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a reader (or a crash) sees the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with_suppress_unlink(tmp)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def with_suppress_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


_NAME_LIMIT = 160
"""Longest folder name written; longer escaped ids end in a hash (NAME_MAX is 255 bytes)."""
OWNER_FILE = ".encounter"


def encounter_dir_name(encounter_id: str) -> str:
    """The folder name of an encounter's files: injective, and never a path component of its own.

    Every byte outside ``a-z 0-9 -`` is percent-escaped (upper case letters too, as ``%41``…, so
    two ids that differ only in case never meet on a case-insensitive filesystem; ``.`` too, so
    no name is ``.`` or ``..`` and none is hidden). Percent-escaping is reversible, hence
    injective: ``visit:42`` and ``visit_42`` get different folders. A name that would be too
    long keeps a readable prefix and ends in ``+`` and the sha256 of the id (``+`` never
    appears in an escaped name, so hashed and plain names cannot meet either)."""
    name = "".join(
        ch if ("a" <= ch <= "z" or "0" <= ch <= "9" or ch == "-") else "".join(f"%{b:02X}" for b in ch.encode())
        for ch in encounter_id
    ) or "%00"
    if len(name) > _NAME_LIMIT:
        digest = hashlib.sha256(encounter_id.encode()).hexdigest()
        name = name[: _NAME_LIMIT - 65].rstrip("%0123456789ABCDEF") + "+" + digest
    return name


class FolderOwned(Exception):
    """The folder an encounter's note would go to holds another encounter's notes."""


def claim_directory(folder: Path, encounter_id: str) -> None:
    """Mark ``folder`` as ``encounter_id``'s (first write) or check that it is. Raises
    ``FolderOwned`` when the folder belongs to another encounter: a delivery never replaces
    a file another note owns, whatever the names turned out to be (older versions of scribe
    mapped ``:`` to ``_``, so ``visit:42`` and ``visit_42`` shared a folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / OWNER_FILE
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        owner = marker.read_text(encoding="utf-8")
        if owner != encounter_id:
            raise FolderOwned(f"{folder.name} holds another encounter's notes") from None
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(encounter_id)
        f.flush()
        os.fsync(f.fileno())


class DirectoryTarget:
    """FHIR JSON files in a directory: the embedded default, and an audit-friendly export."""

    def __init__(self, out_dir: Path, options: DocumentOptions | None = None, *, bundle: bool = False,
                 name: str = "directory") -> None:
        self.out_dir = Path(out_dir).expanduser()
        self.options = options or DocumentOptions()
        self.bundle = bundle
        self.name = name

    def path_for(self, encounter_id: str, version: int) -> Path:
        path = self.out_dir / encounter_dir_name(encounter_id) / f"note-v{int(version)}.DocumentReference.json"
        # by construction; checked anyway, since a path outside the target would be a breach
        if path.parent.parent != self.out_dir:
            raise ValueError("an encounter's folder must lie inside the target directory")
        return path

    def write(self, job: DeliveryJob) -> DeliveryResult:
        """Synchronous core of ``deliver`` (also what ``deliver_note_to_directory`` calls)."""
        eid, version = job.signed.note.encounter_id, job.signed.version
        path = self.path_for(eid, version)
        try:
            claim_directory(path.parent, eid)
        except FolderOwned as exc:
            raise DeliveryError(f"not written: {exc}; nothing was replaced") from None
        if job.action == "retract":
            if not path.is_file():
                return DeliveryResult(None, None, "nothing was written for this version; nothing to retract")
            doc = json.loads(path.read_text(encoding="utf-8"))
            write_json_atomic(path, entered_in_error(doc))
            return DeliveryResult(doc.get("id"), str(path), "marked entered-in-error")
        doc = document_for_file(job, self.options)
        write_json_atomic(path, doc)
        if self.bundle:
            write_json_atomic(path.with_name(f"note-v{version}.bundle.json"), build_transaction_bundle([doc]))
        if job.replaced_version is not None:
            old = self.path_for(eid, job.replaced_version)
            if old.is_file():
                previous = json.loads(old.read_text(encoding="utf-8"))
                if previous.get("status") == "current":
                    write_json_atomic(old, supersede(previous))
        return DeliveryResult(doc["id"], str(path))

    async def deliver(self, job: DeliveryJob) -> DeliveryResult:
        try:
            return await asyncio.to_thread(self.write, job)
        except OSError as exc:
            raise DeliveryError(f"cannot write to {self.out_dir}: {exc.strerror or exc}", retryable=True) from None
        except ValueError as exc:
            raise DeliveryError(f"the note cannot be turned into a FHIR document: {exc}") from None

    async def aclose(self) -> None:
        return None


def deliver_note_to_directory(
    signed: SignedNote,
    context: DeliveryContext,
    out_dir: str | Path,
    *,
    options: DocumentOptions | None = None,
    bundle: bool = True,
) -> Path:
    """Write one signed note as FHIR JSON (and a transaction Bundle) without an outbox.

    For the demo and scripts; a service should sign through ``Outbox`` so delivery is durable.
    Returns the DocumentReference file's path.
    """
    target = DirectoryTarget(Path(out_dir), options, bundle=bundle)
    job = DeliveryJob(delivery_id="direct", action="create", signed=signed, context=context)
    result = target.write(job)
    assert result.location
    return Path(result.location)


# --------------------------------------------------------------------------- FHIR REST


class FhirTarget:
    """A FHIR R4 REST endpoint (the EHR)."""

    def __init__(self, client: Any, options: DocumentOptions | None = None, *, conditional_create: bool = True,
                 name: str = "fhir") -> None:
        """One delivery attempt per ``deliver`` call: a transient failure is raised (retryable,
        with the server's ``Retry-After``) and the outbox worker decides when to try again."""
        self.client = client
        self.options = options or DocumentOptions()
        self.conditional_create = conditional_create
        self.name = name

    @classmethod
    def from_settings(cls, fhir: Any) -> FhirTarget:
        from scribe.fhir.client import FhirClient

        return cls(
            FhirClient.from_settings(fhir),
            DocumentOptions.from_settings(fhir),
            conditional_create=fhir.conditional_create,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def _location(self, rid: str) -> str:
        return str(self.client.url(f"DocumentReference/{rid}"))

    async def deliver(self, job: DeliveryJob) -> DeliveryResult:
        if job.action == "retract":
            return await self._retract(job)
        return await self._create(job)

    async def _find(self, identifier: Mapping[str, str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.client.search("DocumentReference", identifier_search(identifier))
        return found

    async def _create(self, job: DeliveryJob) -> DeliveryResult:
        from scribe.fhir.resolve import resolve_encounter, resolve_patient

        patient = await resolve_patient(self.client, job.context.patient, mrn_system=self.options.patient_identifier_system)
        encounter = await resolve_encounter(self.client, patient, job.context.encounter, when=job.context.period_start)
        await job.ledger("resolved", f"{patient} {encounter}")
        replaces = f"DocumentReference/{job.replaced_resource_id}" if job.replaced_resource_id else None
        try:
            doc = build_for_job(job, self.options, patient=patient, encounter=encounter, replaces=replaces)
        except ValueError as exc:
            raise DeliveryError(f"the note cannot be turned into a FHIR document: {exc}") from None
        ident = doc["identifier"][0]
        rid: str | None = None
        if job.attempted_before:
            # A POST may already have landed (lost answer, crash before the ledger write):
            # look before writing again, whatever the server does with If-None-Exist.
            found = await self._find(ident)
            await job.ledger("searched", f"{len(found)} match(es) by identifier")
            if found:
                rid = str(found[0]["id"])
                if len(found) > 1:
                    log.warning("delivery %s: %d DocumentReferences share one identifier", job.delivery_id, len(found))
        if rid is None:
            await job.ledger("post_started", ident["value"])
            job.attempted_before = True
            try:
                resp = await self.client.create(
                    doc, if_none_exist=identifier_search(ident) if self.conditional_create else None
                )
            except FhirError as exc:
                await job.ledger("post_failed", exc.message)
                raise
            rid = resp.resource_id()
            if rid is None:
                raise DeliveryError("the FHIR server accepted the document but returned no id", retryable=True)
            await job.ledger("post_result", f"HTTP {resp.status} DocumentReference/{rid}")
        if job.replaced_resource_id:
            await self._set_status(job.replaced_resource_id, "superseded", job)
        return DeliveryResult(rid, self._location(rid))

    async def _set_status(self, rid: str, status: str, job: DeliveryJob) -> None:
        """Read-modify-write with If-Match; a concurrent change is re-read, not overwritten."""
        for _ in range(3):
            resp = await self.client.read("DocumentReference", rid)
            current = resp.body
            if current.get("status") == status:
                return
            updated = entered_in_error(current) if status == "entered-in-error" else supersede(current)
            etag = resp.etag or (f'W/"{current["meta"]["versionId"]}"' if current.get("meta", {}).get("versionId") else None)
            try:
                await self.client.update(updated, if_match=etag)
            except FhirConflict:
                continue
            await job.ledger("status_set", f"DocumentReference/{rid} {status}")
            return
        raise DeliveryError(f"DocumentReference/{rid} kept changing while setting it {status}", retryable=True)

    async def _retract(self, job: DeliveryJob) -> DeliveryResult:
        rid = job.resource_id
        if rid is None:
            ident = note_identifier(job.signed.note.encounter_id, job.signed.version, self.options.identifier_system)
            found = await self._find(ident)
            if not found:
                return DeliveryResult(None, None, "not in the EHR; nothing to retract")
            rid = str(found[0]["id"])
        await self._set_status(rid, "entered-in-error", job)
        return DeliveryResult(rid, self._location(rid), "marked entered-in-error")


# --------------------------------------------------------------------------- settings


def configured_target_names(settings: Settings) -> tuple[str, ...]:
    """``fhir`` when an EHR is configured; ``directory`` when none is (or ``out_dir`` is set)."""
    fhir = settings.fhir
    names: list[str] = []
    if fhir.base_url:
        names.append("fhir")
    if not fhir.base_url or fhir.out_dir is not None:
        names.append("directory")
    return tuple(names)


def targets_from_settings(settings: Settings) -> dict[str, DeliveryTarget]:
    fhir = settings.fhir
    options = DocumentOptions.from_settings(fhir)
    out: dict[str, DeliveryTarget] = {}
    for name in configured_target_names(settings):
        if name == "fhir":
            out[name] = FhirTarget.from_settings(fhir)
        else:
            out[name] = DirectoryTarget(fhir.out_dir or settings.data_dir / "fhir", options, bundle=fhir.write_bundle)
    return out
