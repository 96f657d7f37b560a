"""The flag list: every open flag of the draft, where it is and what the guard said.

Moving through the list reports ``FlagHighlighted`` (the screen takes the note cursor there);
Enter reports ``FlagChosen`` (the screen also puts the focus back on the note).
"""

from __future__ import annotations

from typing import NamedTuple

from rich.text import Text
from textual import on
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from scribe.review.models import DraftView, ReviewState

from ..format import flag_prompt
from .pane import ListPane


class FlagRef(NamedTuple):
    """One flag: the sentence it is on and its index in that sentence's flags."""

    sentence_id: str
    index: int

    @property
    def option_id(self) -> str:
        return f"{self.sentence_id}#{self.index}"

    @classmethod
    def parse(cls, option_id: str | None) -> FlagRef | None:
        if not option_id or "#" not in option_id:
            return None
        sid, idx = option_id.rsplit("#", 1)
        return cls(sid, int(idx))


class FlagsPane(ListPane):
    """The open flags of ``view``."""

    class FlagHighlighted(Message):
        """The clinician moved to a flag in the list."""

        def __init__(self, flag: FlagRef) -> None:
            super().__init__()
            self.flag = flag

    class FlagChosen(Message):
        """Enter on a flag."""

        def __init__(self, flag: FlagRef) -> None:
            super().__init__()
            self.flag = flag

    view: reactive[DraftView | None] = reactive(None, init=False)
    state: reactive[ReviewState | None] = reactive(None, init=False)
    """``None`` until the encounter has loaded (an empty list, not "no open flags")."""

    def __init__(self, *, id: str = "flags-box") -> None:
        super().__init__("Flags", id=id, list_id="flags", heading_id="flags-title")

    @property
    def highlighted_flag(self) -> FlagRef | None:
        """The flag under the list's cursor while the list has the focus (what ``a`` applies to)."""
        fl = self._list
        if not fl.has_focus or fl.highlighted is None:
            return None
        return FlagRef.parse(fl.get_option_at_index(fl.highlighted).id)

    def watch_view(self) -> None:
        self._render_flags()

    def watch_state(self) -> None:
        if self.view is None:  # with a draft the state changes nothing here
            self._render_flags()

    def _render_flags(self) -> None:
        fl = self._list
        fl.clear_options()
        if self.state is None and self.view is None:
            return
        n_open = 0
        if self.view is not None:
            for sec in self.view.note.sections:
                for s in sec.sentences:
                    for i, f in enumerate(s.flags):
                        if f.resolved:
                            continue
                        n_open += 1
                        fl.add_option(Option(flag_prompt(s, f, sec.title), id=FlagRef(s.id, i).option_id))
        if not n_open:
            fl.add_option(Option(Text("No open flags.", style="#5fd75f"), disabled=True))
        self.heading = f"Flags · {n_open} open"

    @on(OptionList.OptionHighlighted)
    def _moved(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        flag = FlagRef.parse(event.option_id)
        if flag is not None:
            self.post_message(self.FlagHighlighted(flag))

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        flag = FlagRef.parse(event.option_id)
        if flag is not None:
            self.post_message(self.FlagChosen(flag))
