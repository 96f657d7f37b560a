"""The local FHIR test server itself (tests/fhir_server): it must behave like a strict R4 server.

Everything here talks HTTP to a real ``node server.mjs`` (Medplum's FHIR engine) on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

try:
    from tests.fhir_server.harness import FhirServer, FhirServerError, run_fhir_server
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from fhir_server.harness import FhirServer, FhirServerError, run_fhir_server

FHIR_JSON = "application/fhir+json"


# --------------------------------------------------------------------------- helpers


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def issues(self) -> list[str]:
        """'expression: text' for each OperationOutcome issue."""
        oo = self.json
        assert oo["resourceType"] == "OperationOutcome", oo
        return [
            f"{(i.get('expression') or [''])[0]}: {i.get('details', {}).get('text', '')}"
            for i in oo["issue"]
        ]


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Response:
    data = None
    hdrs = {"Accept": FHIR_JSON, **(headers or {})}
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", FHIR_JSON)
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers), e.read())


def doc_ref(**overrides: Any) -> dict[str, Any]:
    text = b"Patient reports a dry cough.\n"
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "identifier": [{"system": "urn:test:note", "value": str(uuid.uuid4())}],
        "status": "current",
        "docStatus": "final",
        "type": {
            "coding": [
                {"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                        "code": "clinical-note",
                    }
                ]
            }
        ],
        "subject": {"reference": "Patient/p1"},
        "date": "2024-05-01T14:30:00Z",
        "author": [{"reference": "Practitioner/dr1"}],
        "authenticator": {"reference": "Practitioner/dr1"},
        "custodian": {"reference": "Organization/org1"},
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text).decode(),
                }
            }
        ],
        "context": {
            "encounter": [{"reference": "Encounter/e1"}],
            "period": {"start": "2024-05-01T14:00:00Z"},
        },
    }
    doc.update(overrides)
    return doc


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[FhirServer]:
    with run_fhir_server() as srv:
        print(
            f"\nFHIR test server: start {srv.startup_seconds:.2f}s"
            + (f", npm ci {srv.install_seconds:.1f}s" if srv.install_seconds is not None else "")
        )
        yield srv


@pytest.fixture
def fhir(server: FhirServer) -> FhirServer:
    """The module's server, emptied before each test."""
    server.reset()
    return server


# --------------------------------------------------------------------------- basics


def test_ready_and_capability_statement(fhir: FhirServer) -> None:
    assert fhir.base_url == f"http://127.0.0.1:{fhir.port}/fhir/R4"
    assert fhir.startup_seconds < 30
    r = http("GET", f"{fhir.base_url}/metadata")
    assert r.status == 200
    assert r.json["resourceType"] == "CapabilityStatement"
    assert r.json["fhirVersion"] == "4.0.1"


def test_create_then_read(fhir: FhirServer) -> None:
    doc = doc_ref()
    r = http("POST", f"{fhir.base_url}/DocumentReference", doc)
    assert r.status == 201, r.body
    created = r.json
    rid, vid = created["id"], created["meta"]["versionId"]
    assert r.headers["etag"] == f'W/"{vid}"'
    assert r.headers["location"] == f"{fhir.base_url}/DocumentReference/{rid}/_history/{vid}"
    assert r.headers["content-type"].startswith(FHIR_JSON)

    got = http("GET", f"{fhir.base_url}/DocumentReference/{rid}")
    assert got.status == 200
    assert got.headers["etag"] == f'W/"{vid}"'
    for key in ("identifier", "status", "docStatus", "type", "subject", "content", "context"):
        assert got.json[key] == doc[key]

    assert http("GET", f"{fhir.base_url}/DocumentReference/does-not-exist").status == 404


def test_prefer_return_minimal(fhir: FhirServer) -> None:
    r = http("POST", f"{fhir.base_url}/DocumentReference", doc_ref(), {"Prefer": "return=minimal"})
    assert r.status == 201 and r.body == b"" and "location" in r.headers


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"foo": 1}, 'Invalid additional property "foo"'),
        ({"date": "yesterday"}, "Invalid instant format"),
        ({"content": None}, "Invalid null value"),
        (
            {"content": [{"attachment": {"contentType": "text/plain", "data": "not base64!"}}]},
            "Invalid base64Binary format",
        ),
        ({"resourceType": "Patient"}, "Incorrect resource type"),
    ],
)
def test_invalid_resources_get_400_with_operation_outcome(
    fhir: FhirServer, change: dict, expected: str
) -> None:
    doc = doc_ref(**change)
    r = http("POST", f"{fhir.base_url}/DocumentReference", doc)
    assert r.status == 400, r.body
    assert any(expected in i for i in r.issues()), r.issues()


