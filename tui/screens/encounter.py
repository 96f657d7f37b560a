"""One encounter: transcript, the note by section, evidence for the sentence under the cursor,
the flag list, signing and delivery.

The screen keeps the latest ``DraftView`` from the API and never edits it locally: every change
is sent to the service, and what comes back (with the server's evidence, flags and version) is
what is shown. So the screen cannot drift from what would be signed.
"""

from __future__ import annotations

from rich.text import Text
from textual.css.query import NoMatches
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from scribe.models import Delivery, Note, Segment, Sentence
from scribe.review.edits import replace_sentence
from scribe.review.models import DraftView, EncounterSummary, LiveEvent, ReviewState

from ..client import ApiError
from ..format import (
    FLAG_MARK,
    delivery_words,
    evidence_ids,
    evidence_text,
    flag_prompt,
    open_flags,
    segment_prompt,
    sentence_prompt,
    state_text,
)
from .dialogs import ConfirmDialog, TextDialog

SIGNED_STATES = (ReviewState.signed, ReviewState.delivered, ReviewState.failed)


class EncounterScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("e", "edit", "Edit", show=True),
        Binding("a", "accept", "Accept flag", show=True),
        Binding("d", "delete", "Delete", show=True),
        Binding("n", "add", "New sentence", show=False),
        Binding("f", "next_flag", "Next flag", show=True),
        Binding("s", "sign", "Sign", show=True),
        Binding("A", "amend", "Amend", show=True),
        Binding("r", "retry", "Retry delivery", show=False),
        Binding("w", "write_draft", "Write draft", show=False),
        Binding("t", "focus_transcript", "Transcript", show=False),
        Binding("o", "focus_note", "Note", show=False),
        Binding("l", "focus_flags", "Flag list", show=False),
        Binding("question_mark", "app.help", "Help", show=True),
    ]

    def __init__(self, encounter_id: str):
        super().__init__(id="encounter")
        self.encounter_id = encounter_id
        self.summary: EncounterSummary | None = None
        self.view: DraftView | None = None
        self.segments: list[Segment] = []
        self.delivery: Delivery | None = None
        self._cursor_sentence: str | None = None

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="status-row"):
            yield Static("", id="status")
            yield ProgressBar(id="draft-progress", show_eta=False)
        with Horizontal(id="panes"):
            with Vertical(id="transcript-col", classes="pane"):
                yield Label("Transcript", classes="pane-title")
                yield OptionList(id="transcript")
            with Vertical(id="note-col", classes="pane"):
                yield Label("Note", classes="pane-title", id="note-title")
                yield OptionList(id="note")
            with Vertical(id="side-col"):
                with Vertical(id="evidence-box", classes="pane"):
                    yield Label("Evidence", classes="pane-title")
                    with VerticalScroll(id="evidence-scroll"):
                        yield Static("", id="evidence")
                with Vertical(id="flags-box", classes="pane"):
                    yield Label("Flags", classes="pane-title", id="flags-title")
                    yield OptionList(id="flags")
        yield Static("", id="delivery")
        yield Static("", id="message")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Encounter review"
        self.query_one("#draft-progress", ProgressBar).display = False
        self.query_one("#note", OptionList).focus()
        self.load()

    # ------------------------------------------------------------------ data

    @property
    def api(self):
        return self.app.api  # type: ignore[attr-defined]

    def say(self, message: str | Text, *, error: bool = False) -> None:
        widget = self.query_one("#message", Static)
        widget.set_class(error, "error")
        widget.update(message)

    @work(exclusive=True, group="load", exit_on_error=False)  # a refresh racing the screen away is harmless
    async def load(self) -> None:
        try:
            self.summary = await self.api.encounter(self.encounter_id)
            transcript = await self.api.transcript(self.encounter_id)
            self.segments = transcript.segments
            self.view = await self.api.draft(self.encounter_id)
            if self.summary.signed_version is not None:
                await self._load_delivery()
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.render_transcript()
        self.render_note()
        self.render_status()

    async def _load_delivery(self) -> None:
        deliveries = await self.api.deliveries(self.encounter_id)
        creates = [d for d in deliveries.deliveries if d.action == "create"]
        self.delivery = creates[-1] if creates else None
        self._show_delivery(self.delivery)

    def _show_delivery(self, delivery: Delivery | None) -> None:
        """Update the delivery line; a no-op while the screen is not (or no longer) composed,
        which happens when a worker finishes as the screen is being replaced."""
        try:
            line = self.query_one("#delivery", Static)
        except NoMatches:
            return
        line.update(Text.assemble(("Delivery  ", "bold"), delivery_words(delivery)))

    @work(exclusive=True, group="transcript", exit_on_error=False)  # a refresh racing the screen away is harmless
    async def load_more_transcript(self) -> None:
        try:
            more = await self.api.transcript(self.encounter_id, since=len(self.segments))
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        known = {s.id for s in self.segments}
        new = [s for s in more.segments if s.id not in known]
        if new:
            self.segments.extend(new)
            tl = self.query_one("#transcript", OptionList)
            tl.add_options([Option(segment_prompt(s), id=s.id) for s in new])
            if self.summary and self.summary.state is ReviewState.recording:
                tl.highlighted = tl.option_count - 1

    @work(exclusive=True, group="summary", exit_on_error=False)  # a refresh racing the screen away is harmless
    async def reload_summary(self) -> None:
        try:
            self.summary = await self.api.encounter(self.encounter_id)
            if self.summary.signed_version is not None:
                await self._load_delivery()
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.render_status()

    @work(exclusive=True, group="draft", exit_on_error=False)  # a refresh racing the screen away is harmless
    async def reload_draft(self) -> None:
        try:
            self.summary = await self.api.encounter(self.encounter_id)
            self.view = await self.api.draft(self.encounter_id)
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.render_note()
        self.render_status()

    def live(self, event: LiveEvent) -> None:
        if event.encounter_id not in (None, self.encounter_id):
            return
        if event.type == "segments":
            self.load_more_transcript()
        elif event.type == "draft":
            self.reload_draft()
        elif event.type == "draft_progress":
            self.show_progress(int(event.data.get("done", 0)), int(event.data.get("total", 0)),
                               bool(event.data.get("finished")), event.data.get("error"))
        elif event.type in ("encounter", "delivery"):
            self.reload_summary()

    # ------------------------------------------------------------------ rendering

    def render_transcript(self) -> None:
        tl = self.query_one("#transcript", OptionList)
        tl.clear_options()
        tl.add_options([Option(segment_prompt(s), id=s.id) for s in self.segments])
        if not self.segments:
            tl.add_option(Option(Text("Nothing transcribed yet.", style="dim"), disabled=True))

    def render_note(self) -> None:
        note_list = self.query_one("#note", OptionList)
        keep = self._cursor_sentence
        note_list.clear_options()
        if self.view is None:
            waiting = "The draft will appear here once it is written." if self.summary and \
                self.summary.state in (ReviewState.recording, ReviewState.drafting) else \
                "No draft yet. Press w to write one from the transcript."
            note_list.add_option(Option(Text(waiting, style="dim"), disabled=True))
            self.render_flags()
            self.render_evidence()
            return
        note = self.view.note
        options: list[Option] = []
        for sec in note.sections:
            options.append(Option(Text(sec.title.upper(), style="bold #87d7ff"), id=f"§{sec.key}", disabled=True))
            if not sec.sentences:
                options.append(Option(Text("  Nothing recorded.", style="dim"), id=f"§{sec.key}-empty",
                                      disabled=True))
            for s in sec.sentences:
                options.append(Option(sentence_prompt(s), id=s.id))
        note_list.add_options(options)
        self.query_one("#note-title", Label).update(
            f"Note · {note.title} · version {self.view.version}")
        ids = [s.id for s in note.sentences()]
        target = keep if keep in ids else (ids[0] if ids else None)
        if target is not None:
            note_list.highlighted = note_list.get_option_index(target)
        self._cursor_sentence = target
        self.render_flags()
        self.render_evidence()

    def render_flags(self) -> None:
        fl = self.query_one("#flags", OptionList)
        fl.clear_options()
        n_open = 0
        if self.view is not None:
            for sec in self.view.note.sections:
                for s in sec.sentences:
                    for i, f in enumerate(s.flags):
                        if f.resolved:
                            continue
                        n_open += 1
                        fl.add_option(Option(flag_prompt(s, f, sec.title), id=f"{s.id}#{i}"))
        if not n_open:
            fl.add_option(Option(Text("No open flags.", style="#5fd75f"), disabled=True))
        self.query_one("#flags-title", Label).update(f"Flags · {n_open} open")

    def current_sentence(self) -> Sentence | None:
        if self.view is None or self._cursor_sentence is None:
            return None
        for s in self.view.note.sentences():
            if s.id == self._cursor_sentence:
                return s
        return None

    def render_evidence(self) -> None:
        sentence = self.current_sentence()
        by_id = {s.id: s for s in self.segments}
        self.query_one("#evidence", Static).update(evidence_text(sentence, by_id))
        # the transcript follows too: the first cited line is brought into view
        ids = evidence_ids(sentence)
        tl = self.query_one("#transcript", OptionList)
        for sid in ids:
            try:
                tl.highlighted = tl.get_option_index(sid)
                break
            except Exception:
                continue

    def render_status(self) -> None:
        s = self.summary
        if s is None:
            return
        parts = Text.assemble(("Encounter ", "dim"), (s.id, "bold"), ("  ·  ", "dim"), state_text(s.state))
        if self.view is not None:
            n = self.view.open_flags
            parts.append("  ·  ", style="dim")
            parts.append(f"{FLAG_MARK} {n} open flag{'s' if n != 1 else ''}" if n else "no open flags",
                         style="bold #ff5f5f" if n else "#5fd75f")
        if s.state is ReviewState.recording:
            parts.append("  ·  recording — the transcript is live", style="#ff8787")
        self.query_one("#status", Static).update(parts)
        progress = self.view.progress if self.view else None
        if s.state is ReviewState.drafting:
            self.show_progress(progress.done if progress else 0, progress.total if progress else 0, False, None)
        elif s.state is ReviewState.recording:
            bar = self.query_one("#draft-progress", ProgressBar)
            bar.display = True
            bar.update(total=None)
        else:
            self.query_one("#draft-progress", ProgressBar).display = False
        if s.signed_version is None:
            self._show_delivery(None)

    def show_progress(self, done: int, total: int, finished: bool, error: str | None) -> None:
        bar = self.query_one("#draft-progress", ProgressBar)
        if error:
            bar.display = False
            self.say(f"⚠ {error}", error=True)
            return
        if finished:
            bar.display = False
            return
        bar.display = True
        bar.update(total=total or None, progress=done)
        self.say(f"Writing the draft… {done} of {total} transcript segments" if total else "Writing the draft…")

    # ------------------------------------------------------------------ cursor

    @on(OptionList.OptionHighlighted, "#note")
    def _note_moved(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_id and not event.option_id.startswith("§"):
            self._cursor_sentence = event.option_id
            self.render_evidence()

    @on(OptionList.OptionSelected, "#note")
    def _note_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_edit()

    @on(OptionList.OptionSelected, "#flags")
    def _flag_selected(self, event: OptionList.OptionSelected) -> None:
        if not event.option_id:
            return
        sid = event.option_id.split("#", 1)[0]
        self.goto_sentence(sid)
        self.query_one("#note", OptionList).focus()

    @on(OptionList.OptionHighlighted, "#flags")
    def _flag_moved(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_id:
            self.goto_sentence(event.option_id.split("#", 1)[0])

    def goto_sentence(self, sentence_id: str) -> None:
        note_list = self.query_one("#note", OptionList)
        try:
            note_list.highlighted = note_list.get_option_index(sentence_id)
        except Exception:
            return
        self._cursor_sentence = sentence_id
        self.render_evidence()

    def action_next_flag(self) -> None:
        if self.view is None:
            return
        flagged = [s.id for s in self.view.note.sentences() if open_flags(s)]
        if not flagged:
            self.say("No open flags: the note can be signed (s).")
            return
        ids = [s.id for s in self.view.note.sentences()]
        here = ids.index(self._cursor_sentence) if self._cursor_sentence in ids else -1
        after = [sid for sid in flagged if ids.index(sid) > here]
        self.goto_sentence((after or flagged)[0])
        self.query_one("#note", OptionList).focus()

    def action_focus_transcript(self) -> None:
        self.query_one("#transcript", OptionList).focus()

    def action_focus_note(self) -> None:
        self.query_one("#note", OptionList).focus()

    def action_focus_flags(self) -> None:
        self.query_one("#flags", OptionList).focus()

    def action_back(self) -> None:
        self.app.pop_screen()

    # ------------------------------------------------------------------ actions

    def _editable(self) -> bool:
        if self.view is None:
            self.say("There is no draft to change yet.", error=True)
            return False
        if self.summary is not None and self.summary.state in SIGNED_STATES:
            self.say("This note is signed. Press A to amend it.", error=True)
            return False
        return True

    def _flag_target(self) -> tuple[Sentence, int] | None:
        """The flag an action applies to: the one highlighted in the flag list when it has focus,
        else the first open flag of the sentence under the cursor."""
        fl = self.query_one("#flags", OptionList)
        if fl.has_focus and fl.highlighted is not None:
            oid = fl.get_option_at_index(fl.highlighted).id
            if oid and "#" in oid:
                sid, idx = oid.split("#", 1)
                self.goto_sentence(sid)
                s = self.current_sentence()
                if s is not None:
                    return s, int(idx)
        s = self.current_sentence()
        if s is None:
            return None
        for i, f in enumerate(s.flags):
            if not f.resolved:
                return s, i
        return None

    def action_edit(self) -> None:
        if not self._editable():
            return
        s = self.current_sentence()
        if s is None:
            return
        hint = "Your words replace the sentence; it is marked as clinician-authored."
        if open_flags(s):
            hint += f" This resolves its {len(open_flags(s))} open flag(s) as edited."

        def done(text: str | None) -> None:
            if text and text != s.text.strip():
                self.save_text(s.id, text, bool(open_flags(s)))

        self.app.push_screen(TextDialog("Edit sentence", value=s.text, hint=hint, id="edit-dialog"), done)

    @work(exclusive=True, group="write")
    async def save_text(self, sentence_id: str, text: str, flagged: bool) -> None:
        view = self.view
        assert view is not None
        try:
            if flagged:
                s = next(x for x in view.note.sentences() if x.id == sentence_id)
                idx = next(i for i, f in enumerate(s.flags) if not f.resolved)
                self.view = await self.api.resolve_flag(self.encounter_id, view.version, sentence_id, idx, "edited",
                                                        text=text)
            else:
                self.view = await self.api.save_draft(self.encounter_id, view.version,
                                                      _with_text(view.note, sentence_id, text))
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.say("Sentence saved.")
        self.render_note()
        self.render_status()

    def action_accept(self) -> None:
        if not self._editable():
            return
        target = self._flag_target()
        if target is None:
            self.say("This sentence has no open flag to accept.")
            return
        sentence, idx = target
        flag = sentence.flags[idx]

        def done(reason: str | None) -> None:
            if reason:
                self.resolve(sentence.id, idx, "accepted", reason=reason)

        self.app.push_screen(TextDialog("Accept flagged sentence as written", hint=f"{FLAG_MARK} {flag.message}",
                                        placeholder="Why it is right as written (required)", id="accept-dialog"),
                             done)

    @work(exclusive=True, group="write")
    async def resolve(self, sentence_id: str, idx: int, resolution: str, *, reason: str | None = None) -> None:
        view = self.view
        assert view is not None
        try:
            self.view = await self.api.resolve_flag(self.encounter_id, view.version, sentence_id, idx, resolution,
                                                    reason=reason)
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.say({"accepted": "Flag accepted.", "deleted": "Sentence deleted."}.get(resolution, "Saved."))
        self.render_note()
        self.render_status()

    def action_delete(self) -> None:
        if not self._editable():
            return
        s = self.current_sentence()
        if s is None:
            return

        def done(ok: bool | None) -> None:
            if not ok:
                return
            flags = open_flags(s)
            if flags:
                idx = next(i for i, f in enumerate(s.flags) if not f.resolved)
                self.resolve(s.id, idx, "deleted")
            else:
                self.delete_plain(s.id)

        body = Text.assemble("“", s.text, "”\n\n",
                             ("Its open flags are resolved as deleted." if open_flags(s) else "", "dim"))
        self.app.push_screen(ConfirmDialog("Delete this sentence?", body, confirm_label="Delete",
                                           id="delete-dialog"), done)

    @work(exclusive=True, group="write")
    async def delete_plain(self, sentence_id: str) -> None:
        view = self.view
        assert view is not None
        try:
            self.view = await self.api.save_draft(self.encounter_id, view.version,
                                                  _with_text(view.note, sentence_id, None))
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.say("Sentence deleted.")
        self.render_note()
        self.render_status()

    def action_add(self) -> None:
        if not self._editable():
            return
        view = self.view
        assert view is not None
        here = self._cursor_sentence

        def done(text: str | None) -> None:
            if text:
                self.add_sentence(here, text)

        self.app.push_screen(TextDialog("New sentence (after the cursor)", placeholder="Type the sentence",
                                        id="add-dialog"), done)

    @work(exclusive=True, group="write")
    async def add_sentence(self, after: str | None, text: str) -> None:
        view = self.view
        assert view is not None
        sections = []
        placed = False
        for sec in view.note.sections:
            items = []
            for s in sec.sentences:
                items.append(s)
                if s.id == after:
                    items.append(Sentence(id="", text=text))
                    placed = True
            sections.append(sec.model_copy(update={"sentences": items}))
        if not placed and sections:
            sections[-1] = sections[-1].model_copy(update={"sentences": [*sections[-1].sentences,
                                                                         Sentence(id="", text=text)]})
        try:
            self.view = await self.api.save_draft(self.encounter_id, view.version,
                                                  view.note.model_copy(update={"sections": sections}))
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.say("Sentence added.")
        self.render_note()

    def action_sign(self) -> None:
        if self.view is None:
            self.say("There is no draft to sign yet.", error=True)
            return
        if self.summary is not None and self.summary.state in SIGNED_STATES:
            self.say("This note is already signed. Press A to amend it.")
            return
        view = self.view
        n = len(view.note.sentences())
        body = Text.assemble(
            ("You are signing as ", ""), (self.app.api.actor, "bold"), ".\n\n",  # type: ignore[attr-defined]
            f"{view.note.title}, version {view.version}: {n} sentence{'s' if n != 1 else ''}.\n",
            ((f"{FLAG_MARK} {view.open_flags} flag(s) are still open: the service will refuse to sign.\n"
              if view.open_flags else "All flags resolved.\n"), "#ff8787" if view.open_flags else "#5fd75f"),
            ("\nSigning records who signed what and when, and sends the note to the EHR.", "dim"),
        )

        def done(ok: bool | None) -> None:
            if ok:
                self.sign(view.version)

        self.app.push_screen(ConfirmDialog("Sign this note?", body, id="sign-dialog"), done)

    @work(exclusive=True, group="write")
    async def sign(self, version: int) -> None:
        try:
            result = await self.api.sign(self.encounter_id, version)
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            self.app.bell()
            return
        creates = [d for d in result.deliveries if d.action == "create"]
        self.delivery = creates[-1] if creates else None
        self.say(Text.assemble(("✓ Signed", "bold #5fd75f"),
                               f" by {result.signed.signed_by} at "
                               f"{result.signed.signed_at.astimezone().strftime('%H:%M:%S')}."))
        self._show_delivery(self.delivery)
        self.reload_summary()

    def action_amend(self) -> None:
        if self.summary is None or self.summary.state not in SIGNED_STATES:
            self.say("Only a signed note can be amended.", error=True)
            return

        def done(reason: str | None) -> None:
            if reason:
                self.amend(reason)

        self.app.push_screen(TextDialog("Amend the signed note",
                                        hint="The note becomes an editable draft; signing it again replaces the "
                                             "version in the EHR.",
                                        placeholder="Reason for the amendment (required)", id="amend-dialog"), done)

    @work(exclusive=True, group="write")
    async def amend(self, reason: str) -> None:
        try:
            self.view = await self.api.amend(self.encounter_id, reason)
            self.summary = await self.api.encounter(self.encounter_id)
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.say("Amending: edit the note, then sign it again (s).")
        self.render_note()
        self.render_status()

    def action_retry(self) -> None:
        if self.delivery is None or self.delivery.state.value != "failed":
            self.say("There is no failed delivery to retry.")
            return
        self.retry(self.delivery.id)

    @work(exclusive=True, group="write")
    async def retry(self, delivery_id: str) -> None:
        try:
            await self.api.retry(delivery_id)
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.say("Delivery queued again.")
        self.reload_summary()

    def action_write_draft(self) -> None:
        if self.view is not None:
            self.say("A draft exists already.")
            return
        self.write_draft()

    @work(exclusive=True, group="write")
    async def write_draft(self) -> None:
        try:
            progress = await self.api.start_draft(self.encounter_id)
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.show_progress(progress.done, progress.total, progress.finished, progress.error)


def _with_text(note: Note, sentence_id: str, text: str | None) -> Note:
    """The note with one sentence's text changed (or the sentence removed when ``text`` is None)."""
    current = next((s for s in note.sentences() if s.id == sentence_id), None)
    if current is None:
        return note
    return replace_sentence(note, sentence_id, None if text is None else current.model_copy(update={"text": text}))
