"""The encounter screen's panes: each owns its rendering through reactive attributes and reports
what the clinician did with messages; the screen holds the state and binds it down."""

from .evidence import EvidencePane
from .flags import FlagRef, FlagsPane
from .note import NotePane
from .pane import Pane
from .status import DeliveryLine, MessageLine, Notice, Progress, StatusBar
from .transcript import TranscriptPane

__all__ = [
    "DeliveryLine",
    "EvidencePane",
    "FlagRef",
    "FlagsPane",
    "MessageLine",
    "NotePane",
    "Notice",
    "Pane",
    "Progress",
    "StatusBar",
    "TranscriptPane",
]