def test_missing_required_element(fhir: FhirServer) -> None:
    doc = doc_ref()
    del doc["content"]
    r = http("POST", f"{fhir.base_url}/DocumentReference", doc)
    assert r.status == 400
    assert any("DocumentReference.content" in i and "Missing required" in i for i in r.issues())


# Each of these passes Medplum's own validator; the wrapper must reject it.
GAPS = [
    pytest.param({"status": "final"}, "DocumentReference.status", "Invalid code", id="status-code"),
    pytest.param(
        {"docStatus": "signed"}, "DocumentReference.docStatus", "Invalid code", id="docStatus-code"
    ),
    pytest.param(
        {"subject": {"reference": "Practitioner/dr1"}},
        "DocumentReference.subject",
        "expected Patient",
        id="subject-practitioner",
    ),
    pytest.param(
        {"subject": {"reference": "Group/g1"}},
        "DocumentReference.subject",
        "expected Patient",
        id="subject-group",
    ),
    pytest.param(
        {"subject": {"reference": "Patient"}},
        "DocumentReference.subject",
        "Malformed reference",
        id="subject-malformed",
    ),
    pytest.param(
        {"context": {"encounter": [{"reference": "EpisodeOfCare/x"}]}},
        "DocumentReference.context.encounter[0]",
        "expected Encounter",
        id="encounter-episode",
    ),
    pytest.param(
        {"context": {"encounter": [{"reference": "Patient/p1"}]}},
        "DocumentReference.context.encounter[0]",
        "Invalid reference",
        id="encounter-patient",
    ),
    pytest.param(
        {"author": [{"reference": "Encounter/e1"}]},
        "DocumentReference.author[0]",
        "Invalid reference",
        id="author-encounter",
    ),
    pytest.param(
        {"authenticator": {"reference": "Patient/p1"}},
        "DocumentReference.authenticator",
        "Invalid reference",
        id="authenticator-patient",
    ),
    pytest.param(
        {"custodian": {"reference": "Practitioner/dr1"}},
        "DocumentReference.custodian",
        "Invalid reference",
        id="custodian-practitioner",
    ),
    pytest.param(
        {"relatesTo": [{"code": "replaces", "target": {"reference": "Patient/p1"}}]},
        "DocumentReference.relatesTo[0].target",
        "Invalid reference",
        id="relatesTo-patient",
    ),
    pytest.param(
        {"relatesTo": [{"code": "supersedes", "target": {"reference": "DocumentReference/d1"}}]},
        "DocumentReference.relatesTo[0].code",
        "Invalid code",
        id="relatesTo-code",
    ),
    pytest.param(
        {"description": ""}, "DocumentReference.description", "empty string", id="empty-string"
    ),
    pytest.param({"author": []}, "DocumentReference.author", "empty array", id="empty-array"),
    pytest.param(
        {"custodian": {}}, "DocumentReference.custodian", "empty object", id="empty-object"
    ),
    pytest.param(
        {"content": [{"attachment": {"contentType": "text/plain", "data": "aGk=", "title": ""}}]},
        "DocumentReference.content[0].attachment.title",
        "empty string",
        id="empty-nested-string",
    ),
]


@pytest.mark.parametrize(("change", "expression", "text"), GAPS)
def test_closed_validator_gaps(fhir: FhirServer, change: dict, expression: str, text: str) -> None:
    r = http("POST", f"{fhir.base_url}/DocumentReference", doc_ref(**change))
    assert r.status == 400, f"accepted: {change}"
    assert any(i.startswith(expression + ":") and text in i for i in r.issues()), r.issues()


