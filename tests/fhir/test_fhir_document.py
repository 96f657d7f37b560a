"""The FHIR document builder (scribe.fhir.document) and note renderer (scribe.fhir.render).

Unit tests check every US Core element the builder writes; the last group POSTs built documents
to the real local FHIR server (tests/fhir_server) and reads them back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B.documentreference import DocumentReference
from pydantic import ValidationError

from scribe.fhir import (
    AttachmentFormat,
    DocumentContext,
    attachment_bytes,
    build_document_reference,
    build_transaction_bundle,
    entered_in_error,
    identifier_search,
    note_identifier,
    render_note,
    supersede,
)
from scribe.fhir.render import render_markdown, render_plain
from scribe.models import (
    Consent,
    Encounter,
    Flag,
    FlagKind,
    Note,
    Section,
    Sentence,
    SignedNote,
)

try:
    from tests.fhir_server.harness import FhirServer, run_fhir_server
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from fhir_server.harness import FhirServer, run_fhir_server

T0 = datetime(2024, 5, 1, 14, 0, tzinfo=timezone.utc)
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"


def make_note(**overrides: Any) -> Note:
    fields: dict[str, Any] = dict(
        encounter_id="enc-0001",
        sections=[
            Section(
                key="subjective",
                title="Subjective",
                sentences=[
                    Sentence(id="s1", text="Patient reports a dry cough for 3 days."),
                    Sentence(id="s2", text="Denies fever; took ibuprofen 400 mg — “helped a bit”."),
                ],
            ),
            Section(key="objective", title="Objective", sentences=[]),
            Section(
                key="assessment",
                title="Assessment",
                sentences=[
                    Sentence(id="s3", text="Likely viral bronchitis (café-au-lait spots noted).")
                ],
            ),
            Section(
                key="plan",
                title="Plan",
                sentences=[Sentence(id="s4", text="Fluids and rest; return if worse.")],
            ),
        ],
        created_at=T0,
    )
    fields.update(overrides)
    return Note(**fields)


def make_signed(version: int = 1, replaces: str | None = None, **note_overrides: Any) -> SignedNote:
    return SignedNote(
        note=make_note(**note_overrides),
        signed_by="clin-7",
        signed_at=T0 + timedelta(minutes=30 + version),
        version=version,
        replaces=replaces,
    )


def make_ctx(**overrides: Any) -> DocumentContext:
    fields: dict[str, Any] = dict(
        patient="Patient/p1",
        encounter="Encounter/e1",
        practitioner="Practitioner/dr1",
        period_start=T0 - timedelta(minutes=20),
        period_end=T0 + timedelta(minutes=5),
    )
    fields.update(overrides)
    return DocumentContext(**fields)


def parse_instant(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- US Core elements


def test_is_an_r4_document_reference() -> None:
    doc = build_document_reference(make_signed(), make_ctx())
    assert doc["resourceType"] == "DocumentReference"
    DocumentReference.model_validate(doc)  # R4B model (R4-compatible) accepts it
    assert doc["meta"]["profile"] == [
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference"
    ]
    json.dumps(doc)  # JSON-ready
    assert "id" not in doc  # the server assigns it
    assert build_document_reference(make_signed(), make_ctx(profile=None)).get("meta") is None


def test_identifier_is_stable_and_per_version() -> None:
    ctx = make_ctx(identifier_system="https://ehr.example.org/sid/scribe-note")
    a = build_document_reference(make_signed(), ctx)["identifier"]
    b = build_document_reference(make_signed(), ctx)["identifier"]
    v2 = build_document_reference(make_signed(version=2), ctx)["identifier"]
    other_enc = build_document_reference(make_signed(encounter_id="enc-0002"), ctx)["identifier"]
    assert a == b == [note_identifier("enc-0001", 1, "https://ehr.example.org/sid/scribe-note")]
    assert a[0]["system"] == "https://ehr.example.org/sid/scribe-note"
    assert v2 != a and other_enc != a
    # independent of everything but encounter id and version
    edited = build_document_reference(make_signed(title="Other title"), ctx)["identifier"]
    assert edited == a
    assert (
        build_document_reference(make_signed(), make_ctx())["identifier"][0]["system"]
        == "urn:scribe:note"
    )


def test_identifier_derivation_is_pinned() -> None:
    """Changing the derivation would re-identify every note already delivered to an EHR."""
    import uuid

    ns = uuid.uuid5(uuid.NAMESPACE_URL, "urn:scribe:note")
    assert note_identifier("enc-0001", 1)["value"] == str(uuid.uuid5(ns, "enc-0001\nv1"))
    assert note_identifier("enc-0001", "draft")["value"] == str(uuid.uuid5(ns, "enc-0001\ndraft"))


def test_identifier_search_escapes() -> None:
    assert (
        identifier_search({"system": "urn:scribe:note", "value": "abc"})
        == "identifier=urn:scribe:note|abc"
    )
    # FHIR token escaping (\\ | , $ get a backslash), then URL encoding
    escaped = identifier_search({"system": "urn:x", "value": "a|b,c$d\\e f"})
    assert escaped == "identifier=urn:x|a%5C|b%5C%2Cc%5C%24d%5C%5Ce%20f"


def test_status_and_doc_status() -> None:
    v1 = build_document_reference(make_signed(), make_ctx())
    assert v1["status"] == "current" and v1["docStatus"] == "final"
    v2 = build_document_reference(make_signed(version=2), make_ctx())
    assert v2["status"] == "current" and v2["docStatus"] == "amended"
    pre = build_document_reference(make_signed(), make_ctx(), doc_status="preliminary")
    assert pre["docStatus"] == "preliminary"
    draft = build_document_reference(make_note(), make_ctx())
    assert draft["docStatus"] == "preliminary" and draft["status"] == "current"
    assert "authenticator" not in draft
    assert draft["identifier"] == [note_identifier("enc-0001", "draft")]
    with pytest.raises(ValueError, match="unsigned"):
        build_document_reference(make_note(), make_ctx(), doc_status="final")


@pytest.mark.parametrize(
    ("note_fields", "code", "display"),
    [
        ({}, "11506-3", "Progress note"),  # SOAP default
        ({"template": "soap", "loinc": "11506-3"}, "11506-3", "Progress note"),
        (
            {"template": "hp", "loinc": "34117-2", "title": "H&P"},
            "34117-2",
            "History and physical note",
        ),
        ({"template": "consult", "loinc": "11488-4"}, "11488-4", "Consult note"),
        ({"template": "consult", "loinc": ""}, "11488-4", "Consult note"),  # from the template
        ({"template": "hp", "loinc": ""}, "34117-2", "History and physical note"),
    ],
)
def test_type_is_loinc(note_fields: dict[str, Any], code: str, display: str) -> None:
    doc = build_document_reference(make_signed(**note_fields), make_ctx())
    assert doc["type"]["coding"] == [
        {"system": "http://loinc.org", "code": code, "display": display}
    ]
    assert doc["type"]["text"] == display


def test_category_clinical_note() -> None:
    doc = build_document_reference(make_signed(), make_ctx())
    assert doc["category"] == [
        {
            "coding": [
                {"system": US_CORE_CATEGORY, "code": "clinical-note", "display": "Clinical Note"}
            ]
        }
    ]


def test_subject_encounter_period() -> None:
    doc = build_document_reference(make_signed(), make_ctx())
    assert doc["subject"] == {"reference": "Patient/p1"}
    assert doc["context"]["encounter"] == [{"reference": "Encounter/e1"}]
    period = doc["context"]["period"]
    assert parse_instant(period["start"]) == T0 - timedelta(minutes=20)
    assert parse_instant(period["end"]) == T0 + timedelta(minutes=5)
    open_ended = build_document_reference(make_signed(), make_ctx(period_end=None))
    assert "end" not in open_ended["context"]["period"]


def test_references_are_normalised_and_checked() -> None:
    ctx = make_ctx(patient="p1", encounter="e1", practitioner="dr1", custodian="org1")
    assert (ctx.patient, ctx.encounter, ctx.practitioner, ctx.custodian) == (
        "Patient/p1",
        "Encounter/e1",
        "Practitioner/dr1",
        "Organization/org1",
    )
    assert make_ctx(patient="https://ehr.example.org/fhir/Patient/p1").patient.endswith(
        "/Patient/p1"
    )
    assert make_ctx(practitioner="PractitionerRole/r1").practitioner == "PractitionerRole/r1"
    for bad in (
        {"patient": "Practitioner/dr1"},
        {"encounter": "EpisodeOfCare/x"},
        {"practitioner": "Patient/p1"},
        {"custodian": "Practitioner/dr1"},
        {"patient": "Patient/"},
        {"patient": ""},
        {"identifier_system": ""},
        {"period_end": T0 - timedelta(hours=2)},
        {"period_start": datetime(2024, 5, 1, 14, 0)},  # naive
        {"extra_field": 1},
    ):
        with pytest.raises(ValidationError):
            make_ctx(**bad)


def test_author_authenticator_date_custodian() -> None:
    signed = make_signed()
    doc = build_document_reference(signed, make_ctx())
    assert doc["author"] == [{"reference": "Practitioner/dr1"}]
    assert doc["authenticator"] == {"reference": "Practitioner/dr1"}
    assert parse_instant(doc["date"]) == signed.signed_at
    assert "custodian" not in doc
    doc = build_document_reference(
        signed, make_ctx(authenticator="Practitioner/dr2", custodian="Organization/o1")
    )
    assert doc["authenticator"] == {"reference": "Practitioner/dr2"}
    assert doc["custodian"] == {"reference": "Organization/o1"}


def test_attachment_plain_text_default() -> None:
    signed = make_signed()
    doc = build_document_reference(signed, make_ctx())
    content = doc["content"]
    assert len(content) == 1
    att = content[0]["attachment"]
    expected = render_note(signed.note).encode("utf-8")
    assert att["contentType"] == "text/plain; charset=utf-8"
    assert base64.b64decode(att["data"]) == expected == attachment_bytes(doc)
    assert att["size"] == len(expected)
    assert att["hash"] == base64.b64encode(hashlib.sha1(expected).digest()).decode()
    assert att["title"] == "SOAP note"
    assert att["language"] == "en"
    assert parse_instant(att["creation"]) == signed.signed_at
    assert content[0]["format"]["code"] == "urn:ihe:iti:xds:2017:mimeTypeSufficient"


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("plain", "text/plain; charset=utf-8"),
        ("markdown", "text/markdown; charset=utf-8"),
        (AttachmentFormat.markdown, "text/markdown; charset=utf-8"),
        ("xhtml", "text/html; charset=utf-8"),
        ("text/html; charset=utf-8", "text/html; charset=utf-8"),
    ],
)
def test_attachment_formats(fmt: Any, content_type: str) -> None:
    doc = build_document_reference(make_signed(), make_ctx(attachment_format=fmt))
    att = doc["content"][0]["attachment"]
    assert att["contentType"] == content_type
    data = attachment_bytes(doc)
    assert att["size"] == len(data)
    assert att["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()
    text = data.decode("utf-8")
    if content_type.startswith("text/html"):
        root = ET.fromstring(text)  # well-formed XHTML
        assert root.tag == "{http://www.w3.org/1999/xhtml}html"
        assert "café-au-lait" in "".join(root.itertext())
    elif content_type.startswith("text/markdown"):
        assert text.startswith("# SOAP note\n") and "## Subjective" in text


def test_language_from_encounter_and_optional() -> None:
    enc = Encounter(
        id="enc-0001",
        clinician_id="dr1",
        patient_ref="Patient/p1",
        consent=Consent(given=True),
        language="es",
        created_at=T0,
    )
    ctx = DocumentContext.from_encounter(
        enc, ehr_encounter="Encounter/e9", custodian="Organization/o1"
    )
    assert (ctx.patient, ctx.encounter, ctx.practitioner, ctx.period_start, ctx.language) == (
        "Patient/p1",
        "Encounter/e9",
        "Practitioner/dr1",
        T0,
        "es",
    )
    doc = build_document_reference(make_signed(), ctx)
    assert doc["content"][0]["attachment"]["language"] == "es"
    doc = build_document_reference(make_signed(), make_ctx(language=None))
    assert "language" not in doc["content"][0]["attachment"]


def test_relates_to_for_amendments() -> None:
    assert "relatesTo" not in build_document_reference(make_signed(), make_ctx())
    explicit = build_document_reference(
        make_signed(version=2), make_ctx(), replaces="DocumentReference/old1"
    )
    assert explicit["relatesTo"] == [
        {"code": "replaces", "target": {"reference": "DocumentReference/old1"}}
    ]
    from_model = build_document_reference(make_signed(version=2, replaces="old1"), make_ctx())
    assert from_model["relatesTo"][0]["target"] == {"reference": "DocumentReference/old1"}
    logical = build_document_reference(
        make_signed(version=3), make_ctx(identifier_system="urn:sys")
    )
    assert logical["relatesTo"] == [
        {
            "code": "replaces",
            "target": {
                "type": "DocumentReference",
                "identifier": note_identifier("enc-0001", 2, "urn:sys"),
            },
        }
    ]
    with pytest.raises(ValueError):
        build_document_reference(make_signed(version=2), make_ctx(), replaces="Patient/p1")


def test_entered_in_error_and_supersede_change_only_status() -> None:
    doc = {
        **build_document_reference(make_signed(), make_ctx()),
        "id": "x1",
        "meta": {"versionId": "v1"},
    }
    retracted = entered_in_error(doc)
    assert retracted["status"] == "entered-in-error"
    assert {k: v for k, v in retracted.items() if k != "status"} == {
        k: v for k, v in doc.items() if k != "status"
    }
    assert doc["status"] == "current"  # input untouched
    assert supersede(doc)["status"] == "superseded"
    with pytest.raises(ValueError):
        entered_in_error({"resourceType": "Patient"})


def test_deterministic_output() -> None:
    a = json.dumps(build_document_reference(make_signed(), make_ctx()), sort_keys=False)
    b = json.dumps(build_document_reference(make_signed(), make_ctx()), sort_keys=False)
    assert a == b


def test_transaction_bundle() -> None:
    d1 = build_document_reference(make_signed(), make_ctx())
    bundle = build_transaction_bundle([d1])
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    entry = bundle["entry"][0]
    assert entry["fullUrl"].startswith("urn:uuid:")
    assert entry["request"] == {
        "method": "POST",
        "url": "DocumentReference",
        "ifNoneExist": identifier_search(d1["identifier"][0]),
    }
    assert entry["resource"] == d1
    assert build_transaction_bundle([d1]) == bundle  # stable fullUrl
    update = build_transaction_bundle(
        [supersede({**d1, "id": "x1", "meta": {"versionId": "7"}})], conditional=False
    )
    assert update["entry"][0]["request"] == {
        "method": "PUT",
        "url": "DocumentReference/x1",
        "ifMatch": 'W/"7"',
    }
    with pytest.raises(ValueError):
        build_transaction_bundle([])


# --------------------------------------------------------------------------- renderer


def test_render_plain_layout() -> None:
    text = render_plain(make_note())
    assert text == (
        "SOAP note\n\n"
        "Subjective\nPatient reports a dry cough for 3 days. "
        "Denies fever; took ibuprofen 400 mg — “helped a bit”.\n\n"
        "Assessment\nLikely viral bronchitis (café-au-lait spots noted).\n\n"
        "Plan\nFluids and rest; return if worse.\n"
    )


def test_render_normalises_and_skips_deleted() -> None:
    decomposed = "cafe\u0301  au\tlait\x07"
    deleted = Flag(
        kind=FlagKind.no_evidence, message="no evidence", resolved=True, resolution="deleted"
    )
    note = make_note(
        sections=[
            Section(
                key="s",
                title=" Subjective ",
                sentences=[
                    Sentence(id="a", text=decomposed),
                    Sentence(id="b", text="Invented vitals.", flags=[deleted]),
                    Sentence(id="c", text="   "),
                ],
            )
        ]
    )
    text = render_plain(note)
    assert text == "SOAP note\n\nSubjective\ncafé au lait\n"
    assert "\u0301" not in text  # NFC


def test_render_markdown_escapes() -> None:
    note = make_note(
        sections=[
            Section(
                key="p",
                title="Plan #1",
                sentences=[Sentence(id="a", text="1. take *2* tabs_daily <b>")],
            )
        ]
    )
    md = render_markdown(note)
    assert md == "# SOAP note\n\n## Plan \\#1\n\n1\\. take \\*2\\* tabs\\_daily \\<b\\>\n"


# ------------------------------------------------------------------------ against the real server


@pytest.fixture(scope="module")
def server() -> Iterator[FhirServer]:
    with run_fhir_server() as srv:
        yield srv


def _http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    hdrs = {
        "Accept": "application/fhir+json",
        "Content-Type": "application/fhir+json",
        **(headers or {}),
    }
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return (
                r.status,
                {k.lower(): v for k, v in r.headers.items()},
                json.loads(raw) if raw else None,
            )
    except urllib.error.HTTPError as e:
        raw = e.read()
        return (
            e.code,
            {k.lower(): v for k, v in e.headers.items()},
            json.loads(raw) if raw else None,
        )


@pytest.fixture
def ehr(server: FhirServer) -> dict[str, str]:
    """An empty server with one Patient, Practitioner, Organization and Encounter."""
    server.reset()
    base = server.base_url

    def create(resource: dict[str, Any]) -> str:
        status, _, body = _http("POST", f"{base}/{resource['resourceType']}", resource)
        assert status == 201, body
        return f"{resource['resourceType']}/{body['id']}"

    patient = create(
        {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "MRN-42"}]}
    )
    return {
        "base": base,
        "patient": patient,
        "practitioner": create({"resourceType": "Practitioner", "name": [{"family": "Doe"}]}),
        "org": create({"resourceType": "Organization", "name": "Clinic"}),
        "encounter": create(
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": {"reference": patient},
            }
        ),
    }


def _ctx(ehr: dict[str, str], **kw: Any) -> DocumentContext:
    return make_ctx(
        patient=ehr["patient"],
        encounter=ehr["encounter"],
        practitioner=ehr["practitioner"],
        custodian=ehr["org"],
        **kw,
    )


def _search(ehr: dict[str, str], query: str) -> list[dict[str, Any]]:
    status, _, bundle = _http("GET", f"{ehr['base']}/DocumentReference?{query}")
    assert status == 200, bundle
    return [e["resource"] for e in bundle.get("entry", [])]


@pytest.mark.parametrize("fmt", ["plain", "markdown", "xhtml"])
def test_server_accepts_and_returns_identical_text(ehr: dict[str, str], fmt: str) -> None:
    signed = make_signed()
    doc = build_document_reference(signed, _ctx(ehr, attachment_format=fmt))
    status, headers, created = _http("POST", f"{ehr['base']}/DocumentReference", doc)
    assert status == 201, created
    assert headers["location"].startswith(f"{ehr['base']}/DocumentReference/{created['id']}")

    status, _, read = _http("GET", f"{ehr['base']}/DocumentReference/{created['id']}")
    assert status == 200
    data = attachment_bytes(read)
    assert data == render_note(signed.note, AttachmentFormat[fmt].text_format).encode("utf-8")
    assert (
        read["content"][0]["attachment"]["hash"]
        == base64.b64encode(hashlib.sha1(data).digest()).decode()
    )

    pid, eid = ehr["patient"].split("/")[1], ehr["encounter"]
    assert [d["id"] for d in _search(ehr, f"patient={pid}")] == [created["id"]]
    assert [d["id"] for d in _search(ehr, f"encounter={eid}")] == [created["id"]]
    assert [d["id"] for d in _search(ehr, identifier_search(doc["identifier"][0]))] == [
        created["id"]
    ]
    assert [d["id"] for d in _search(ehr, f"patient={pid}&type=http://loinc.org|11506-3")] == [
        created["id"]
    ]


def test_server_conditional_create_is_idempotent(ehr: dict[str, str]) -> None:
    doc = build_document_reference(make_signed(), _ctx(ehr))
    hdr = {"If-None-Exist": identifier_search(doc["identifier"][0])}
    s1, _, a = _http("POST", f"{ehr['base']}/DocumentReference", doc, hdr)
    again = build_document_reference(make_signed(), _ctx(ehr))  # rebuilt, e.g. after a restart
    s2, _, b = _http("POST", f"{ehr['base']}/DocumentReference", again, hdr)
    assert (s1, s2) == (201, 200) and a["id"] == b["id"]
    assert len(_search(ehr, f"patient={ehr['patient']}")) == 1


def test_server_amendment_chain(ehr: dict[str, str]) -> None:
    base = f"{ehr['base']}/DocumentReference"
    _, _, v1 = _http("POST", base, build_document_reference(make_signed(), _ctx(ehr)))

    amended = make_signed(
        version=2,
        sections=[
            Section(key="plan", title="Plan", sentences=[Sentence(id="x", text="Amended plan.")])
        ],
    )
    doc2 = build_document_reference(amended, _ctx(ehr), replaces=f"DocumentReference/{v1['id']}")
    status, _, v2 = _http("POST", base, doc2)
    assert status == 201, v2
    assert v2["docStatus"] == "amended"
    assert v2["relatesTo"] == [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{v1['id']}"}}
    ]

    # the old version becomes superseded (optimistic locking with its ETag)
    status, _, old = _http(
        "PUT", f"{base}/{v1['id']}", supersede(v1), {"If-Match": f'W/"{v1["meta"]["versionId"]}"'}
    )
    assert status == 200 and old["status"] == "superseded"

    # a third version that only knows the previous version's identifier (logical reference)
    status, _, v3 = _http("POST", base, build_document_reference(make_signed(version=3), _ctx(ehr)))
    assert status == 201, v3
    assert v3["relatesTo"][0]["target"]["identifier"] == doc2["identifier"][0]

    current = _search(ehr, f"patient={ehr['patient']}&status=current")
    assert {d["id"] for d in current} == {v2["id"], v3["id"]}
    assert attachment_bytes(v2).decode().endswith("Plan\nAmended plan.\n")


def test_server_entered_in_error(ehr: dict[str, str]) -> None:
    base = f"{ehr['base']}/DocumentReference"
    _, _, created = _http("POST", base, build_document_reference(make_signed(), _ctx(ehr)))
    status, _, retracted = _http(
        "PUT",
        f"{base}/{created['id']}",
        entered_in_error(created),
        {"If-Match": f'W/"{created["meta"]["versionId"]}"'},
    )
    assert status == 200 and retracted["status"] == "entered-in-error"
    _, _, read = _http("GET", f"{base}/{created['id']}")
    assert read["status"] == "entered-in-error"
    assert attachment_bytes(read) == attachment_bytes(created)


def test_server_accepts_preliminary_draft(ehr: dict[str, str]) -> None:
    status, _, body = _http(
        "POST", f"{ehr['base']}/DocumentReference", build_document_reference(make_note(), _ctx(ehr))
    )
    assert status == 201 and body["docStatus"] == "preliminary"


def test_server_transaction_bundle_replay_creates_nothing_twice(ehr: dict[str, str]) -> None:
    docs = [
        build_document_reference(make_signed(), _ctx(ehr)),
        build_document_reference(make_signed(encounter_id="enc-2"), _ctx(ehr)),
    ]
    bundle = build_transaction_bundle(docs)
    status, _, resp = _http("POST", ehr["base"], bundle)
    assert status == 200, resp
    assert [e["response"]["status"][:3] for e in resp["entry"]] == ["201", "201"]
    status, _, resp = _http("POST", ehr["base"], bundle)
    assert status == 200
    assert [e["response"]["status"][:3] for e in resp["entry"]] == ["200", "200"]
    assert len(_search(ehr, f"patient={ehr['patient']}")) == 2


def test_server_rejects_what_the_builder_must_never_produce(ehr: dict[str, str]) -> None:
    """Guard: the builder's output passes, and tampering with it is caught by the server."""
    doc = build_document_reference(make_signed(), _ctx(ehr))
    for key, value in (
        ("status", "final"),
        ("docStatus", "signed"),
        ("subject", {"reference": ehr["practitioner"]}),
    ):
        status, _, oo = _http("POST", f"{ehr['base']}/DocumentReference", {**doc, key: value})
        assert status == 400 and oo["resourceType"] == "OperationOutcome"
