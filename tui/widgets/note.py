"""The note pane: the draft by section, one line per sentence, flagged ones marked.

It shows what it is given (``view``, ``cursor``) and reports the clinician's moves upward
(``SentenceHighlighted``, ``SentenceChosen``); it never decides which sentence is current, so
the screen's selection and the highlighted line cannot disagree.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from scribe.review.models import DraftView, ReviewState

from ..format import sentence_prompt
from .pane import ListPane

WAITING_STATES = (ReviewState.recording, ReviewState.drafting)
SECTION_MARK = "§"
"""Section headings' option ids start with this; they are never a cursor position."""


class NotePane(ListPane):
    """The draft under review."""

    class SentenceHighlighted(Message):
        """The clinician moved the note cursor to a sentence."""

        def __init__(self, sentence_id: str) -> None:
            super().__init__()
            self.sentence_id = sentence_id

    class SentenceChosen(Message):
        """Enter on a sentence (the screen opens it for editing)."""

        def __init__(self, sentence_id: str) -> None:
            super().__init__()
            self.sentence_id = sentence_id

    view: reactive[DraftView | None] = reactive(None, init=False)
    state: reactive[ReviewState | None] = reactive(None, init=False)
    """The encounter's state; ``None`` until it has loaded. Chooses the words shown without a draft."""
    cursor: reactive[str | None] = reactive(None, init=False)
    """The sentence id to highlight."""

    def __init__(self, *, id: str = "note-col") -> None:
        super().__init__("Note", id=id, list_id="note", heading_id="note-title")

    def watch_view(self) -> None:
        self._render_note()

    def watch_state(self) -> None:
        if self.view is None:  # with a draft the state changes nothing here
            self._render_note()

    def watch_cursor(self) -> None:
        self._show_cursor()

    def _render_note(self) -> None:
        note_list = self._list
        note_list.clear_options()
        if self.view is None:
            self.heading = "Note"
            if self.state is None:
                return
            waiting = ("The draft will appear here once it is written." if self.state in WAITING_STATES
                       else "No draft yet. Press w to write one from the transcript.")
            note_list.add_option(Option(Text(waiting, style="dim"), disabled=True))
            return
        note = self.view.note
        options: list[Option] = []
        for sec in note.sections:
            options.append(Option(Text(sec.title.upper(), style="bold #87d7ff"), id=f"{SECTION_MARK}{sec.key}",
                                  disabled=True))
            if not sec.sentences:
                options.append(Option(Text("  Nothing recorded.", style="dim"), id=f"{SECTION_MARK}{sec.key}-empty",
                                      disabled=True))
            for s in sec.sentences:
                options.append(Option(sentence_prompt(s), id=s.id))
        note_list.add_options(options)
        self.heading = f"Note · {note.title} · version {self.view.version}"
        self._show_cursor()

    def _show_cursor(self) -> None:
        if self.cursor is None:
            return
        try:
            self._list.highlighted = self._list.get_option_index(self.cursor)
        except OptionDoesNotExist:
            pass

    @on(OptionList.OptionHighlighted)
    def _moved(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        sid = event.option_id
        if not sid or sid.startswith(SECTION_MARK) or sid == self.cursor:
            return  # a heading, or the echo of showing the cursor
        if self._list.highlighted != event.option_index:
            return  # stale: the list was redrawn or moved on since
        self.post_message(self.SentenceHighlighted(sid))

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id and not event.option_id.startswith(SECTION_MARK):
            self.post_message(self.SentenceChosen(event.option_id))
