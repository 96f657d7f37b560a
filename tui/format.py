"""Pure formatting for the review app: times, states, delivery status in plain words.

Kept apart from the widgets so the wording is tested directly and the screens stay thin.
"""

from __future__ import annotations

import re

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from scribe.models import Delivery, DeliveryState, Evidence, Flag, Segment, Sentence, Speaker
from scribe.review.models import ReviewState

STATE_STYLE = {
    ReviewState.recording: "bold #ff8787",
    ReviewState.drafting: "#ffd75f",
    ReviewState.draft_ready: "bold #87d7ff",
    ReviewState.signed: "#afd787",
    ReviewState.delivered: "bold #5fd75f",
    ReviewState.failed: "bold #ff5f5f",
}
FLAG_MARK = "⚑"
EDIT_MARK = "✎"


def clock(seconds: float) -> str:
    """Encounter time as m:ss.s (or h:mm:ss for long visits)."""
    seconds = max(0.0, seconds)
    m, s = divmod(seconds, 60)
    if m >= 60:
        h, m = divmod(int(m), 60)
        return f"{h}:{m:02d}:{int(s):02d}"
    return f"{int(m)}:{s:04.1f}"


_OTHER_COLOUR = "#d7d787"
SPEAKER_STYLE = {Speaker.clinician: "bold #87d7d7", Speaker.patient: "bold #d7afff",
                 Speaker.other: f"bold {_OTHER_COLOUR}"}
"""A colour per role, so a visitor's (``other``) lines stand out from the patient's."""


def speaker_label(speaker: Speaker) -> str:
    return "" if speaker is Speaker.unknown else speaker.value


def state_text(state: ReviewState) -> Text:
    return Text(state.label, style=STATE_STYLE.get(state, ""))


