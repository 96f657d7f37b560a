"""The day's encounters: state, counts per state, filter by state or text; Enter opens one.

The screen holds the state (the filter and the list as last fetched) as reactive attributes and
binds it down into ``EncounterListPane`` (``tui/widgets/encounter_list.py``), which renders it;
the pane reports the clinician's moves back as messages (an encounter chosen, the text filter
changed). The screen fetches; the pane never does.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Header

from scribe.review.models import EncounterList, ReviewState

from ..client import ApiError
from ..live import LiveUpdate
from ..widgets import EncounterListPane, Listing

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

    listing: reactive[Listing | None] = reactive(None, init=False, always_update=True)
    """The list as last fetched, with the filter it was fetched with; ``None`` until then."""
    error: reactive[str | None] = reactive(None, init=False)
    """Why the last fetch failed; ``None`` after one that worked."""

    def __init__(self) -> None:
        super().__init__(id="encounters")
        self.state_filter: ReviewState | None = None
        """The filter the next fetch asks for (the number keys)."""
        self.query_text = ""
        """The text filter the next fetch asks for (the filter line)."""
        self.encounter_list = EncounterListPane()

    @property
    def data(self) -> EncounterList | None:
        """The list as last fetched."""
        return self.listing.data if self.listing is not None else None

    def compose(self) -> ComposeResult:
        cls = EncounterListScreen
        yield Header()
        yield self.encounter_list.data_bind(cls.listing, cls.error)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Encounters"
        self.encounter_list.focus()
        self.refresh_list()

    @work(exclusive=True, group="list", exit_on_error=False)  # a refresh racing the screen away is harmless
    async def refresh_list(self) -> None:
        state_filter, query = self.state_filter, self.query_text
        try:
            data = await self.app.api.list_encounters(state_filter, query or None)  # type: ignore[attr-defined]
        except ApiError as exc:
            self.error = str(exc)
            return
        if not self.is_mounted:
            return  # the screen (or the app) went away while the list was fetched
        self.error = None
        self.listing = Listing(data, state_filter, query)

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
        self.encounter_list.focus_filter()

    def action_open(self) -> None:
        self.encounter_list.open_current()

    @on(EncounterListPane.QueryChanged)
    def _query_changed(self, event: EncounterListPane.QueryChanged) -> None:
        self.query_text = event.query
        self.refresh_list()

    @on(EncounterListPane.EncounterChosen)
    def _chosen(self, event: EncounterListPane.EncounterChosen) -> None:
        self.app.open_encounter(event.encounter_id)  # type: ignore[attr-defined]
