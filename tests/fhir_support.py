"""Shared pieces of the FHIR delivery tests (fhir/, drills/): an injected clock, a note to sign,
a store + outbox + worker wired to one FHIR target, and the local FHIR server (tests/fhir_server)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scribe.fhir.client import FhirClient
from scribe.fhir.outbox import Outbox, OutboxWorker
from scribe.fhir.targets import DocumentOptions, FhirTarget
from scribe.models import Consent, Evidence, Note, Section, Sentence
from scribe.store import Store

try:
    from tests.fhir_server.harness import FhirServer, run_fhir_server
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from fhir_server.harness import FhirServer, run_fhir_server

__all__ = ["T0", "Clock", "Env", "FhirServer", "free_port", "make_note", "run_fhir_server", "server_docs"]

T0 = datetime(2024, 5, 1, 14, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_note(eid: str = "enc-1", text: str = "Patient reports a dry cough for three days.", **kw: Any) -> Note:
    return Note(
        encounter_id=eid,
        sections=[
            Section(key="subjective", title="Subjective", sentences=[
                Sentence(id="s1", text=text, evidence=[Evidence(segment_id="seg-00000", start=0.0, end=2.0, quote=text)])
            ]),
            Section(key="assessment", title="Assessment", sentences=[
                Sentence(id="s2", text="Viral upper respiratory infection — café-au-lait note: ünïcödé kept.",
                         clinician_authored=True)
            ]),
        ],
        **kw,
    )


class Env:
    """A store + outbox + worker wired to one FHIR target."""

    def __init__(self, path: Path, base_url: str, clock: Clock, *, auth: Any = None,
                 options: DocumentOptions | None = None, patient: str = "Patient/p1",
                 encounter: str | None = "Encounter/e1") -> None:
        self.path, self.base_url, self.clock, self.auth, self.options = path, base_url, clock, auth, options
        self.store = Store(path)
        if self.store.get_encounter("enc-1") is None:
            self.store.open_encounter("enc-1", clinician_id="dr-lee", patient_ref=patient, language="en",
                                      sample_rate=16000, consent=Consent(given=True, method="verbal"))
        self.outbox = Outbox(self.store, targets=("fhir",), clock=clock)
        if encounter:
            self.outbox.set_context("enc-1", encounter=encounter)
        self.client = FhirClient(base_url, auth=auth)
        self.target = FhirTarget(self.client, options)
        self.worker = OutboxWorker(self.outbox, {"fhir": self.target}, lease_s=60)

    async def close(self) -> None:
        await self.worker.aclose()
        self.store.close()


async def server_docs(client: FhirClient, query: str = "") -> list[dict[str, Any]]:
    return await client.search("DocumentReference", query)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
