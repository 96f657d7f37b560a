"""One encounter: transcript, the note by section, evidence for the sentence under the cursor,
the flag list, signing and delivery.

The screen holds the state (the summary, transcript, latest ``DraftView``, delivery and the
selected sentence) as reactive attributes and binds it down into the panes in ``tui/widgets/``,
which render it; the panes report the clinician's moves back as messages. The screen never edits
the draft locally: every change is sent to the service, and what comes back (with the server's
evidence, flags and version) is what is shown. So the screen cannot drift from what would be signed.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Header

from scribe.models import Delivery, Segment, Sentence
from scribe.review.models import DraftView, EncounterSummary, ReviewState, with_sentence_after, with_text

from ..client import ApiError, ReviewApi
from ..format import FLAG_MARK, evidence_ids, open_flags
from ..live import LiveUpdate
from ..widgets import (
    DeliveryLine,
    EvidencePane,
    FlagsPane,
    MessageLine,
    NotePane,
    Notice,
    Progress,
    StatusBar,
    TranscriptPane,
)
from .dialogs import ConfirmDialog, TextDialog

SIGNED_STATES = (ReviewState.signed, ReviewState.delivered, ReviewState.failed)


class EncounterScreen(Screen[None]):
    """The review of one encounter; the state lives here, the panes draw it."""

    BINDINGS: ClassVar[list[BindingType]] = [
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

    summary: reactive[EncounterSummary | None] = reactive(None, init=False)
    segments: reactive[tuple[Segment, ...] | None] = reactive(None, init=False)
    """``None`` until the transcript has loaded."""
    view: reactive[DraftView | None] = reactive(None, init=False)
    """The latest draft from the service; ``None`` while there is none."""
    delivery: reactive[Delivery | None] = reactive(None, init=False)
    """The latest create delivery of the signed note."""
    selected: reactive[str | None] = reactive(None, init=False)
    """The id of the sentence under the note cursor."""
    progress: reactive[Progress | None] = reactive(None, init=False)
    notice: reactive[Notice] = reactive(Notice, init=False)
    # Derived from the above (read-only). Code here calls the helpers rather than reading these:
    # reading a computed reactive runs its watchers (and so its bindings) again.
    state: reactive[ReviewState | None] = reactive(None, init=False)
    sentence: reactive[Sentence | None] = reactive(None, init=False)
    cited: reactive[tuple[str, ...]] = reactive((), init=False)

    def __init__(self, encounter_id: str):
        super().__init__(id="encounter")
        self.encounter_id = encounter_id
        self._revisions = 0
        """Record-pass windows in the transcript shown (a change: earlier segments were replaced)."""
        # The panes the keys move the focus between, kept rather than looked up (the rest of the
        # screen talks to its panes only through bindings down and messages up).
        self.transcript_pane = TranscriptPane()
        self.note_pane = NotePane()
        self.flags_pane = FlagsPane()

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        cls = EncounterScreen
        yield Header()
        yield StatusBar().data_bind(cls.summary, cls.view, cls.progress)
        with Horizontal(id="panes"):
            yield self.transcript_pane.data_bind(cls.segments, cls.cited, cls.state)
            yield self.note_pane.data_bind(cls.view, cls.state, cursor=cls.selected)
            with Vertical(id="side-col"):
                yield EvidencePane().data_bind(cls.sentence, cls.segments)
                yield self.flags_pane.data_bind(cls.view, cls.state)
        yield DeliveryLine().data_bind(cls.summary, cls.delivery)
        yield MessageLine().data_bind(cls.notice)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Encounter review"
        self.note_pane.focus()
        self.load()

    # ------------------------------------------------------------------ state

    def compute_state(self) -> ReviewState | None:
        return self.summary.state if self.summary is not None else None

    def compute_sentence(self) -> Sentence | None:
        return self.current_sentence()

    def compute_cited(self) -> tuple[str, ...]:
        return tuple(evidence_ids(self.current_sentence()))

    def current_sentence(self) -> Sentence | None:
        """The sentence under the note cursor, in the latest draft."""
        if self.view is None or self.selected is None:
            return None
        for s in self.view.note.sentences():
            if s.id == self.selected:
                return s
        return None

    def watch_view(self, view: DraftView | None) -> None:
        """A new draft keeps the cursor on its sentence if it is still there, else goes to the first."""
        if view is not None:
            ids = [s.id for s in view.note.sentences()]
            self.selected = self.selected if self.selected in ids else (ids[0] if ids else None)
        self._sync_progress()

    def watch_summary(self) -> None:
        self._sync_progress()

    def _sync_progress(self) -> None:
        """The progress bar as the encounter's state implies: moving while recording, counting
        while drafting, hidden otherwise."""
        s = self.summary
        if s is None:
            return
        if s.state is ReviewState.drafting:
            progress = self.view.progress if self.view else None
            self.show_progress(progress.done if progress else 0, progress.total if progress else 0, False, None)
        elif s.state is ReviewState.recording:
            self.progress = Progress()
        else:
            self.progress = None

    # ------------------------------------------------------------------ data

    @property
    def api(self) -> ReviewApi:
        return self.app.api  # type: ignore[attr-defined]

    def say(self, message: str | Text, *, error: bool = False) -> None:
        self.notice = Notice(message, error)

    @work(exclusive=True, group="load", exit_on_error=False)  # a refresh racing the screen away is harmless
    async def load(self) -> None:
        try:
            summary = await self.api.encounter(self.encounter_id)
            transcript = await self.api.transcript(self.encounter_id)
            view = await self.api.draft(self.encounter_id)
            delivery = await self._latest_delivery() if summary.signed_version is not None else self.delivery
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.summary = summary
        self._revisions = transcript.revisions
        self.segments = tuple(transcript.segments)
        self.delivery = delivery
        self.view = view

    async def _latest_delivery(self) -> Delivery | None:
        deliveries = await self.api.deliveries(self.encounter_id)
        creates = [d for d in deliveries.deliveries if d.action == "create"]
        return creates[-1] if creates else None

    @work(exclusive=True, group="transcript", exit_on_error=False)  # a refresh racing the screen away is harmless
    async def load_more_transcript(self) -> None:
        known_segments = self.segments or ()
        try:
            more = await self.api.transcript(self.encounter_id, since=len(known_segments))
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        if more.revisions != self._revisions:
            # The record pass replaced earlier segments: the whole transcript again, in one
            # assignment (the pane swaps the lines in place, keeping the reader's place).
            try:
                more = await self.api.transcript(self.encounter_id)
            except ApiError as exc:
                self.say(f"⚠ {exc}", error=True)
                return
            self._revisions = more.revisions
            self.segments = tuple(more.segments)
            return
        known = {s.id for s in self.segments or ()}
        new = [s for s in more.segments if s.id not in known]
        if new:
            self.segments = (*(self.segments or ()), *new)

    @work(exclusive=True, group="summary", exit_on_error=False)  # a refresh racing the screen away is harmless
    async def reload_summary(self) -> None:
        try:
            summary = await self.api.encounter(self.encounter_id)
            delivery = await self._latest_delivery() if summary.signed_version is not None else self.delivery
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.summary = summary
        self.delivery = delivery

    @work(exclusive=True, group="draft", exit_on_error=False)  # a refresh racing the screen away is harmless
    async def reload_draft(self) -> None:
        try:
            summary = await self.api.encounter(self.encounter_id)
            view = await self.api.draft(self.encounter_id)
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.summary = summary
        self.view = view

    def on_live_update(self, message: LiveUpdate) -> None:
        event = message.event
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

    def show_progress(self, done: int, total: int, finished: bool, error: str | None) -> None:
        if error:
            self.progress = None
            self.say(f"⚠ {error}", error=True)
            return
        if finished:
            self.progress = None
            return
        self.progress = Progress(done, total)
        self.say(f"Writing the draft… {done} of {total} transcript segments" if total else "Writing the draft…")

    # ------------------------------------------------------------------ cursor

    @on(NotePane.SentenceHighlighted)
    def _note_moved(self, event: NotePane.SentenceHighlighted) -> None:
        self.selected = event.sentence_id

    @on(NotePane.SentenceChosen)
    def _note_chosen(self, event: NotePane.SentenceChosen) -> None:
        self.action_edit()

    @on(FlagsPane.FlagChosen)
    def _flag_chosen(self, event: FlagsPane.FlagChosen) -> None:
        self.goto_sentence(event.flag.sentence_id)
        self.note_pane.focus()

    @on(FlagsPane.FlagHighlighted)
    def _flag_moved(self, event: FlagsPane.FlagHighlighted) -> None:
        self.goto_sentence(event.flag.sentence_id)

    def goto_sentence(self, sentence_id: str) -> None:
        if self.view is not None and any(s.id == sentence_id for s in self.view.note.sentences()):
            self.selected = sentence_id

    def action_next_flag(self) -> None:
        if self.view is None:
            return
        flagged = [s.id for s in self.view.note.sentences() if open_flags(s)]
        if not flagged:
            self.say("No open flags: the note can be signed (s).")
            return
        ids = [s.id for s in self.view.note.sentences()]
        here = ids.index(self.selected) if self.selected in ids else -1
        after = [sid for sid in flagged if ids.index(sid) > here]
        self.goto_sentence((after or flagged)[0])
        self.note_pane.focus()

    def action_focus_transcript(self) -> None:
        self.transcript_pane.focus()

    def action_focus_note(self) -> None:
        self.note_pane.focus()

    def action_focus_flags(self) -> None:
        self.flags_pane.focus()

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
        flag = self.flags_pane.highlighted_flag
        if flag is not None:
            self.goto_sentence(flag.sentence_id)
            s = self.current_sentence()
            if s is not None:
                return s, flag.index
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
                                                      with_text(view.note, sentence_id, text))
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.say("Sentence saved.")

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
                                                  with_text(view.note, sentence_id, None))
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.say("Sentence deleted.")

    def action_add(self) -> None:
        if not self._editable():
            return
        view = self.view
        assert view is not None
        here = self.selected

        def done(text: str | None) -> None:
            if text:
                self.add_sentence(here, text)

        self.app.push_screen(TextDialog("New sentence (after the cursor)", placeholder="Type the sentence",
                                        id="add-dialog"), done)

    @work(exclusive=True, group="write")
    async def add_sentence(self, after: str | None, text: str) -> None:
        view = self.view
        assert view is not None
        try:
            self.view = await self.api.save_draft(self.encounter_id, view.version,
                                                  with_sentence_after(view.note, after, text))
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.say("Sentence added.")

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
            ("You are signing as ", ""), (self.api.actor, "bold"), ".\n\n",
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
            view = await self.api.amend(self.encounter_id, reason)
            summary = await self.api.encounter(self.encounter_id)
        except ApiError as exc:
            self.say(f"⚠ {exc}", error=True)
            return
        self.summary = summary
        self.view = view
        self.say("Amending: edit the note, then sign it again (s).")

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

