"""The review app driven by Textual's Pilot against the real service on a free port.

Each flow a clinician goes through: open an encounter, move through sentences with the evidence
pane following, edit, resolve each kind of flag, be refused when signing with flags open, sign,
watch delivery reach "delivered" on the real local FHIR server (Medplum), amend.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from review_support import CLINICIAN, TOKEN, make_settings, review_server, seed_standard
from rich.text import Text
from textual.widgets import DataTable, Input, OptionList, Static

from scribe.models import EncounterStatus
from tui.app import ReviewApp
from tui.client import ReviewClient
from tui.screens.dialogs import ConfirmDialog, HelpScreen, TextDialog
from tui.screens.encounter import EncounterScreen

pytestmark = pytest.mark.timeout(180)
SIZE = (160, 45)


def text_of(widget: Static) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


async def until(pilot, cond: Callable[[], bool], what: str, tries: int = 300) -> None:
    """Let the app run until ``cond`` holds (an upper bound on waiting, not a timing assertion)."""
    for _ in range(tries):
        await pilot.pause(0.05)
        try:
            if cond():
                return
        except Exception:
            pass
    raise AssertionError(f"the app never showed: {what}")


@pytest.fixture
async def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = make_settings(tmp_path, out_dir=tmp_path / "ehr-out")
    seed_standard(settings)
    async with review_server(settings) as running:
        yield running


def make_app(running, **kw) -> ReviewApp:
    return ReviewApp(ReviewClient(running.http, TOKEN, CLINICIAN), **kw)


async def open_ready(pilot, app: ReviewApp) -> EncounterScreen:
    table = app.screen.query_one(DataTable)
    await until(pilot, lambda: table.row_count == 4, "four encounters listed")
    ids = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]
    table.move_cursor(row=ids.index("enc-ready"))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, EncounterScreen), "the encounter screen")
    screen = app.screen
    assert isinstance(screen, EncounterScreen)
    await until(pilot, lambda: screen.view is not None and screen.query_one("#note", OptionList).option_count > 5,
                "the draft")
    return screen


def evidence(screen) -> str:
    return text_of(screen.query_one("#evidence", Static))


def message(screen) -> str:
    return text_of(screen.query_one("#message", Static))


async def test_list_shows_states_counts_and_filters(service) -> None:
    app = make_app(service)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(DataTable)
        await until(pilot, lambda: table.row_count == 4, "four encounters")
        counts = text_of(app.screen.query_one("#counts", Static))
        assert "draft ready 2" in counts and "recording 1" in counts and "drafting 1" in counts
        assert app.title == "scribe review"  # no PHI in the terminal title
        await pilot.press("3")  # only draft ready
        await until(pilot, lambda: table.row_count == 2, "two draft-ready encounters")
        await pilot.press("0", "slash")
        await pilot.press(*"clean", "enter")
        await until(pilot, lambda: table.row_count == 1, "the filtered encounter")
        assert table.coordinate_to_cell_key((0, 0)).row_key.value == "enc-clean"
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")


async def test_open_encounter_and_evidence_follows_the_cursor(service) -> None:
    app = make_app(service)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_ready(pilot, app)
        assert app.title == "scribe review"
        status = text_of(screen.query_one("#status", Static))
        assert "enc-ready" in status and "7 open flags" in status
        transcript = screen.query_one("#transcript", OptionList)
        assert transcript.option_count == 17
        first_line = transcript.get_option_at_index(1).prompt
        assert "patient:" in (first_line.plain if isinstance(first_line, Text) else str(first_line))
        note = screen.query_one("#note", OptionList)
        first = screen.current_sentence()
        assert first is not None and first.evidence
        shown = evidence(screen)
        assert first.evidence[0].quote.strip() in shown
        assert "0:" in shown  # times
        seen = [first.id]
        for _ in range(3):
            await pilot.press("down")
            await until(pilot, lambda: screen.current_sentence().id != seen[-1], "the next sentence")
            s = screen.current_sentence()
            seen.append(s.id)
            assert s.evidence[0].quote.strip() in evidence(screen)
            # the transcript pane shows the cited line too
            cited = transcript.get_option_at_index(transcript.highlighted).id
            assert cited == s.evidence[0].segment_id
        assert note.highlighted is not None
        # a flagged sentence says why in the evidence pane and stands out in the note
        await pilot.press("f")
        await until(pilot, lambda: screen.current_sentence().id == "objective.x0", "the first flagged sentence")
        assert "No transcript evidence" in evidence(screen) and "Open flags" in evidence(screen)
        prompt = note.get_option_at_index(note.highlighted).prompt
        assert prompt.plain.strip().startswith("⚑")


async def test_edit_a_sentence(service) -> None:
    app = make_app(service)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_ready(pilot, app)
        s = screen.current_sentence()
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, TextDialog), "the edit dialog")
        field = app.screen.query_one(Input)
        assert field.value == s.text
        field.value = s.text.replace("three days", "3 days")
        await pilot.press("enter")
        await until(pilot, lambda: screen.view.version == 2, "the saved version")
        edited = screen.current_sentence()
        assert edited.id == s.id and "3 days" in edited.text and edited.clinician_authored
        assert edited.evidence == s.evidence
        assert "Written or edited by the clinician" in evidence(screen)
        note = screen.query_one("#note", OptionList)
        assert note.get_option_at_index(note.highlighted).prompt.plain.strip().startswith("✎")
        audit = await app.api.audit("enc-ready")
        assert [(e.action, e.actor) for e in audit] == [("edit", CLINICIAN)]


async def test_resolve_each_kind_of_flag_and_sign_refused_then_signed(service) -> None:
    app = make_app(service)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_ready(pilot, app)
        # signing with open flags: confirmation, then the service refuses in words
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the sign dialog")
        await pilot.press("y")
        await until(pilot, lambda: "flags still open" in message(screen), "the refusal")
        assert screen.query_one("#message").has_class("error")

        # accept (with a reason): both flags of the temperature sentence
        await pilot.press("f")
        await until(pilot, lambda: screen.current_sentence().id == "objective.x0", "the temperature sentence")
        for _ in range(2):
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, TextDialog), "the reason dialog")
            await pilot.press("enter")  # empty reason is refused in the dialog itself
            assert "Please type" in text_of(app.screen.query_one("#dialog-error", Static))
            await pilot.press(*"taken at triage")
            version = screen.view.version
            await pilot.press("enter")
            await until(pilot, lambda: screen.view.version == version + 1, "the accepted flag")
            assert screen.current_sentence().id == "objective.x0"
        assert screen.view.open_flags == 5

        # edit: the negation sentence
        await pilot.press("f")
        await until(pilot, lambda: screen.current_sentence().id == "assessment.x0", "the negation sentence")
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, TextDialog), "the edit dialog")
        app.screen.query_one(Input).value = "Reports lower abdominal pain on the left."
        await pilot.press("enter")
        await until(pilot, lambda: screen.view.open_flags == 3, "the edited sentence's flags resolved")

        # delete: the unsupported prescription
        await pilot.press("f")
        await until(pilot, lambda: screen.current_sentence().id == "plan.x0", "the plan sentence")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the delete dialog")
        await pilot.press("y")
        await until(pilot, lambda: screen.view.open_flags == 0, "no open flags")
        assert "plan.x0" not in {s.id for s in screen.view.note.sentences()}
        assert "No open flags" in str(screen.query_one("#flags", OptionList).get_option_at_index(0).prompt)

        audit = await app.api.audit("enc-ready")
        assert {e.resolution for e in audit if e.action == "resolve"} == {"accepted", "edited", "deleted"}

        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the sign dialog")
        body = text_of(app.screen.query_one(".dialog-body", Static))
        assert CLINICIAN in body and "All flags resolved" in body
        await pilot.press("y")
        await until(pilot, lambda: "Signed" in message(screen), "the signature")
        await until(pilot, lambda: "Delivered" in text_of(screen.query_one("#delivery", Static)),
                    "delivery to the (directory) EHR target")


# ---------------------------------------------------------------------- real FHIR server


@pytest.fixture(scope="module")
def fhir():
    try:
        from tests.fhir_server.harness import run_fhir_server
    except ImportError:
        from fhir_server.harness import run_fhir_server
    with run_fhir_server() as srv:
        yield srv


def _post(base: str, resource: dict) -> str:
    req = urllib.request.Request(f"{base}/{resource['resourceType']}", data=json.dumps(resource).encode(),
                                 method="POST", headers={"Content-Type": "application/fhir+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["id"]


@pytest.fixture
async def fhir_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fhir):
    from review_support import flagged_note, sample_segments, seed_encounter

    from scribe.notes import draft
    from scribe.database import open_store

    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    fhir.reset()
    patient = _post(fhir.base_url, {"resourceType": "Patient", "name": [{"family": "Example", "given": ["Test"]}]})
    _post(fhir.base_url, {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
        "period": {"start": datetime.now(UTC).isoformat(timespec="seconds")},
    })
    settings = make_settings(tmp_path, base_url=fhir.base_url)
    segs = sample_segments()
    store = open_store(settings)  # as the service writes: encrypted (plaintext PHI columns are refused)
    try:
        seed_encounter(store, "enc-ehr", status=EncounterStatus.draft_ready, patient=f"Patient/{patient}",
                       note=draft(segs, encounter_id="enc-ehr"))
        seed_encounter(store, "enc-flagged", status=EncounterStatus.draft_ready, patient=f"Patient/{patient}",
                       note=flagged_note("enc-flagged", segs))
    finally:
        store.close()
    async with review_server(settings) as running:
        yield running, fhir


def _doc_refs(fhir) -> list[dict]:
    with urllib.request.urlopen(f"{fhir.base_url}/DocumentReference", timeout=10) as resp:
        bundle = json.loads(resp.read())
    return [e["resource"] for e in bundle.get("entry", [])]


async def test_sign_deliver_to_real_fhir_server_then_amend(fhir_service) -> None:
    running, fhir = fhir_service
    app = make_app(running, encounter_id="enc-ehr")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, EncounterScreen), "the encounter opened directly")
        screen = app.screen
        await until(pilot, lambda: screen.view is not None, "the draft")
        assert "Not signed yet" in text_of(screen.query_one("#delivery", Static))
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the sign dialog")
        await pilot.press("y")
        delivery = screen.query_one("#delivery", Static)
        await until(pilot, lambda: "Delivered" in text_of(delivery), "delivered", tries=600)
        docs = _doc_refs(fhir)
        assert len(docs) == 1 and docs[0]["status"] == "current"
        assert docs[0]["id"] in text_of(delivery)

        # amend: reason, edit, sign again → a second DocumentReference replaces the first
        await pilot.press("A")
        await until(pilot, lambda: isinstance(app.screen, TextDialog), "the amend dialog")
        await pilot.press(*"duration was four days", "enter")
        await until(pilot, lambda: "Amending" in message(screen), "the amendment draft")
        first = screen.current_sentence()
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, TextDialog), "the edit dialog")
        app.screen.query_one(Input).value = first.text.replace("three days", "four days")
        await pilot.press("enter")
        await until(pilot, lambda: "four days" in screen.current_sentence().text, "the amended sentence")
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the sign dialog")
        await pilot.press("y")
        await until(pilot, lambda: "Signed" in message(screen), "the second signature")
        await until(pilot, lambda: len(_doc_refs(fhir)) == 2 and "Delivered" in text_of(delivery),
                    "the amendment delivered", tries=600)
        statuses = sorted(d["status"] for d in _doc_refs(fhir))
        assert statuses == ["current", "superseded"]


async def test_ehr_error_is_shown_in_plain_words(fhir_service) -> None:
    running, fhir = fhir_service
    fhir.fail_next(5, status=400, method="POST", path="DocumentReference")
    app = make_app(running, encounter_id="enc-ehr")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, EncounterScreen) and app.screen.view is not None,
                    "the draft")
        screen = app.screen
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the sign dialog")
        await pilot.press("y")
        delivery = screen.query_one("#delivery", Static)
        await until(pilot, lambda: "did not accept" in text_of(delivery), "the EHR's refusal", tries=600)
        assert "rejected the document as invalid" in text_of(delivery) or "400" in text_of(delivery)
        assert "Press r to retry" in text_of(delivery)
