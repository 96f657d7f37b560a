"""Hold committed segments until their speaker labels are final.

The labeller may revise the labels of the last ``revise_last`` segments as it learns the
voices (a role flip once the clinician's questions arrive; a third voice once it has said
enough). Whatever consumes labels once — the note drafter decides "question or answer",
"patient's own medicine or a new prescription" from them — should see the final label, not
the first guess. This queue releases a segment when ``hold`` newer segments have been
committed (the tracker has frozen it by then) or at the end of the visit, with every
revision applied. Pure: no I/O, no model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from ..models import Segment, Speaker


class SettledSegments:
    def __init__(self, hold: int):
        self.hold = max(0, hold)
        self._held: OrderedDict[str, Segment] = OrderedDict()

    def push(self, segments: Iterable[Segment], revisions: Mapping[str, Speaker] = {}) -> list[Segment]:
        """Add newly committed segments and apply label revisions; return the segments whose
        labels can no longer change, oldest first."""
        for sid, speaker in revisions.items():
            if sid in self._held:
                self._held[sid] = self._held[sid].model_copy(update={"speaker": speaker})
        for seg in segments:
            self._held[seg.id] = seg
        out = []
        while len(self._held) > self.hold:
            out.append(self._held.popitem(last=False)[1])
        return out

    def flush(self) -> list[Segment]:
        """The visit is over: every label is final."""
        out = list(self._held.values())
        self._held.clear()
        return out

    def __len__(self) -> int:
        return len(self._held)
