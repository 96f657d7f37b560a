"""The encounter screen's panes (tui/widgets/): each renders from its reactive attributes, reports
the clinician's moves as messages, and the screen binds its state down and handles the messages.

Each test would fail if one link of that wiring broke: a watcher not rendering, a binding not
pushing, a message not posted or not handled, or an echo of the screen's own cursor move being
reported back as the clinician's (which would make the screen and the note pane chase each other).
"""

from __future__ import annotations

import asyncio

import pytest
from review_support import CLINICIAN, flagged_note, sample_segments
from rich.text import Text
from textual.app import App, ComposeResult
from textual.message import Message
from textual.widgets import DataTable, Input, Label, OptionList, Static

from scribe.models import Note
from scribe.review.models import (
    DeliveryView,
    DraftView,
    EncounterSummary,
    LiveEvent,
    ReviewState,
    TranscriptView,
)
from tui.app import ReviewApp
from tui.screens.encounter import EncounterScreen
from tui.screens.encounters import EncounterListScreen
from tui.widgets import (
    EncounterListPane,
    EvidencePane,
    FlagRef,
    FlagsPane,
    Listing,
    NotePane,
    StatusBar,
    TranscriptPane,
)

pytestmark = pytest.mark.timeout(60)
SEGS = sample_segments()
EID = "enc-w"


def _view(note: Note, version: int = 1) -> DraftView:
    return DraftView(encounter_id=EID, version=version, note=note, state=ReviewState.draft_ready,
                     open_flags=len(note.open_flags))


NOTE = flagged_note(EID, SEGS)
VIEW = _view(NOTE)
SENTENCE_IDS = [s.id for s in NOTE.sentences()]


def _plain(widget: Static | Label) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


class Host(App[None]):
    """One pane on its own, recording the messages it posts."""

    def __init__(self, pane) -> None:
        super().__init__()
        self.pane = pane
        self.received: list[Message] = []

    def compose(self) -> ComposeResult:
        yield self.pane

    def on_note_pane_sentence_highlighted(self, message: NotePane.SentenceHighlighted) -> None:
        self.received.append(message)

    def on_flags_pane_flag_highlighted(self, message: FlagsPane.FlagHighlighted) -> None:
        self.received.append(message)


async def test_note_pane_renders_its_view_and_cursor_and_reports_only_the_clinicians_moves() -> None:
    pane = NotePane()
    app = Host(pane)
    async with app.run_test(size=(120, 40)) as pilot:
        note_list = pane.query_one("#note", OptionList)
        assert note_list.option_count == 0  # nothing until the screen gives it a view
        pane.state = ReviewState.draft_ready
        pane.cursor = SENTENCE_IDS[2]
        pane.view = VIEW
        await pilot.pause()
        assert note_list.option_count == len(NOTE.sections) + len(SENTENCE_IDS)
        assert "version 1" in _plain(pane.query_one("#note-title", Label))
        assert note_list.get_option_at_index(note_list.highlighted).id == SENTENCE_IDS[2]
        pane.cursor = SENTENCE_IDS[4]  # the screen moving the cursor …
        await pilot.pause()
        assert note_list.get_option_at_index(note_list.highlighted).id == SENTENCE_IDS[4]
        assert app.received == []  # … is not reported back as a move
        note_list.focus()
        await pilot.press("down")  # the clinician moving it is
        await pilot.pause()
        assert [m.sentence_id for m in app.received] == [SENTENCE_IDS[5]]  # type: ignore[attr-defined]
        pane.view = _view(NOTE.model_copy(update={"title": "Amended"}), version=2)
        await pilot.pause()
        assert "Amended · version 2" in _plain(pane.query_one("#note-title", Label))