def test_gaps_closed_on_update_and_other_types(fhir: FhirServer) -> None:
    created = http("POST", f"{fhir.base_url}/DocumentReference", doc_ref()).json
    bad = {**created, "status": "deleted"}
    r = http("PUT", f"{fhir.base_url}/DocumentReference/{created['id']}", bad)
    assert r.status == 400 and any("Invalid code" in i for i in r.issues())

    r = http("POST", f"{fhir.base_url}/Patient", {"resourceType": "Patient", "gender": "m"})
    assert r.status == 400 and any("Patient.gender" in i for i in r.issues())
    enc = {
        "resourceType": "Encounter",
        "status": "done",
        "class": {"code": "AMB"},
        "subject": {"reference": "Group/g"},
    }
    issues = http("POST", f"{fhir.base_url}/Encounter", enc).issues()
    assert any("Encounter.status" in i for i in issues) and any(
        "Encounter.subject" in i for i in issues
    )


def test_all_issues_reported_at_once(fhir: FhirServer) -> None:
    r = http(
        "POST",
        f"{fhir.base_url}/DocumentReference",
        doc_ref(status="x", docStatus="y", description=""),
    )
    assert r.status == 400
    assert len(r.issues()) == 3


def test_bad_json_and_content_type(fhir: FhirServer) -> None:
    r = http(
        "POST", f"{fhir.base_url}/DocumentReference", b"{not json", {"Content-Type": FHIR_JSON}
    )
    assert r.status == 400 and r.json["resourceType"] == "OperationOutcome"
    r = http(
        "POST",
        f"{fhir.base_url}/DocumentReference",
        b"<xml/>",
        {"Content-Type": "application/fhir+xml"},
    )
    assert r.status == 415


# ----------------------------------------------------------------- conditional create, versions


def test_conditional_create_returns_existing(fhir: FhirServer) -> None:
    doc = doc_ref()
    ident = doc["identifier"][0]
    hdr = {"If-None-Exist": f"identifier={ident['system']}|{ident['value']}"}
    first = http("POST", f"{fhir.base_url}/DocumentReference", doc, hdr)
    second = http("POST", f"{fhir.base_url}/DocumentReference", doc, hdr)
    assert first.status == 201 and second.status == 200
    assert first.json["id"] == second.json["id"]
    assert fhir.counts() == {"DocumentReference": 1}


def test_concurrent_conditional_creates_make_one_resource(fhir: FhirServer) -> None:
    """Double sign / two workers racing: Medplum's MemoryRepository has no transactions, the
    wrapper serialises requests so search-then-create stays atomic."""
    from concurrent.futures import ThreadPoolExecutor

    doc = doc_ref()
    hdr = {"If-None-Exist": f"identifier=urn:test:note|{doc['identifier'][0]['value']}"}
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda _: http("POST", f"{fhir.base_url}/DocumentReference", doc, hdr), range(16)
            )
        )
    assert sorted(r.status for r in results) == [200] * 15 + [201]
    assert len({r.json["id"] for r in results}) == 1
    assert fhir.counts() == {"DocumentReference": 1}


def test_ignore_if_none_exist_mode_makes_duplicates(fhir: FhirServer) -> None:
    """Drill for EHRs that ignore conditional create (a local write ledger must cope)."""
    fhir.configure(ignore_if_none_exist=True)
    doc = doc_ref()
    hdr = {"If-None-Exist": f"identifier=urn:test:note|{doc['identifier'][0]['value']}"}
    a = http("POST", f"{fhir.base_url}/DocumentReference", doc, hdr)
    b = http("POST", f"{fhir.base_url}/DocumentReference", doc, hdr)
    assert a.status == b.status == 201 and a.json["id"] != b.json["id"]
    fhir.reset()  # restores the startup config
    a = http("POST", f"{fhir.base_url}/DocumentReference", doc, hdr)
    b = http("POST", f"{fhir.base_url}/DocumentReference", doc, hdr)
    assert a.json["id"] == b.json["id"]


def test_update_with_if_match(fhir: FhirServer) -> None:
    created = http("POST", f"{fhir.base_url}/DocumentReference", doc_ref()).json
    url = f"{fhir.base_url}/DocumentReference/{created['id']}"
    vid = created["meta"]["versionId"]

    stale = http(
        "PUT", url, {**created, "status": "superseded"}, {"If-Match": 'W/"not-the-version"'}
    )
    assert stale.status == 412 and stale.json["resourceType"] == "OperationOutcome"
    assert http("GET", url).json["status"] == "current"

    ok = http("PUT", url, {**created, "status": "superseded"}, {"If-Match": f'W/"{vid}"'})
    assert ok.status == 200, ok.body
    new_vid = ok.json["meta"]["versionId"]
    assert new_vid != vid and ok.headers["etag"] == f'W/"{new_vid}"'

    # the old ETag is now stale; a bare (unquoted) version id is honoured, not ignored
    assert (
        http("PUT", url, {**created, "status": "entered-in-error"}, {"If-Match": vid}).status == 412
    )
    assert http("GET", url).json["status"] == "superseded"
    assert http("GET", f"{url}/_history/{vid}").json["status"] == "current"


