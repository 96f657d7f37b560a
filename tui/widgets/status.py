"""The encounter's status: the line at the top (id, state, open flags, draft progress), and the
delivery and message lines at the bottom."""

from __future__ import annotations

from typing import NamedTuple

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widgets import ProgressBar, Static

from scribe.models import Delivery
from scribe.review.models import DraftView, EncounterSummary, ReviewState

from ..format import FLAG_MARK, delivery_words, state_text


class Progress(NamedTuple):
    """How far the draft is written; ``total`` 0 while unknown (the bar then just moves)."""

    done: int = 0
    total: int = 0


class Notice(NamedTuple):
    """What the message line says, and whether it is an error (shown as one)."""

    text: str | Text = ""
    error: bool = False


def status_text(summary: EncounterSummary, view: DraftView | None) -> Text:
    """Encounter id · state · open flags (once there is a draft) · recording."""
    parts = Text.assemble(("Encounter ", "dim"), (summary.id, "bold"), ("  ·  ", "dim"), state_text(summary.state))
    if view is not None:
        n = view.open_flags
        parts.append("  ·  ", style="dim")
        parts.append(f"{FLAG_MARK} {n} open flag{'s' if n != 1 else ''}" if n else "no open flags",
                     style="bold #ff5f5f" if n else "#5fd75f")
    if summary.state is ReviewState.recording:
        parts.append("  ·  recording — the transcript is live", style="#ff8787")
    return parts


class StatusBar(Horizontal):
    """The top line: ``summary`` and ``view`` in words, and a bar while ``progress`` is set."""

    summary: reactive[EncounterSummary | None] = reactive(None, init=False)
    view: reactive[DraftView | None] = reactive(None, init=False)
    progress: reactive[Progress | None] = reactive(None)
    """``None`` hides the bar."""
    line: reactive[Text | None] = reactive(None, init=False)

    def __init__(self, *, id: str = "status-row") -> None:
        super().__init__(id=id)
        self._status = Static("", id="status")
        self._bar = ProgressBar(id="draft-progress", show_eta=False)

    def compose(self) -> ComposeResult:
        yield self._status
        yield self._bar

    def compute_line(self) -> Text | None:
        return None if self.summary is None else status_text(self.summary, self.view)

    def watch_line(self, line: Text | None) -> None:
        if line is not None:  # before the encounter has loaded the line stays as it was: blank
            self._status.update(line)

    def watch_progress(self, progress: Progress | None) -> None:
        if progress is None:
            self._bar.display = False
            return
        self._bar.display = True
        self._bar.update(total=progress.total or None, progress=progress.done)


class DeliveryLine(Static):
    """Where the signed note is on its way to the EHR; blank until ``summary`` (the encounter)
    has loaded."""

    summary: reactive[EncounterSummary | None] = reactive(None, init=False)
    delivery: reactive[Delivery | None] = reactive(None, init=False)

    def __init__(self, *, id: str = "delivery") -> None:
        super().__init__("", id=id)

    def watch_summary(self) -> None:
        self._render_delivery()

    def watch_delivery(self) -> None:
        self._render_delivery()

    def _render_delivery(self) -> None:
        if self.summary is None:
            return
        # no delivery: not signed yet (the screen fetches deliveries once the note is signed, and
        # has the first one straight from the sign call, before the summary says "signed")
        self.update(Text.assemble(("Delivery  ", "bold"), delivery_words(self.delivery)))


class MessageLine(Static):
    """The last thing the screen said: the outcome of an action, or an error in its own colour."""

    notice: reactive[Notice] = reactive(Notice, init=False)

    def __init__(self, *, id: str = "message") -> None:
        super().__init__("", id=id)

    def watch_notice(self, notice: Notice) -> None:
        self.set_class(notice.error, "error")
        self.update(notice.text)