async def test_flags_pane_lists_open_flags_and_reports_a_move() -> None:
    pane = FlagsPane()
    app = Host(pane)
    async with app.run_test(size=(120, 40)) as pilot:
        flags = pane.query_one("#flags", OptionList)
        pane.state = ReviewState.draft_ready
        await pilot.pause()
        assert "0 open" in _plain(pane.query_one("#flags-title", Label))
        assert "No open flags" in str(flags.get_option_at_index(0).prompt)
        pane.view = VIEW
        await pilot.pause()
        assert flags.option_count == len(NOTE.open_flags)
        assert f"{len(NOTE.open_flags)} open" in _plain(pane.query_one("#flags-title", Label))
        flags.focus()
        await pilot.press("down")
        await pilot.pause()
        assert [m.flag for m in app.received] == [FlagRef("objective.x0", 0)]  # type: ignore[attr-defined]
        assert pane.highlighted_flag == FlagRef("objective.x0", 0)


async def test_evidence_and_transcript_panes_follow_their_reactives() -> None:
    evidence = EvidencePane()
    async with Host(evidence).run_test(size=(120, 40)) as pilot:
        text = evidence.query_one("#evidence", Static)
        sentence = NOTE.sentences()[0]
        evidence.sentence = sentence
        await pilot.pause()
        assert _plain(text) == ""  # blank until the transcript has loaded
        evidence.segments = tuple(SEGS)
        await pilot.pause()
        assert sentence.evidence[0].quote.strip() in _plain(text)
        evidence.sentence = None
        await pilot.pause()
        assert "Move to a sentence" in _plain(text)

    transcript = TranscriptPane()
    async with Host(transcript).run_test(size=(120, 40)) as pilot:
        lines = transcript.query_one("#transcript", OptionList)
        transcript.segments = tuple(SEGS[:5])
        transcript.cited = (SEGS[3].id,)
        await pilot.pause()
        assert lines.option_count == 5 and lines.highlighted == 3
        transcript.state = ReviewState.recording  # new segments while recording: appended, followed
        transcript.segments = tuple(SEGS[:8])
        await pilot.pause()
        assert lines.option_count == 8 and lines.highlighted == 7


class FakeApi:
    """The encounter endpoints the screen reads, answering fixed data."""

    actor = CLINICIAN

    def __init__(self) -> None:
        self.view = VIEW

    async def list_encounters(self, state=None, query=None):
        from scribe.review.models import EncounterList

        return EncounterList(encounters=[], counts={})

    async def encounter(self, encounter_id: str) -> EncounterSummary:
        return EncounterSummary(id=EID, patient_ref="Patient/1", clinician_id=CLINICIAN, status="draft_ready",
                                state=ReviewState.draft_ready, created_at=NOTE.created_at,
                                updated_at=NOTE.created_at, segment_count=len(SEGS), draft_version=1,
                                sentences=len(SENTENCE_IDS), open_flags=len(NOTE.open_flags))

    async def transcript(self, encounter_id: str, since: int = 0) -> TranscriptView:
        return TranscriptView(encounter_id=EID, status="draft_ready", segments=SEGS[since:], segment_count=len(SEGS))

    async def draft(self, encounter_id: str) -> DraftView:
        return self.view

    async def deliveries(self, encounter_id: str) -> DeliveryView:
        return DeliveryView(encounter_id=EID, signed=[], deliveries=[])

    async def events(self, encounter_id=None):
        await asyncio.Event().wait()
        yield LiveEvent(type="hello")  # pragma: no cover

    async def close(self) -> None:
        pass


async def _open_screen(pilot, app: ReviewApp) -> EncounterScreen:
    for _ in range(200):
        await pilot.pause(0.02)
        if isinstance(app.screen, EncounterScreen) and app.screen.view is not None:
            await pilot.pause()
            return app.screen
    raise AssertionError("the encounter never loaded")


