"""The encounter list pane: counts per state, the filter line, the table of the day's encounters
and a line saying why the table is empty (or what went wrong).

It shows what it is given (``listing``: the list as fetched with the filter it was fetched with;
``error``) and reports the clinician's moves upward: ``EncounterChosen`` (Enter on a row, or
``open_current``) and ``QueryChanged`` (Enter in the filter line, or Esc to clear it). It never
fetches; the screen does, and sets ``listing`` again.
"""

from __future__ import annotations

from typing import NamedTuple, Self

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.events import Key
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import CellDoesNotExist

from scribe.review.models import EncounterList, ReviewState

from ..format import counts_text, state_text


class Listing(NamedTuple):
    """One fetched list and the filter it was fetched with (the counts line and the "no
    encounters" line describe that filter, not one typed since)."""

    data: EncounterList
    state_filter: ReviewState | None = None
    query: str = ""


def empty_text(listing: Listing) -> str:
    """What the message line says under an empty table."""
    what = f" {listing.state_filter.label}" if listing.state_filter else ""
    return f"No{what} encounters" + (f" matching “{listing.query}”." if listing.query else ".")


class EncounterListPane(Vertical):
    """The day's encounters."""

    class EncounterChosen(Message):
        """The clinician opened an encounter."""

        def __init__(self, encounter_id: str) -> None:
            super().__init__()
            self.encounter_id = encounter_id

    class QueryChanged(Message):
        """The clinician applied (Enter) or cleared (Esc) the text filter."""

        def __init__(self, query: str) -> None:
            super().__init__()
            self.query = query

    listing: reactive[Listing | None] = reactive(None, init=False, always_update=True)
    """``None`` until the first list has been fetched."""
    error: reactive[str | None] = reactive(None, init=False)
    """Why the last fetch failed; ``None`` after one that worked."""

    def __init__(self, *, id: str = "encounter-list") -> None:
        super().__init__(id=id)
        self._counts = Static("", id="counts")
        self._filter = Input(placeholder="/ filter by encounter, patient or clinician — Enter to apply, Esc to clear",
                             id="filter")
        self._table: DataTable[object] = DataTable(id="encounter-table", cursor_type="row", zebra_stripes=True)
        self._message = Static("", id="list-message")

    def compose(self) -> ComposeResult:
        self._table.add_columns("Encounter", "Patient", "State", "Started", "Flags", "Sentences", "Segments")
        yield self._counts
        yield self._filter
        yield self._table
        yield self._message

    # ------------------------------------------------------------------ rendering

    def watch_listing(self, listing: Listing | None) -> None:
        if listing is None:
            return
        data = listing.data
        self._counts.update(counts_text(data.counts, listing.state_filter))
        table = self._table
        selected = self.current_encounter()
        table.clear()
        for e in data.encounters:
            flags = f"⚑ {e.open_flags}" if e.open_flags else "–"
            table.add_row(e.id, e.patient_ref, state_text(e.state), e.created_at.astimezone().strftime("%H:%M"),
                          flags, str(e.sentences) if e.draft_version else "–", str(e.segment_count), key=e.id)
        if selected is not None:
            for i, e in enumerate(data.encounters):
                if e.id == selected:
                    table.move_cursor(row=i)
        self._render_message()

    def watch_error(self) -> None:
        self._render_message()

    def _render_message(self) -> None:
        if self.error is not None:
            self._message.update(f"⚠ {self.error}")
        elif self.listing is not None:
            self._message.update("" if self.listing.data.encounters else empty_text(self.listing))

    # ------------------------------------------------------------------ the cursor and the focus

    def current_encounter(self) -> str | None:
        """The id of the encounter under the table's cursor (``None`` in an empty table)."""
        table = self._table
        if not table.row_count or table.cursor_row is None:
            return None
        try:
            key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        except CellDoesNotExist:
            return None
        return key or None

    def open_current(self) -> None:
        """Report the encounter under the cursor as chosen (the screen's Enter)."""
        key = self.current_encounter()
        if key:
            self.post_message(self.EncounterChosen(key))

    def focus(self, scroll_visible: bool = True) -> Self:
        """Focusing the pane focuses its table."""
        self._table.focus(scroll_visible)
        return self

    def focus_filter(self) -> None:
        self._filter.focus()

    # ------------------------------------------------------------------ the clinician's moves

    @on(DataTable.RowSelected)
    def _chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(self.EncounterChosen(event.row_key.value))

    @on(Input.Submitted)
    def _filtered(self, event: Input.Submitted) -> None:
        event.stop()
        self._table.focus()
        self.post_message(self.QueryChanged(event.value.strip()))

    def on_key(self, event: Key) -> None:
        if event.key == "escape" and self._filter.has_focus:
            self._filter.value = ""
            self._table.focus()
            self.post_message(self.QueryChanged(""))
            event.stop()
