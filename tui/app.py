"""The review app: encounter list → encounter view → sign → delivery, keyboard first.

The terminal title is always "scribe review": encounter ids, patient references and note text
appear only inside the app, never in the title (which window managers, tmux and screen
recorders copy around) and never in logs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from scribe.review.models import LiveEvent

from .client import ApiError, ReviewApi
from .live import LiveUpdate
from .screens.dialogs import HelpScreen, binding_rows
from .screens.encounter import EncounterScreen
from .screens.encounters import EncounterListScreen

log = logging.getLogger(__name__)


class ReviewApp(App[None]):
    CSS_PATH = "review.tcss"
    TITLE = "scribe review"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False),
    ]

    def __init__(self, api: ReviewApi, *, encounter_id: str | None = None, live: bool = True):
        super().__init__()
        self.api = api
        self.start_encounter = encounter_id
        self.live_updates = live
        self._events_task: asyncio.Task[None] | None = None

    def on_mount(self) -> None:
        self.title = self.TITLE
        self.push_screen(EncounterListScreen())
        if self.start_encounter:
            self.open_encounter(self.start_encounter)
        if self.live_updates:
            self._events_task = asyncio.create_task(self._follow_events())

    async def on_unmount(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
        await self.api.close()

    def open_encounter(self, encounter_id: str) -> None:
        log.info("open encounter", extra={"encounter": encounter_id})
        self.push_screen(EncounterScreen(encounter_id))

    async def _follow_events(self) -> None:
        try:
            async for event in self.api.events():
                self.dispatch_live(event)
        except asyncio.CancelledError:
            raise
        except ApiError as exc:
            self.notify(f"Live updates stopped: {exc}", severity="error", timeout=10)

    def dispatch_live(self, event: LiveEvent) -> None:
        for screen in self.screen_stack:
            screen.post_message(LiveUpdate(event))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        screen = self.screen
        sections = [(getattr(screen, "sub_title", "") or "This screen", binding_rows(list(screen.BINDINGS)))]
        sections.append(("Everywhere", [("?", "This help"), ("Ctrl+q", "Quit"), ("Tab", "Next pane"),
                                        ("↑ ↓ PgUp PgDn", "Move in a list")]))
        self.push_screen(HelpScreen(sections))
