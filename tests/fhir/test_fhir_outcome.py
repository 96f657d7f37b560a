"""Pure pieces of FHIR delivery: error wording, Retry-After, backoff, reference parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from scribe.fhir.errors import ResolutionError
from scribe.fhir.outcome import backoff_delay, describe_http_error, describe_outcome, parse_retry_after
from scribe.fhir.resolve import parse_ref


def test_outcome_lists_errors_in_plain_words_and_hides_noise() -> None:
    oo = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational", "diagnostics": "all good otherwise"},
        {"severity": "error", "code": "code-invalid", "details": {"text": 'Invalid code "bogus"'},
         "expression": ["DocumentReference.status"]},
        {"severity": "fatal", "code": "structure", "diagnostics": "broken", "location": ["/f:content"]},
    ]}
    assert describe_outcome(oo) == 'DocumentReference.status: Invalid code "bogus"; /f:content: broken'
    assert describe_outcome({"resourceType": "Patient"}) is None
    assert describe_outcome("<html>") is None
    many = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": f"e{i}"} for i in range(12)]}
    assert describe_outcome(many).endswith("… and 4 more")
    msg = describe_http_error(422, oo, action="create DocumentReference")
    assert msg.startswith("the FHIR server could not process the document") and "(HTTP 422)" in msg
    oauth = describe_http_error(401, {"error": "invalid_client", "error_description": "bad key"}, action="token")
    assert oauth.endswith("invalid_client: bad key")


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0


def test_backoff_grows_with_jitter_caps_and_honours_retry_after() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        d = backoff_delay(attempt, base=2, cap=600, rng=rng)
        exp = min(600, 2 * 2 ** (attempt - 1))
        assert exp / 2 <= d <= exp
    delays = {round(backoff_delay(3, rng=rng), 6) for _ in range(20)}
    assert len(delays) > 1  # jitter: clients that failed together do not retry together
    assert backoff_delay(1, base=2, retry_after=90, rng=rng) == 90


@pytest.mark.parametrize("text,kind,expected", [
    ("Patient/123", "reference", "Patient/123"),
    ("https://ehr.example/fhir/Patient/123", "reference", "https://ehr.example/fhir/Patient/123"),
    ("123", "reference", "Patient/123"),
    ("mrn:12345", "identifier", "identifier=urn:mrn|12345"),
    ("identifier=urn:oid:1.2.3|A,B", "identifier", "identifier=urn:oid:1.2.3|A%5C%2CB"),
    ("urn:mrn|777", "identifier", "identifier=urn:mrn|777"),
])
def test_parse_patient_designations(text: str, kind: str, expected: str) -> None:
    spec = parse_ref(text, "Patient", mrn_system="urn:mrn")
    assert spec.kind == kind
    assert (spec.reference if kind == "reference" else spec.search_token()) == expected


def test_parse_ref_rejects_wrong_type_and_garbage() -> None:
    with pytest.raises(ResolutionError, match="points at a Encounter"):
        parse_ref("Encounter/1", "Patient")
    with pytest.raises(ResolutionError, match="neither a reference"):
        parse_ref("John Smith", "Patient")
    with pytest.raises(ResolutionError, match="no Patient was given"):
        parse_ref("", "Patient")
