"""Which Patient and Encounter in the EHR a note belongs to.

An encounter is started with a patient reference. It is used as given when it already is one
(``Patient/123``, an absolute URL); otherwise it names the patient by identifier and is looked
up: ``mrn:12345`` (system from ``fhir.patient_identifier_system``), ``identifier=system|value``
or ``system|value``. The EHR encounter is used as given (``Encounter/456``), looked up by
identifier, or searched among the patient's encounters on the visit's date.

Exactly one match is required: none or several is a ``ResolutionError`` (parked, not retried)
whose message says what to fix and never repeats the identifier itself (it is PHI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from scribe.fhir.errors import ResolutionError

_REF = re.compile(r"^(?:https?://\S+/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/\S+)?$")


@dataclass(frozen=True)
class RefSpec:
    """A parsed patient/encounter designation: a direct reference, or an identifier to search."""

    kind: str  # "reference" | "identifier"
    reference: str | None = None
    system: str | None = None
    value: str | None = None

    def search_token(self) -> str:
        """``identifier=`` query part (system optional), escaped and URL-encoded."""
        def esc(s: str) -> str:
            return re.sub(r"([\\|,$])", r"\\\1", s)

        token = f"{esc(self.system)}|{esc(self.value or '')}" if self.system else esc(self.value or "")
        return "identifier=" + quote(token, safe=":/|")


def parse_ref(text: str, rtype: str, *, mrn_system: str | None = None) -> RefSpec:
    """Parse ``Patient/123``, ``mrn:123``, ``identifier=sys|val``, ``sys|val`` (for ``rtype``)."""
    text = (text or "").strip()
    if not text:
        raise ResolutionError(f"no {rtype} was given at encounter start")
    m = _REF.match(text)
    if m:
        if m["type"] != rtype:
            raise ResolutionError(f"the {rtype.lower()} reference given at encounter start points at a {m['type']}")
        return RefSpec("reference", reference=text)
    text = text.removeprefix("identifier=")
    if text.lower().startswith("mrn:") and "|" not in text:
        return RefSpec("identifier", system=mrn_system, value=text[4:].strip())
    if "|" in text:
        system, _, value = text.rpartition("|")
        return RefSpec("identifier", system=system or None, value=value)
    if re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", text):
        return RefSpec("reference", reference=f"{rtype}/{text}")
    raise ResolutionError(
        f"the {rtype.lower()} given at encounter start is neither a reference ({rtype}/123) nor an identifier "
        "(mrn:…, system|value)"
    )


def _ref_of(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


async def resolve_patient(client: Any, given: str, *, mrn_system: str | None = None) -> str:
    spec = parse_ref(given, "Patient", mrn_system=mrn_system)
    if spec.kind == "reference":
        assert spec.reference
        return spec.reference
    found = await client.search("Patient", spec.search_token())
    if not found:
        raise ResolutionError(
            "no Patient in the EHR has the identifier given at encounter start"
            + (f" (system {spec.system})" if spec.system else "")
            + "; check the MRN, or start the encounter with the Patient id"
        )
    if len(found) > 1:
        raise ResolutionError(
            f"{len(found)} Patients in the EHR share the identifier given at encounter start; "
            "start the encounter with the Patient id (Patient/…) instead"
        )
    return _ref_of(found[0])


def _parse_dt(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _covers(encounter: dict[str, Any], when: datetime) -> bool:
    """The encounter's period contains ``when`` (an open or date-only period: the same day)."""
    period = encounter.get("period") or {}
    start, end = _parse_dt(period.get("start")), _parse_dt(period.get("end"))
    if start is None:
        return False
    if end is None:
        end = start.replace(hour=23, minute=59, second=59) if len(period.get("start", "")) <= 10 else start + timedelta(hours=24)
    return start - timedelta(hours=1) <= when <= end + timedelta(hours=1)


async def resolve_encounter(client: Any, patient: str, given: str | None, *, when: datetime) -> str:
    """The EHR Encounter: as given, by identifier, or the patient's one encounter covering ``when``."""
    if given:
        spec = parse_ref(given, "Encounter")
        if spec.kind == "reference":
            assert spec.reference
            return spec.reference
        found = await client.search("Encounter", spec.search_token())
        what = "the encounter identifier given at encounter start"
    else:
        candidates = await client.search("Encounter", f"patient={quote(patient, safe='/')}&_count=100")
        found = [e for e in candidates if _covers(e, when)]
        what = "the visit's date for this patient"
    if not found:
        raise ResolutionError(
            f"no Encounter in the EHR matches {what}; register the visit in the EHR or start the encounter "
            "with the EHR's Encounter id"
        )
    if len(found) > 1:
        raise ResolutionError(
            f"{len(found)} Encounters in the EHR match {what}; start the encounter with the EHR's Encounter id"
        )
    return _ref_of(found[0])
