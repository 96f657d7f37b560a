"""Delivery errors, classified by what the outbox should do about them.

``retryable`` is the one bit the outbox needs: a transient failure (EHR down, throttled,
network) is rescheduled with backoff; anything else (validation, auth, a patient that cannot be
resolved) is parked as failed with the message, for a person to fix and ``scribe outbox retry``.
Messages are plain words and carry no PHI (no note text, no patient identifiers).
"""

from __future__ import annotations

from typing import Any


class DeliveryError(Exception):
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after


class FhirError(DeliveryError):
    """An HTTP exchange with the FHIR server failed; ``status`` is None for network errors."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        outcome: Any = None,
    ) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.status = status
        self.outcome = outcome


class FhirUnavailable(FhirError):
    """Connection refused/reset, timeout, 429 or 5xx: try again later."""

    retryable = True


class FhirAuthError(FhirError):
    """Wrong or missing credentials (token refused, SMART client unknown, key not registered)."""


class FhirValidationError(FhirError):
    """The server rejected the resource (400/422 …): resending the same bytes cannot help."""


class FhirNotFound(FhirError):
    """404/410."""


class FhirConflict(FhirError):
    """412 Precondition Failed (If-Match) or 409: the resource changed under us."""


class ResolutionError(DeliveryError):
    """The patient or encounter could not be identified in the EHR (none, or more than one)."""