# --------------------------------------------------------------------------- search


def _ids(r: Response) -> set[str]:
    assert r.status == 200, r.body
    assert r.json["resourceType"] == "Bundle" and r.json["type"] == "searchset"
    return {e["resource"]["id"] for e in r.json.get("entry", [])}


def test_searches(fhir: FhirServer) -> None:
    base = fhir.base_url
    patient = http(
        "POST",
        f"{base}/Patient",
        {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "MRN-1"}]},
    ).json
    other = http(
        "POST",
        f"{base}/Patient",
        {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "MRN-2"}]},
    ).json
    enc = http(
        "POST",
        f"{base}/Encounter",
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{patient['id']}"},
        },
    ).json
    d1 = http(
        "POST",
        f"{base}/DocumentReference",
        doc_ref(
            subject={"reference": f"Patient/{patient['id']}"},
            context={"encounter": [{"reference": f"Encounter/{enc['id']}"}]},
        ),
    ).json
    consult = {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]}
    d2 = http(
        "POST",
        f"{base}/DocumentReference",
        doc_ref(subject={"reference": f"Patient/{patient['id']}"}, type=consult),
    ).json
    d3 = http(
        "POST",
        f"{base}/DocumentReference",
        doc_ref(subject={"reference": f"Patient/{other['id']}"}),
    ).json

    pid = patient["id"]
    assert _ids(http("GET", f"{base}/DocumentReference?patient=Patient/{pid}")) == {
        d1["id"],
        d2["id"],
    }
    assert _ids(http("GET", f"{base}/DocumentReference?patient={pid}")) == {d1["id"], d2["id"]}
    assert _ids(http("GET", f"{base}/DocumentReference?subject=Patient/{pid}")) == {
        d1["id"],
        d2["id"],
    }
    assert _ids(http("GET", f"{base}/DocumentReference?encounter=Encounter/{enc['id']}")) == {
        d1["id"]
    }
    assert _ids(http("GET", f"{base}/DocumentReference?encounter={enc['id']}")) == {d1["id"]}
    assert _ids(http("GET", f"{base}/DocumentReference?type=http://loinc.org|11488-4")) == {
        d2["id"]
    }
    assert _ids(
        http("GET", f"{base}/DocumentReference?patient={pid}&type=http://loinc.org|11506-3")
    ) == {d1["id"]}
    ident = d3["identifier"][0]
    assert _ids(
        http("GET", f"{base}/DocumentReference?identifier={ident['system']}|{ident['value']}")
    ) == {d3["id"]}
    assert _ids(http("GET", f"{base}/DocumentReference?identifier=urn:test:note|nope")) == set()
    assert _ids(http("GET", f"{base}/Patient?identifier=urn:mrn|MRN-1")) == {pid}
    assert _ids(http("GET", f"{base}/Encounter?patient=Patient/{pid}")) == {enc["id"]}
    assert _ids(http("GET", f"{base}/Encounter?patient={other['id']}")) == set()


def test_transaction_is_all_or_nothing(fhir: FhirServer) -> None:
    good, bad = doc_ref(), doc_ref(status="bogus")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": good,
                "request": {"method": "POST", "url": "DocumentReference"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": bad,
                "request": {"method": "POST", "url": "DocumentReference"},
            },
        ],
    }
    r = http("POST", fhir.base_url, bundle)
    assert r.status == 400, r.body
    assert fhir.counts() == {}
    bundle["entry"].pop()
    r = http("POST", fhir.base_url, bundle)
    assert r.status == 200 and r.json["type"] == "transaction-response"
    assert r.json["entry"][0]["response"]["status"].startswith("201")
    assert fhir.counts() == {"DocumentReference": 1}


# --------------------------------------------------------------------------- fault injection