class Hanging:
    """A marker column and a body that wraps beside it (a hanging indent), so a wrapped line of a
    sentence or transcript turn never starts under the marker. ``plain`` is the text as read."""

    def __init__(self, marker: Text | str, body: Text | str, *, width: int | None = None):
        self.marker = marker if isinstance(marker, Text) else Text(marker)
        self.body = body if isinstance(body, Text) else Text(body)
        self.width = width if width is not None else self.marker.cell_len

    @property
    def plain(self) -> str:
        return self.marker.plain + self.body.plain

    def __str__(self) -> str:
        return self.plain

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        grid = Table.grid(padding=0, expand=True)
        grid.add_column(width=self.width, no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_row(self.marker, self.body)
        yield grid


def open_flags(sentence: Sentence) -> list[Flag]:
    return [f for f in sentence.flags if not f.resolved]


def sentence_prompt(sentence: Sentence) -> Hanging:
    """A note sentence as shown in the editor: flagged ones carry a mark and stand out in colour
    (the mark keeps them distinct without colour too)."""
    flags = open_flags(sentence)
    if flags:
        return Hanging(Text(f" {FLAG_MARK} ", style="bold #ff5f5f"), Text(sentence.text, style="#ffaf87"))
    if sentence.clinician_authored:
        return Hanging(Text(f" {EDIT_MARK} ", style="#87afff"), Text(sentence.text))
    return Hanging(Text("   "), Text(sentence.text))


def segment_prompt(seg: Segment) -> Hanging:
    who = speaker_label(seg.speaker)
    body = Text.assemble(
        (f"{who}: " if who else "", SPEAKER_STYLE.get(seg.speaker, "bold #87d7d7")),
        seg.text.strip(),
    )
    return Hanging(Text(clock(seg.start) + " ", style="dim"), body, width=7)


def flag_prompt(sentence: Sentence, flag: Flag, section_title: str) -> Hanging:
    """One open flag in the flag list: what kind, where, and the guard's words."""
    body = Text.assemble((flag.kind.value.replace("_", " "), "bold #ffaf87"), (f" · {section_title}\n", "dim"),
                         flag.message)
    return Hanging(Text(f"{FLAG_MARK} ", style="bold #ff5f5f"), body)


def evidence_text(sentence: Sentence | None, segments: dict[str, Segment]) -> Text:
    """The evidence pane for one sentence: each supporting transcript line with its times."""
    if sentence is None:
        return Text("Move to a sentence to see what was said.", style="dim")
    out = Text()
    if sentence.clinician_authored:
        out.append("Written or edited by the clinician.\n\n", style="italic #87afff")
    if not sentence.evidence:
        out.append("No transcript evidence for this sentence.\n\n", style="#ff8787")
    for ev in sentence.evidence:
        seg = segments.get(ev.segment_id)
        who = speaker_label(seg.speaker) if seg else ""
        out.append(f"{clock(ev.start)}–{clock(ev.end)}", style="bold")
        out.append(f"  {who}" if who else "", style=_OTHER_COLOUR if seg and seg.speaker is Speaker.other else "#d7afff")
        out.append(f"  {ev.segment_id}\n", style="dim")
        out.append(f"“{ev.quote.strip()}”\n\n")
    flags = open_flags(sentence)
    if flags:
        out.append("Open flags\n", style="bold #ff5f5f")
        for f in flags:
            out.append(f"{FLAG_MARK} {f.message}\n", style="#ffaf87")
    resolved = [f for f in sentence.flags if f.resolved]
    for f in resolved:
        reason = f" — {f.resolution_reason}" if f.resolution_reason else ""
        out.append(f"✓ {f.kind.value.replace('_', ' ')}: {f.resolution}{reason}\n", style="dim")
    return out


_HTTP = re.compile(r"\b(?:HTTP\s*)?([45]\d\d)\b")


def delivery_words(delivery: Delivery | None) -> Text:
    """Where the signed note is on its way to the EHR, in words a clinician reads at a glance."""
    if delivery is None:
        return Text("Not signed yet.", style="dim")
    if delivery.state is DeliveryState.delivered:
        where = delivery.resource_id or delivery.location or ""
        return Text.assemble(("✓ Delivered to the EHR", "bold #5fd75f"), (f"  {where}" if where else "", "dim"))
    if delivery.state is DeliveryState.failed:
        return Text.assemble(("✗ The EHR did not accept the note: ", "bold #ff5f5f"),
                             (plain_error(delivery.error), "#ffaf87"), ("  Press r to retry.", "dim"))
    if delivery.state is DeliveryState.in_flight:
        return Text(f"… Sending to the EHR (attempt {max(1, delivery.attempts)})", style="#ffd75f")
    if delivery.attempts and delivery.error:
        return Text.assemble((f"… Waiting to retry (attempt {delivery.attempts} failed: ", "#ffd75f"),
                             (plain_error(delivery.error), "#ffaf87"), (")", "#ffd75f"))
    return Text("… Queued for delivery to the EHR", style="#ffd75f")


def plain_error(error: str | None) -> str:
    """An EHR/transport error as a sentence (status codes named, not just numbered)."""
    if not error:
        return "no reason given."
    meanings = {
        "400": "it rejected the document as invalid",
        "401": "it did not accept scribe's credentials",
        "403": "scribe is not allowed to write there",
        "404": "the address is wrong",
        "409": "it conflicts with what the EHR has",
        "412": "it conflicts with what the EHR has",
        "422": "it rejected the document's content",
        "429": "it is busy (too many requests)",
        "500": "the EHR had an internal error",
        "502": "the EHR could not be reached through its gateway",
        "503": "the EHR is unavailable",
        "504": "the EHR timed out",
    }
    m = _HTTP.search(error)
    text = error.strip().rstrip(".") + "."
    if m and m.group(1) in meanings and meanings[m.group(1)] not in text:
        text = f"{meanings[m.group(1)][0].upper()}{meanings[m.group(1)][1:]} ({text})"
    return text


def counts_text(counts: dict[ReviewState, int], active: ReviewState | None) -> Text:
    """The state bar: key, state and count; the active filter is shown reversed."""
    out = Text()
    out.append(" 0 all ", style="reverse" if active is None else "dim")
    for i, state in enumerate(ReviewState, start=1):
        n = counts.get(state, 0)
        style = STATE_STYLE[state] + (" reverse" if active is state else "")
        out.append(" ")
        out.append(f" {i} {state.label} {n} ", style=style)
    return out


def evidence_ids(sentence: Sentence | None) -> list[str]:
    if sentence is None:
        return []
    return list(dict.fromkeys(e.segment_id for e in sentence.evidence))


__all__ = [
    "Evidence",
    "clock",
    "counts_text",
    "delivery_words",
    "evidence_ids",
    "evidence_text",
    "plain_error",
    "segment_prompt",
    "sentence_prompt",
    "state_text",
]
