"""The service's event stream inside the app: one message per event, posted to every screen."""

from __future__ import annotations

from textual.message import Message

from scribe.review.models import LiveEvent


class LiveUpdate(Message):
    """Something changed on the service (segments, draft, progress, encounter, delivery).

    The app posts it to each screen in the stack, so a screen under a dialog keeps up too; each
    screen handles it (``on_live_update``) and fetches what it shows again.
    """

    bubble = False  # each screen gets its own copy; the app has nothing to do with it

    def __init__(self, event: LiveEvent) -> None:
        super().__init__()
        self.event = event