def test_fail_next_with_retry_after(fhir: FhirServer) -> None:
    fhir.fail_next(2, status=503, retry_after=7)
    url = f"{fhir.base_url}/DocumentReference"
    first, second = http("POST", url, doc_ref()), http("POST", url, doc_ref())
    assert first.status == second.status == 503
    assert first.headers["retry-after"] == "7"
    assert first.json["issue"][0]["code"] == "transient"
    assert fhir.counts() == {}  # "before" faults: nothing was processed
    assert http("POST", url, doc_ref()).status == 201
    log = fhir.requests()
    assert [e["status"] for e in log] == [503, 503, 201]
    assert [bool(e["fault"]) for e in log] == [True, True, False]


def test_429_and_filters(fhir: FhirServer) -> None:
    fhir.fail_next(1, status=429, retry_after=1, method="POST", path="DocumentReference")
    assert http("GET", f"{fhir.base_url}/DocumentReference").status == 200  # GET does not match
    assert (
        http("POST", f"{fhir.base_url}/Patient", {"resourceType": "Patient"}).status == 201
    )  # path does not match
    r = http("POST", f"{fhir.base_url}/DocumentReference", doc_ref())
    assert r.status == 429 and r.headers["retry-after"] == "1"
    assert http("POST", f"{fhir.base_url}/DocumentReference", doc_ref()).status == 201


def test_fault_after_processing_loses_the_response(fhir: FhirServer) -> None:
    """The EHR stored the document but the client never heard: the retry must not duplicate."""
    doc = doc_ref()
    hdr = {"If-None-Exist": f"identifier=urn:test:note|{doc['identifier'][0]['value']}"}
    fhir.fail_next(1, status=504, when="after")
    assert http("POST", f"{fhir.base_url}/DocumentReference", doc, hdr).status == 504
    assert fhir.counts() == {"DocumentReference": 1}
    retry = http("POST", f"{fhir.base_url}/DocumentReference", doc, hdr)
    assert retry.status == 200
    assert fhir.counts() == {"DocumentReference": 1}


def test_dropped_connection_and_delay(fhir: FhirServer) -> None:
    fhir.drop_next(1, when="after")
    with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
        http("POST", f"{fhir.base_url}/DocumentReference", doc_ref())
    assert fhir.counts() == {"DocumentReference": 1}
    assert fhir.requests()[-1]["status"] == "dropped"

    fhir.delay_next(300)
    t0 = time.perf_counter()
    assert http("GET", f"{fhir.base_url}/DocumentReference").status == 200
    assert time.perf_counter() - t0 >= 0.29
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        fhir.delay_next(2000)
        http("GET", f"{fhir.base_url}/DocumentReference", timeout=0.3)


def http_client_errors() -> type[Exception]:
    import http.client

    return http.client.HTTPException


def test_reset_clears_everything(fhir: FhirServer) -> None:
    http("POST", f"{fhir.base_url}/DocumentReference", doc_ref())
    fhir.fail_next(5)
    fhir.reset()
    assert fhir.counts() == {}
    assert fhir.requests() == []
    assert http("GET", f"{fhir.base_url}/DocumentReference").status == 200


# --------------------------------------------------------------------------- auth


def test_static_bearer_token() -> None:
    with run_fhir_server(token="s3cret") as srv:
        url = f"{srv.base_url}/DocumentReference"
        r = http("GET", url)
        assert r.status == 401 and r.json["issue"][0]["code"] == "login"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert http("GET", url, headers={"Authorization": "Bearer wrong"}).status == 401
        assert http("GET", url, headers={"Authorization": "Bearer s3cret"}).status == 200
        assert http("GET", f"{srv.base_url}/metadata").status == 200  # metadata is public


@pytest.fixture(scope="module")
def smart_keys() -> dict[str, Any]:
    jwt = pytest.importorskip("jwt")
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    ec_key = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = ec.generate_private_key(ec.SECP384R1())
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_jwk.update(kid="ec-1", alg="ES384")
    rsa_jwk.update(kid="rsa-1", alg="RS384")
    return {"ec": ec_key, "rsa": rsa_key, "other": other, "jwks": {"keys": [ec_jwk, rsa_jwk]}}


