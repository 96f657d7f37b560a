"""The draft runner drafts with the final speaker labels: labels the record pass re-decided
with hindsight after the drafter had read their segments reach the writer before it finishes
(``DraftRunner._relabel``). No server: the runner with an extractive engine."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from notes_support import qa_visit

from scribe.models import Segment, Speaker
from scribe.notes import load_template
from scribe.notes.writers import ExtractiveWriter, write_note
from scribe.service.drafting import DraftRunner

SOAP = load_template("soap")


class Engine:
    def __init__(self) -> None:
        self.notes_executor = ThreadPoolExecutor(max_workers=1)
        self.settings = SimpleNamespace(notes=SimpleNamespace(template="soap", templates_dir=None))
        self.sessions: list = []

    def draft_session(self, encounter_id: str, language: str):
        session = ExtractiveWriter().start(encounter_id, SOAP, language=language)
        self.sessions.append(session)
        return session


def facts(session) -> list:
    return sorted((f.kind.value, f.value, f.negated, str(f.speaker)) for f in session.drafter.facts)


async def test_labels_revised_after_the_drafter_read_them_are_drafted_with():
    wrong, right = qa_visit(Speaker.clinician), qa_visit(Speaker.patient)
    engine = Engine()
    runner = DraftRunner(engine, "e-hindsight", "en")  # type: ignore[arg-type]
    await runner.open(hold=0)
    await runner.add(wrong)  # hold 0: the drafter reads every segment at once

    async def stored() -> list[Segment]:
        return right  # the stored transcript: the record pass relabelled segment 1 at stop

    notes = [n async for n in runner.finish(stored)]
    truth, _ = await write_note(ExtractiveWriter(), right, encounter_id="e-hindsight", template=SOAP)
    first_read, _ = await write_note(ExtractiveWriter(), wrong, encounter_id="e-hindsight", template=SOAP)
    session = engine.sessions[0]
    assert [s.speaker for s in session.drafter.state.segments] == [s.speaker for s in right]
    assert ("finding", "chest pain", False, "patient") in facts(session)  # the answer now counts
    assert notes[-1].model_copy(update={"created_at": truth.created_at}) == truth
    # and the labels mattered: the note of the labels first read is another note
    assert first_read.model_copy(update={"created_at": truth.created_at}) != truth


async def test_no_revision_leaves_the_draft_as_read():
    right = qa_visit(Speaker.patient)
    engine = Engine()
    runner = DraftRunner(engine, "e-same", "en")  # type: ignore[arg-type]
    await runner.open(hold=2)
    await runner.add(right)

    async def stored() -> list[Segment]:
        return right

    notes = [n async for n in runner.finish(stored)]
    truth, _ = await write_note(ExtractiveWriter(), right, encounter_id="e-same", template=SOAP)
    assert notes[-1].model_copy(update={"created_at": truth.created_at}) == truth
