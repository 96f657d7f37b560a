"""Pure helpers for the FHIR client: OperationOutcome → plain words, retry timing.

Kept apart from the HTTP code so the wording and the backoff schedule are tested without a
socket, and so the outbox (which persists the schedule) uses exactly the same arithmetic.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

_STATUS_WORDS = {
    400: "rejected the request as invalid",
    401: "refused the credentials",
    403: "does not allow this client to do that",
    404: "has no such resource",
    405: "does not support this operation",
    409: "reported a conflict",
    410: "says the resource is gone",
    412: "reported that the resource changed meanwhile (version conflict)",
    413: "found the request too large",
    415: "does not accept this content type",
    422: "could not process the document (business rule or profile validation failed)",
    429: "is throttling requests",
    500: "had an internal error",
    502: "is unreachable behind its gateway",
    503: "is unavailable",
    504: "timed out behind its gateway",
}

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses that say "try again later"; every other 4xx is final for that request."""


def issue_text(issue: Mapping[str, Any]) -> str:
    """One OperationOutcome issue as ``where: what`` (the most specific text available)."""
    details = issue.get("details") or {}
    text = (
        details.get("text")
        or issue.get("diagnostics")
        or next((c.get("display") or c.get("code") for c in details.get("coding") or [] if c), None)
        or str(issue.get("code") or "error")
    )
    where = (issue.get("expression") or issue.get("location") or [None])[0]
    return f"{where}: {text}" if where else str(text)


def describe_outcome(body: Any, *, max_issues: int = 8) -> str | None:
    """The error/fatal issues of an OperationOutcome joined into one line; None if not one.

    Warnings and information are left out when there are errors (an EHR that lists 30
    informational notes next to one real problem should not bury it).
    """
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return None
    issues = [i for i in body.get("issue") or [] if isinstance(i, Mapping)]
    serious = [i for i in issues if i.get("severity") in ("error", "fatal")] or issues
    texts = [issue_text(i) for i in serious[:max_issues]]
    if len(serious) > max_issues:
        texts.append(f"… and {len(serious) - max_issues} more")
    return "; ".join(texts) if texts else None


def describe_http_error(status: int, body: Any, *, action: str = "request") -> str:
    """``The EHR rejected the request as invalid (HTTP 400): DocumentReference.docStatus: …``."""
    words = _STATUS_WORDS.get(status) or ("failed" if status >= 500 else "refused the request")
    detail = describe_outcome(body)
    if detail is None and isinstance(body, Mapping) and body.get("error"):
        # OAuth errors: {"error": "invalid_client", "error_description": "..."}
        detail = f"{body['error']}: {body.get('error_description') or ''}".rstrip(": ")
    head = f"the FHIR server {words} (HTTP {status}) for the {action}"
    return f"{head}: {detail}" if detail else head


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(
    attempt: int,
    *,
    base: float = 2.0,
    cap: float = 600.0,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before attempt ``attempt + 1`` (``attempt`` ≥ 1 failures so far).

    Exponential with "equal jitter" (half fixed, half random) so a fleet of clients that all
    failed at once does not retry in lockstep, yet the wait still grows; never shorter than the
    server's ``Retry-After``.
    """
    exp = min(cap, base * (2 ** max(0, attempt - 1)))
    r = (rng or random).random()
    delay = exp / 2 + r * exp / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return float(delay)
