"""The transcript pane: one line per segment, following the live end while recording and the
evidence of the sentence under the note cursor otherwise."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets.option_list import Option, OptionDoesNotExist

from scribe.models import Segment
from scribe.review.models import ReviewState

from ..format import Hanging, segment_prompt
from .confidence import mark_segment_text
from .pane import ListPane


def _prompt(seg: Segment) -> Hanging:
    """The transcript line, with the words the recogniser was unsure of marked."""
    prompt = segment_prompt(seg)
    if seg.words:
        said = seg.text.strip()
        lead = len(seg.text) - len(seg.text.lstrip())
        mark_segment_text(prompt.body, len(prompt.body.plain) - len(said), seg, lead, lead + len(said))
    return prompt


class TranscriptPane(ListPane):
    """Shows ``segments``; highlights the first of ``cited`` that it holds, or the newest line
    when segments arrive during a recording."""

    segments: reactive[tuple[Segment, ...] | None] = reactive(None, init=False)
    """``None`` until the transcript has loaded (an empty pane, not "nothing transcribed")."""
    cited: reactive[tuple[str, ...]] = reactive((), init=False)
    """Segment ids the sentence under the note cursor cites."""
    state: reactive[ReviewState | None] = reactive(None, init=False)

    def __init__(self, *, id: str = "transcript-col") -> None:
        super().__init__("Transcript", id=id, list_id="transcript")

    def watch_segments(self, old: tuple[Segment, ...] | None, new: tuple[Segment, ...] | None) -> None:
        if old and new and new[: len(old)] == old:  # more of the same visit: append, keep the cursor
            added = new[len(old):]
            if added:
                self._list.add_options([Option(_prompt(s), id=s.id) for s in added])
                if self.state is ReviewState.recording:
                    self._list.highlighted = self._list.option_count - 1
            return
        if old and new:  # the record pass replaced earlier lines: swap them, keep the reader's place
            highlighted, scroll_y = self._list.highlighted, self._list.scroll_y
            with self.app.batch_update():
                self._list.clear_options()
                self._list.add_options([Option(_prompt(s), id=s.id) for s in new])
                if highlighted is not None:
                    self._list.highlighted = min(highlighted, len(new) - 1)
                self._list.scroll_to(y=scroll_y, animate=False)
            return
        self._list.clear_options()
        if new is None:
            return
        self._list.add_options([Option(_prompt(s), id=s.id) for s in new])
        if not new:
            self._list.add_option(Option(Text("Nothing transcribed yet.", style="dim"), disabled=True))
        self._show_cited()

    def watch_cited(self) -> None:
        self._show_cited()

    def _show_cited(self) -> None:
        for sid in self.cited:
            try:
                self._list.highlighted = self._list.get_option_index(sid)
            except OptionDoesNotExist:
                continue
            return