async def test_screen_handles_the_panes_messages_and_binds_its_state_down() -> None:
    api = FakeApi()
    app = ReviewApp(api, encounter_id=EID, live=False)  # type: ignore[arg-type]
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await _open_screen(pilot, app)
        note_list = screen.query_one("#note", OptionList)
        transcript = screen.query_one("#transcript", OptionList)
        assert screen.selected == SENTENCE_IDS[0]

        # a pane's message is handled by the screen, whose state flows down to every pane
        target = NOTE.sentences()[5]
        screen.query_one(NotePane).post_message(NotePane.SentenceHighlighted(target.id))
        await pilot.pause()
        assert screen.selected == target.id
        assert note_list.get_option_at_index(note_list.highlighted).id == target.id
        assert target.evidence[0].quote.strip() in _plain(screen.query_one("#evidence", Static))
        assert transcript.get_option_at_index(transcript.highlighted).id == target.evidence[0].segment_id

        screen.query_one(FlagsPane).post_message(FlagsPane.FlagChosen(FlagRef("plan.x0", 1)))
        await pilot.pause()
        assert screen.selected == "plan.x0" and screen.focused is note_list
        assert "Open flags" in _plain(screen.query_one("#evidence", Static))

        # a new draft from the service: the panes redraw, the cursor stays on its sentence
        edited = NOTE.model_copy(update={"sections": [
            sec.model_copy(update={"sentences": [s for s in sec.sentences if s.id != "objective.x0"]})
            for sec in NOTE.sections]})
        screen.view = _view(edited, version=2)
        await pilot.pause()
        assert screen.selected == "plan.x0"
        assert "version 2" in _plain(screen.query_one("#note-title", Label))
        assert f"{len(edited.open_flags)} open" in _plain(screen.query_one("#flags-title", Label))
        status = screen.query_one(StatusBar).query_one("#status", Static)
        assert f"{len(edited.open_flags)} open flags" in _plain(status)

        # the service's event stream reaches the screen as a message: it re-reads the draft
        api.view = _view(edited.model_copy(update={"title": "From the service"}), version=3)
        app.dispatch_live(LiveEvent(type="draft", encounter_id=EID))
        for _ in range(100):
            await pilot.pause(0.02)
            if screen.view.version == 3:
                break
        assert "From the service · version 3" in _plain(screen.query_one("#note-title", Label))


async def test_a_record_pass_revision_swaps_the_transcript_lines_in_place() -> None:
    """Issue 15, item 1: the record pass replaces earlier segments (new ids); the screen re-reads
    the whole transcript once and the pane swaps the lines without moving the reader's cursor."""
    revised = [s.model_copy(update={"id": f"rec-{s.index:05d}", "text": s.text + " (revised)"}) for s in SEGS[:4]]

    class RevisingApi(FakeApi):
        revisions = 0

        async def transcript(self, encounter_id: str, since: int = 0) -> TranscriptView:
            segs = [*revised, *SEGS[4:]] if self.revisions else list(SEGS)
            return TranscriptView(encounter_id=EID, status="draft_ready", segments=segs[since:],
                                  segment_count=len(SEGS), revisions=self.revisions)

    api = RevisingApi()
    app = ReviewApp(api, encounter_id=EID, live=False)  # type: ignore[arg-type]
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await _open_screen(pilot, app)
        lines = screen.query_one("#transcript", OptionList)
        lines.highlighted = 6
        await pilot.pause()
        api.revisions = 1
        app.dispatch_live(LiveEvent(type="segments", encounter_id=EID, data={"count": len(SEGS), "revisions": 1}))
        for _ in range(100):
            await pilot.pause(0.02)
            if screen.segments and screen.segments[0].id == "rec-00000":
                break
        assert [s.id for s in screen.segments] == [s.id for s in [*revised, *SEGS[4:]]]  # replaced, not appended
        assert lines.option_count == len(SEGS)
        assert lines.get_option_at_index(0).id == "rec-00000"
        assert lines.highlighted == 6  # the reader's place is kept


# ---------------------------------------------------------------------- the encounter list


def _listing(*ids: str, state_filter: ReviewState | None = None, query: str = "") -> Listing:
    from scribe.review.models import EncounterList

    rows = [EncounterSummary(id=eid, patient_ref=f"Patient/{i}", clinician_id=CLINICIAN, status="draft_ready",
                             state=ReviewState.draft_ready, created_at=NOTE.created_at, updated_at=NOTE.created_at,
                             segment_count=3, draft_version=1, sentences=4, open_flags=i)
            for i, eid in enumerate(ids)]
    counts = {s: (len(rows) if s is ReviewState.draft_ready else 0) for s in ReviewState}
    return Listing(EncounterList(encounters=rows, counts=counts), state_filter, query)