def _assertion(
    key: Any, alg: str, kid: str, aud: str, client_id: str = "scribe-test", **claims: Any
) -> str:
    import jwt

    now = int(time.time())
    payload = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": now + 240,
        "jti": str(uuid.uuid4()),
        **claims,
    }
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def _token_request(srv: FhirServer, assertion: str, **form: str) -> Response:
    from urllib.parse import urlencode

    body = {
        "grant_type": "client_credentials",
        "scope": "system/DocumentReference.cru system/Patient.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
        **form,
    }
    return http(
        "POST",
        srv.token_url,
        urlencode(body).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )


def test_smart_backend_services_token_flow(smart_keys: dict[str, Any]) -> None:
    with run_fhir_server(
        smart_client_id="scribe-test", smart_jwks=smart_keys["jwks"], token_ttl=1
    ) as srv:
        url = f"{srv.base_url}/DocumentReference"
        assert http("GET", url).status == 401
        conf = http("GET", f"{srv.base_url}/.well-known/smart-configuration").json
        assert conf["token_endpoint"] == srv.token_url

        for key, alg, kid in (
            (smart_keys["ec"], "ES384", "ec-1"),
            (smart_keys["rsa"], "RS384", "rsa-1"),
        ):
            r = _token_request(srv, _assertion(key, alg, kid, srv.token_url))
            assert r.status == 200, r.body
            tok = r.json
            assert (
                tok["token_type"] == "bearer"
                and tok["expires_in"] == 1
                and tok["scope"].startswith("system/")
            )
            assert (
                http("GET", url, headers={"Authorization": f"Bearer {tok['access_token']}"}).status
                == 200
            )

        # expiry by time (token_ttl=1s) ...
        time.sleep(1.1)
        r = http("GET", url, headers={"Authorization": f"Bearer {tok['access_token']}"})
        assert r.status == 401 and "expired" in r.issues()[0]
        # ... and on demand; a fresh assertion gets a fresh token (refresh)
        srv.configure(token_ttl=60)
        fresh = _token_request(
            srv, _assertion(smart_keys["ec"], "ES384", "ec-1", srv.token_url)
        ).json
        auth = {"Authorization": f"Bearer {fresh['access_token']}"}
        assert http("GET", url, headers=auth).status == 200
        assert srv.expire_tokens() >= 1
        assert http("GET", url, headers=auth).status == 401


def test_smart_rejects_bad_credentials(smart_keys: dict[str, Any]) -> None:
    with run_fhir_server(smart_client_id="scribe-test", smart_jwks=smart_keys["jwks"]) as srv:
        aud = srv.token_url

        def err(resp: Response) -> tuple[int, str, str]:
            return resp.status, resp.json["error"], resp.json.get("error_description", "")

        assert err(_token_request(srv, _assertion(smart_keys["other"], "ES384", "ec-1", aud)))[
            :2
        ] == (401, "invalid_client")
        assert (
            "aud"
            in err(
                _token_request(
                    srv, _assertion(smart_keys["ec"], "ES384", "ec-1", "http://elsewhere/token")
                )
            )[2]
        )
        assert (
            "client_id"
            in err(
                _token_request(
                    srv, _assertion(smart_keys["ec"], "ES384", "ec-1", aud, client_id="intruder")
                )
            )[2]
        )
        expired = _assertion(smart_keys["ec"], "ES384", "ec-1", aud, exp=int(time.time()) - 60)
        assert "expired" in err(_token_request(srv, expired))[2]
        once = _assertion(smart_keys["ec"], "ES384", "ec-1", aud)
        assert _token_request(srv, once).status == 200
        assert "replay" in err(_token_request(srv, once))[2]
        ok = _assertion(smart_keys["ec"], "ES384", "ec-1", aud)
        assert err(_token_request(srv, ok, grant_type="password"))[:2] == (
            400,
            "unsupported_grant_type",
        )
        assert err(_token_request(srv, ok, scope=""))[:2] == (400, "invalid_scope")
        # token endpoint faults for drills
        srv.fail_next(1, status=503, target="auth")
        assert _token_request(srv, ok).status == 503


# --------------------------------------------------------------------------- harness


def test_harness_reports_startup_failure_with_stderr() -> None:
    with pytest.raises(FhirServerError) as exc:
        with run_fhir_server(token_ttl=-1):
            pass
    assert "bad --token-ttl" in str(exc.value)
    assert "exited with code" in str(exc.value)


def test_server_process_is_stopped_on_exit() -> None:
    with run_fhir_server() as srv:
        proc = srv.process
        assert proc.poll() is None
    assert proc.poll() is not None
