"""The titled, bordered box every pane of the encounter screen is drawn in.

The children are built in ``__init__`` rather than looked up: a reactive can be set (by a data
binding, or a test) before the pane is composed, and its watcher must be able to render then.
"""

from __future__ import annotations

from typing import Self

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, OptionList


class Pane(Vertical):
    """A pane: a title line over one body widget, which takes the focus for the pane."""

    heading: reactive[str] = reactive("", init=False)
    """The title line; panes put counts and versions in it."""

    def __init__(self, heading: str, *, id: str, heading_id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self._label = Label(heading, classes="pane-title", id=heading_id)
        self.set_reactive(Pane.heading, heading)

    @property
    def body(self) -> Widget:
        """The widget that holds the pane's content (and the focus)."""
        raise NotImplementedError

    def watch_heading(self, heading: str) -> None:
        self._label.update(heading)

    def focus(self, scroll_visible: bool = True) -> Self:
        """Focusing a pane focuses its body (the pane itself is only a frame)."""
        self.body.focus(scroll_visible)
        return self


class ListPane(Pane):
    """A pane whose body is one ``OptionList`` (the note, the flags, the transcript)."""

    def __init__(self, heading: str, *, id: str, list_id: str, heading_id: str | None = None) -> None:
        super().__init__(heading, id=id, heading_id=heading_id)
        self._list = OptionList(id=list_id)

    @property
    def body(self) -> OptionList:
        return self._list

    def compose(self) -> ComposeResult:
        yield self._label
        yield self._list