class ListHost(App[None]):
    """The list pane on its own, recording what it reports."""

    def __init__(self, pane: EncounterListPane) -> None:
        super().__init__()
        self.pane = pane
        self.received: list[Message] = []

    def compose(self) -> ComposeResult:
        yield self.pane

    def on_encounter_list_pane_encounter_chosen(self, message: EncounterListPane.EncounterChosen) -> None:
        self.received.append(message)

    def on_encounter_list_pane_query_changed(self, message: EncounterListPane.QueryChanged) -> None:
        self.received.append(message)


async def test_encounter_list_pane_renders_its_listing_and_reports_the_clinicians_moves() -> None:
    pane = EncounterListPane()
    app = ListHost(pane)
    async with app.run_test(size=(120, 30)) as pilot:
        table = pane.query_one(DataTable)
        message = pane.query_one("#list-message", Static)
        assert table.row_count == 0 and _plain(message) == ""  # nothing until the screen gives it a list
        pane.listing = _listing("enc-a", "enc-b", "enc-c")
        await pilot.pause()
        assert table.row_count == 3 and _plain(message) == ""
        assert "draft ready 3" in _plain(pane.query_one("#counts", Static))
        pane.focus()
        await pilot.press("down")
        pane.listing = _listing("enc-new", "enc-a", "enc-b", "enc-c")  # a refresh keeps the cursor's row
        await pilot.pause()
        assert pane.current_encounter() == "enc-b"
        await pilot.press("enter")
        await pilot.pause()
        assert [m.encounter_id for m in app.received] == ["enc-b"]  # type: ignore[attr-defined]
        app.received.clear()
        pane.focus_filter()
        await pilot.press(*"zz", "enter")
        await pilot.pause()
        assert [m.query for m in app.received] == ["zz"]  # type: ignore[attr-defined]
        assert table.has_focus
        pane.listing = _listing(state_filter=ReviewState.signed, query="zz")
        await pilot.pause()
        assert _plain(message) == "No signed encounters matching “zz”."
        pane.error = "the service is not reachable"
        await pilot.pause()
        assert _plain(message) == "⚠ the service is not reachable"
        pane.focus_filter()
        await pilot.press("escape")  # clears the text filter
        await pilot.pause()
        assert [m.query for m in app.received][-1] == ""  # type: ignore[attr-defined]
        assert table.has_focus and pane.query_one(Input).value == ""


async def test_encounter_list_screen_binds_its_listing_down_and_opens_the_chosen_encounter() -> None:
    from scribe.review.models import EncounterList

    class ListApi(FakeApi):
        queries: list[tuple[ReviewState | None, str | None]] = []

        async def list_encounters(self, state=None, query=None):
            self.queries.append((state, query))
            listing = _listing(EID, "enc-other")
            rows = [e for e in listing.data.encounters if not query or query in e.id]
            return EncounterList(encounters=rows, counts=listing.data.counts)

    api = ListApi()
    app = ReviewApp(api, live=False)  # type: ignore[arg-type]
    async with app.run_test(size=(160, 45)) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if isinstance(app.screen, EncounterListScreen) and app.screen.listing is not None:
                break
        screen = app.screen
        assert isinstance(screen, EncounterListScreen)
        pane = screen.query_one(EncounterListPane)
        assert pane.listing is screen.listing and screen.data is not None and len(screen.data.encounters) == 2
        pane.post_message(EncounterListPane.QueryChanged("other"))  # the pane's message: the screen fetches
        for _ in range(100):
            await pilot.pause(0.02)
            if screen.listing is not None and screen.listing.query == "other":
                break
        assert api.queries[-1] == (None, "other") and pane.query_one(DataTable).row_count == 1
        pane.post_message(EncounterListPane.EncounterChosen(EID))
        await _open_screen(pilot, app)
