"""The evidence pane: what was said that supports the sentence under the note cursor, and its
open and resolved flags."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from scribe.models import Segment, Sentence

from ..format import evidence_text
from .confidence import mark_segment_text
from .pane import Pane


def _marked_evidence(sentence: Sentence | None, segments: dict[str, Segment]) -> Text:
    """``evidence_text`` with the words the recogniser was unsure of marked in each quote."""
    out = evidence_text(sentence, segments)
    pos = 0
    for ev in sentence.evidence if sentence else ():
        seg = segments.get(ev.segment_id)
        quote = ev.quote.strip()
        at = out.plain.find(f"“{quote}”", pos)
        if at < 0:
            continue
        pos = at + len(quote) + 2
        start = seg.text.find(quote) if seg and seg.words and quote else -1
        if seg is not None and start >= 0:
            mark_segment_text(out, at + 1, seg, start, start + len(quote))
    return out


class EvidencePane(Pane):
    """Shows ``sentence``'s evidence, naming speakers from ``segments``."""

    sentence: reactive[Sentence | None] = reactive(None, init=False)
    segments: reactive[tuple[Segment, ...] | None] = reactive(None, init=False)
    """``None`` until the transcript has loaded; the pane stays blank until then."""

    def __init__(self, *, id: str = "evidence-box") -> None:
        super().__init__("Evidence", id=id)
        self._text = Static("", id="evidence")
        self._scroll = VerticalScroll(self._text, id="evidence-scroll")

    @property
    def body(self) -> VerticalScroll:
        return self._scroll

    def compose(self) -> ComposeResult:
        yield self._label
        yield self._scroll

    def watch_sentence(self) -> None:
        self._render_evidence()

    def watch_segments(self) -> None:
        self._render_evidence()

    def _render_evidence(self) -> None:
        if self.segments is None:
            self._text.update("")
            return
        self._text.update(_marked_evidence(self.sentence, {s.id: s for s in self.segments}))
