"""The record pass of one live encounter: re-transcribe finished audio behind the live edge.

The live pass (``session.py``) decodes each utterance alone as it ends, for what the clinician
watches. Behind it, this runner reads finished audio back from the store (decrypted by the
store, as every read is) in windows of ``asr.record_window_s`` cut in a pause, decodes each the
way offline transcription does (``scribe.asr.offline.transcribe_window``: padded 30 s encoder
windows, the previous text as prompt, ``asr.record_model``) on the engine's record thread (one
decode at a time, a lower CPU priority, so the live pass keeps its latency), stores the result
(``Store.commit_record_window``: the segments and the new resume point, in one transaction) and
only then sends it as a ``revision`` event. The note drafter is fed the record pass's segments.
The rules (where a window ends, which live segments it replaces, whose speaker each new segment
carries) are pure code in ``scribe.asr.record``.

After ``stop`` the session waits for ``finish``: only the windows not yet decoded remain (at
most one during a visit that kept up). A resumed encounter, or a server restarted mid-visit,
starts from the stored resume point, so the record pass is complete and never duplicated.
A failure of the record pass never stops the recording: the live segments after the last
stored window stay the transcript, and the runner says so (``failed``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..asr.record import RecordPass, Revision, WindowPlan
from ..audio import SAMPLE_RATE
from ..models import Encounter, Segment, Speaker
from ..protocol import RevisionEvent, SpeakersEvent
from ..store import AsyncStore
from .engine import Engine
from .labelling import Hindsight

log = logging.getLogger(__name__)

Send = Callable[[Any], Awaitable[Any]]
Feed = Callable[[Sequence[Segment], dict[str, Speaker]], Awaitable[None]]
Decide = Callable[[], Awaitable[Hindsight]]


class RecordRunner:
    """One encounter's record pass (the I/O around ``scribe.asr.record.RecordPass``)."""

    def __init__(self, engine: Engine, store: AsyncStore, encounter_id: str, language: str, *, send: Send,
                 feed: Feed, hindsight: Decide | None = None):
        self.engine = engine
        self.store = store
        self.encounter_id = encounter_id
        self.language = language
        self.send = send
        self.feed = feed
        """Record segments (and label revisions of them) for the note drafter."""
        self.hindsight = hindsight
        """Before each window and at the end: the speaker labels re-decided with the whole visit
        so far (the live revisions already stored and sent by the caller), to label the record
        segments from."""
        self.state: RecordPass | None = None
        self.recognizer: Any | None = None
        self._task: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None
        self.decode_s = 0.0
        """Wall seconds spent decoding windows (for the log)."""

    async def open(self, enc: Encounter) -> None:
        """Load the record model (once per engine) and the stored progress of this encounter.
        Raises what loading raises (``ModelNotFound``): the caller runs without a record pass."""
        self.recognizer = await self.engine.record_recognizer()
        until, count, windows = await self.store.call(self.store.store.record_progress, self.encounter_id)
        record = [s for _, s in await self.store.call(self.store.store.record_segments, self.encounter_id)]
        live = await self.store.segments(self.encounter_id)
        self.state = RecordPass(window_s=self.engine.settings.asr.record_window_s, done=until, next_index=count,
                                number=windows, record=record, live=live, live_until=enc.committed_until)

    @property
    def record_segments(self) -> list[Segment]:
        return list(self.state.record) if self.state is not None else []

    async def add_live(self, segments: Sequence[Segment], until: int, revisions: dict[str, Speaker]) -> None:
        """The live pass committed ``segments`` (up to sample ``until``) and revised earlier
        labels: carry the revisions to record segments that replaced those live ones, and start
        the next window if one is due."""
        if self.state is None or self.failed is not None:
            return
        self.state.add_live(segments, until)
        await self._carry(revisions)
        if self._task is None or self._task.done():
            if self.state.next() is not None:
                self._task = asyncio.create_task(self._run(final=False), name=f"record-{self.encounter_id}")

    async def _carry(self, revisions: dict[str, Speaker]) -> None:
        """Live label revisions, carried to the record segments that replaced those live
        segments: stored, sent, and given to the drafter."""
        assert self.state is not None
        if revisions:
            await self._publish(self.state.relabel(revisions))

    async def _decide(self) -> None:
        """Labels re-decided with hindsight: the record segments relabelled from the labeller's
        word-level timeline of the whole visit, and the next windows labelled from it."""
        assert self.state is not None
        if self.hindsight is None:
            return
        decided = await self.hindsight()
        changed = self.state.relabel(decided.revisions) if decided.revisions else {}
        changed.update(self.state.set_turns(decided.turns))
        await self._publish(changed)

    async def _publish(self, changed: dict[str, Speaker]) -> None:
        """Record segments' new speakers: stored, then sent, then given to the drafter."""
        if not changed:
            return
        await self.store.call(self.store.store.relabel_record_segments, self.encounter_id, changed)
        await self.send(SpeakersEvent.of(changed))
        await self.feed([], changed)

    async def finish(self, end: int) -> None:
        """After the live pass's last segment (``end``: the last sample): the remaining windows."""
        if self.state is None:
            return
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.failed is not None:
            return
        self.state.add_live([], end)
        await self._run(final=True)
        if self.failed is None:  # the whole visit heard: decided once more
            await self._decide()

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, *, final: bool) -> None:
        assert self.state is not None
        try:
            while (plan := self.state.next(final=final)) is not None:
                await self._window(plan)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the live transcript stays; never the recording's end
            self.failed = exc
            log.error("record pass stopped: %s", type(exc).__name__, extra={"encounter": self.encounter_id})

    async def _window(self, plan: WindowPlan) -> Revision:
        from ..asr.offline import transcribe_window

        assert self.state is not None
        await self._decide()  # the window's speakers come from the best labels known
        loop = asyncio.get_running_loop()
        audio = await self.store.audio_from(self.encounter_id, plan.start, plan.end)
        prompt = self.state.prompt if self.engine.settings.asr.record_prompt else None
        t0 = loop.time()
        decoded = await loop.run_in_executor(
            self.engine.record_executor,
            lambda: transcribe_window(self.recognizer, audio, offset=plan.start / SAMPLE_RATE, prompt=prompt,
                                      language=self.language))
        self.decode_s += loop.time() - t0
        revision = self.state.accept(plan, decoded)
        # Stored first, then sent: a client never sees a revision the store does not have.
        await self.store.call(self.store.store.commit_record_window, self.encounter_id, revision.number,
                              list(revision.segments), revision.end)
        await self.send(RevisionEvent(number=revision.number, start=round(revision.start / SAMPLE_RATE, 3),
                                      end=round(revision.end / SAMPLE_RATE, 3), replaces=list(revision.replaces),
                                      segments=list(revision.segments)))
        await self.feed(list(revision.segments), {})
        log.debug("record window stored", extra={"encounter": self.encounter_id, "window": revision.number,
                                                  "audio_s": round(plan.seconds, 1),
                                                  "segments": len(revision.segments),
                                                  "replaced": len(revision.replaces)})
        return revision
