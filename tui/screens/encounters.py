"""The day's encounters: state, counts per state, filter by state or text; Enter opens one."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.widgets.data_table import CellDoesNotExist

from scribe.review.models import EncounterList, ReviewState

from ..client import ApiError
from ..format import counts_text, state_text
from ..live import LiveUpdate

STATES = list(ReviewState)


class EncounterListScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=True),
        Binding("slash", "filter", "Filter", show=True),
        Binding("0", "state(0)", "All states", show=False),
        *[Binding(str(i), f"state({i})", f"Only {s.label}", show=False) for i, s in enumerate(STATES, start=1)],
        Binding("g", "refresh", "Refresh", show=True),
        Binding("question_mark", "app.help", "Help", show=True),
        Binding("q", "app.quit", "Quit", show=True),
    ]

    def __init__(self) -> None:
        super().__init__(id="encounters")
        self.state_filter: ReviewState | None = None
        self.query_text = ""
        self.data: EncounterList | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="counts")
        yield Input(placeholder="/ filter by encounter, patient or clinician — Enter to apply, Esc to clear",
                    id="filter")
        table: DataTable[object] = DataTable(id="encounter-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("Encounter", "Patient", "State", "Started", "Flags", "Sentences", "Segments")
        yield table
        yield Static("", id="list-message")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Encounters"
        self.query_one(DataTable).focus()
        self.refresh_list()

    @work(exclusive=True, group="list", exit_on_error=False)  # a refresh racing the screen away is harmless
    async def refresh_list(self) -> None:
        message = self.query_one("#list-message", Static)
        try:
            data = await self.app.api.list_encounters(self.state_filter, self.query_text or None)  # type: ignore[attr-defined]
        except ApiError as exc:
            message.update(f"⚠ {exc}")
            return
        if not self.is_mounted:
            return  # the screen (or the app) went away while the list was fetched
        self.data = data
        self.query_one("#counts", Static).update(counts_text(data.counts, self.state_filter))
        table = self.query_one(DataTable)
        selected = None
        if table.row_count and table.cursor_row is not None:
            try:
                selected = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
            except CellDoesNotExist:
                selected = None
        table.clear()
        for e in data.encounters:
            flags = f"⚑ {e.open_flags}" if e.open_flags else "–"
            table.add_row(e.id, e.patient_ref, state_text(e.state), e.created_at.astimezone().strftime("%H:%M"),
                          flags, str(e.sentences) if e.draft_version else "–", str(e.segment_count), key=e.id)
        if selected is not None:
            for i, e in enumerate(data.encounters):
                if e.id == selected:
                    table.move_cursor(row=i)
        if not data.encounters:
            what = f" {self.state_filter.label}" if self.state_filter else ""
            message.update(f"No{what} encounters" + (f" matching “{self.query_text}”." if self.query_text else "."))
        else:
            message.update("")

    def on_live_update(self, message: LiveUpdate) -> None:
        event = message.event
        if event.type in ("encounter", "segments", "draft", "delivery"):
            self.refresh_list()

    def action_refresh(self) -> None:
        self.refresh_list()

    def action_state(self, index: int) -> None:
        self.state_filter = None if index == 0 else STATES[index - 1]
        self.refresh_list()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_text = event.value.strip()
        self.query_one(DataTable).focus()
        self.refresh_list()

    def on_key(self, event) -> None:
        filt = self.query_one("#filter", Input)
        if event.key == "escape" and filt.has_focus:
            filt.value = ""
            self.query_text = ""
            self.query_one(DataTable).focus()
            self.refresh_list()
            event.stop()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.open_encounter(event.row_key.value)  # type: ignore[attr-defined]

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        if key:
            self.app.open_encounter(key)  # type: ignore[attr-defined]
