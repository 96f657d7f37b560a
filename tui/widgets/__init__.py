"""The review app's panes: each owns its rendering through reactive attributes and reports what
the clinician did with messages; the screen holds the state and binds it down. The encounter
list is one pane (``EncounterListPane``); the encounter view is the rest."""

from .encounter_list import EncounterListPane, Listing
from .evidence import EvidencePane
from .flags import FlagRef, FlagsPane
from .note import NotePane
from .pane import Pane
from .status import DeliveryLine, MessageLine, Notice, Progress, StatusBar
from .transcript import TranscriptPane

__all__ = [
    "DeliveryLine",
    "EncounterListPane",
    "EvidencePane",
    "FlagRef",
    "FlagsPane",
    "Listing",
    "MessageLine",
    "NotePane",
    "Notice",
    "Pane",
    "Progress",
    "StatusBar",
    "TranscriptPane",
]
