"""Online speaker attribution: the pure core (embeddings and text in, labels and revisions out).

No model, audio or I/O here: the shell (``diarizer.py``) turns audio into window embeddings
and feeds them in, one committed segment at a time. The tracker keeps every segment's
embedding and, after each one, re-clusters the encounter so far:

1. **Embeddings are centred** on the encounter's running mean. Resemblyzer's d-vectors are
   non-negative and crowd into a narrow cone (two different voices often score 0.9 cosine),
   so raw thresholds do not transfer between rooms; centring removes what all voices in the
   room share and leaves what tells them apart.
2. **Two-voice split** by spherical 2-means, started from the previous assignment so labels
   stay put. An enrolled clinician profile takes part as a heavy, pinned point: the cluster
   it pulls is the clinician's. The split is kept only with evidence of a second voice:
   enough speech in each cluster and either a clear acoustic separation, or (when the
   voices are close, as synthetic voices are) a weaker one plus conversational evidence
   (a question from one cluster answered by the other) or an enrolment that one cluster
   clearly does not match. Otherwise everyone is one voice: a dictation stays one speaker.
3. **Roles**: the enrolled cluster, else the one ``roles.infer_clinician`` picks from the text,
   is the clinician; the other is the patient. (Encounters with a third voice — a relative —
   end up with the voice nearer to them; ``other`` is used for segments the caller marks.)
4. **Revisions**: labels of the last ``revise_last`` segments may change as evidence grows;
   each change is returned as data (``Revision``) for the protocol to carry. Older labels
   are frozen, so what a reader already acted on stays stable.

Segments too short to embed (< 0.4 s of voice: "yes", "mm-hm") take the voice *other* than the
previous segment's when two voices are known: a short reply after a pause is usually the
other person answering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..models import Speaker
from .roles import RoleEvidence, infer_clinician, is_question


@dataclass(frozen=True)
class TrackerConfig:
    revise_last: int = 12
    """How many of the most recent segments may still be relabelled."""
    min_speech_s: float = 8.0
    """Voiced seconds each cluster needs before a second voice is believed."""
    strong_separation: float = 0.08
    """Mean (own − other) raw centroid similarity that proves a second voice on its own."""
    weak_separation: float = 0.02
    """… or this much plus conversational evidence or a clear enrolment mismatch."""
    enrol_weight: float = 8.0
    """The enrolled profile counts as this many segments in its cluster's centroid."""
    enrol_mismatch: float = 0.2
    """Centred similarity gap to the profile that marks a cluster as not the clinician."""
    split_windows: bool = True
    """Split a segment's words at a sustained speaker change inside it (≥ 2 windows)."""
    iterations: int = 12


@dataclass(frozen=True)
class Observation:
    """One committed segment as the tracker sees it."""

    segment_id: str
    start: float
    end: float
    text: str
    windows: np.ndarray
    """(n, d) L2-normalised window embeddings (n may be 0 for a very short segment)."""
    window_spans: Sequence[tuple[float, float]] = ()
    """Encounter-time (start, end) of each window."""
    word_times: Sequence[tuple[float, float]] = ()
    """Encounter-time bounds of the segment's words, to split at a change inside it."""
    channel: int | None = None
    """When known from stereo input, the channel (= voice) that carried this segment."""


@dataclass(frozen=True)
class Revision:
    segment_id: str
    speaker: Speaker
    previous: Speaker


@dataclass(frozen=True)
class LabelUpdate:
    """What one ``observe`` call decided: the new segment's label and any revisions."""

    segment_id: str
    speaker: Speaker
    word_speakers: tuple[Speaker, ...] | None = None
    """Per-word roles when a speaker change inside the segment was detected."""
    tentative: bool = False
    """Roles are still a guess (too little evidence yet)."""
    revisions: tuple[Revision, ...] = ()


@dataclass
class _Item:
    obs: Observation
    emb: np.ndarray | None
    weight: float
    cluster: int = 0
    speaker: Speaker = Speaker.unknown
    word_speakers: tuple[Speaker, ...] | None = None


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass
class SpeakerTracker:
    """Incremental speaker labelling for one encounter (not thread-safe: one per stream)."""

    config: TrackerConfig = field(default_factory=TrackerConfig)
    clinician_profile: np.ndarray | None = None
    items: list[_Item] = field(default_factory=list)
    two_voices: bool = False
    clinician_cluster: int = 0

    # ------------------------------------------------------------------ public

    def observe(self, obs: Observation) -> LabelUpdate:
        emb = _unit(obs.windows.mean(axis=0)) if len(obs.windows) else None
        weight = float(sum(e - s for s, e in obs.window_spans)) if len(obs.windows) else 0.0
        self.items.append(_Item(obs, emb, weight))
        before = [(it.speaker, it.word_speakers) for it in self.items]
        tentative = self._relabel()
        new = self.items[-1]
        revisions = []
        first_mutable = max(0, len(self.items) - 1 - self.config.revise_last)
        for i, it in enumerate(self.items[:-1]):
            if i < first_mutable:
                it.speaker, it.word_speakers = before[i]  # frozen
                continue
            if it.speaker != before[i][0] and before[i][0] != Speaker.unknown:
                revisions.append(Revision(it.obs.segment_id, it.speaker, before[i][0]))
        return LabelUpdate(obs.segment_id, new.speaker, new.word_speakers, tentative, tuple(revisions))

    @property
    def labels(self) -> dict[str, Speaker]:
        return {it.obs.segment_id: it.speaker for it in self.items}

    @property
    def word_labels(self) -> dict[str, list[Speaker]]:
        return {it.obs.segment_id: list(it.word_speakers) for it in self.items if it.word_speakers}

    # ------------------------------------------------------------------ core

    def _relabel(self) -> bool:
        items = self.items
        if any(it.obs.channel is not None for it in items):
            clusters = np.array([it.obs.channel if it.obs.channel is not None else -1 for it in items])
            self._fill_short(clusters)
            two = len(set(clusters.tolist()) - {-1}) > 1
            centred = None
        else:
            clusters, two, centred = self._cluster()
        self.two_voices = two
        clin, tentative = self._clinician(clusters, two)
        self.clinician_cluster = clin
        for k, it in enumerate(items):
            it.cluster = int(clusters[k])
            it.speaker = Speaker.clinician if (not two or it.cluster == clin) else Speaker.patient
            it.word_speakers = None
        if two and centred is not None and self.config.split_windows:
            self._split_inside(centred, clin)
        return tentative

    def _cluster(self) -> tuple[np.ndarray, bool, tuple[np.ndarray, np.ndarray] | None]:
        cfg = self.config
        idx = [k for k, it in enumerate(self.items) if it.emb is not None]
        labels = np.full(len(self.items), -1)
        if not idx:
            return np.zeros(len(self.items), dtype=int), False, None
        E = np.stack([self.items[k].emb for k in idx])
        w = np.array([max(0.2, self.items[k].weight) for k in idx])
        mean = np.average(E, axis=0, weights=w)
        X = E - mean
        X /= np.linalg.norm(X, axis=1, keepdims=True).clip(1e-8)
        prof = None
        if self.clinician_profile is not None:
            prof = _unit(self.clinician_profile - mean)
        prev = np.array([self.items[k].cluster for k in idx])
        assign = self._two_means(X, w, prof, prev if len(idx) > 2 else None)
        # Is the split real? Judged in the raw embedding space: centring makes any split of
        # a few segments look clean, while raw similarity keeps its meaning across encounters.
        raw = [_unit(np.average(E[assign == c], axis=0, weights=w[assign == c])) if (assign == c).any() else None
               for c in (0, 1)]
        speech = [float(w[assign == c].sum()) for c in (0, 1)]
        two = False
        cents = None
        if all(c is not None for c in raw) and min(speech) >= cfg.min_speech_s:
            own = np.array([E[i] @ raw[assign[i]] for i in range(len(E))])
            other = np.array([E[i] @ raw[1 - assign[i]] for i in range(len(E))])
            sep = float(np.average(own - other, weights=w))
            if sep >= cfg.strong_separation:
                two = True
            elif sep >= cfg.weak_separation:
                two = self._answered_question(idx, assign) or self._enrol_mismatch(prof, X, assign)
            cents = np.stack([_unit(np.average(X[assign == c], axis=0, weights=w[assign == c])) for c in (0, 1)])
        labels[idx] = assign if two else 0
        self._fill_short(labels)
        return labels, two, ((mean, cents) if two and cents is not None else None)

    def _two_means(self, X: np.ndarray, w: np.ndarray, prof: np.ndarray | None, prev: np.ndarray | None) -> np.ndarray:
        """Weighted spherical 2-means; cluster 0 is the profile's when there is one."""
        cfg = self.config
        n = len(X)
        if n == 1:
            return np.zeros(1, dtype=int)
        if prev is not None and len(set(prev[prev >= 0].tolist())) == 2:
            assign = np.clip(prev, 0, 1)
        else:
            seed0 = prof if prof is not None else X[0]
            far = int(np.argmin(X @ seed0))
            assign = (X @ X[far] > X @ seed0).astype(int)
        for _ in range(cfg.iterations):
            cents: list[np.ndarray] = []
            for c in (0, 1):
                m = assign == c
                v = (X[m] * w[m, None]).sum(axis=0)
                if c == 0 and prof is not None:
                    v = v + prof * cfg.enrol_weight * float(w.mean())
                if not np.any(v):
                    v = X[int(np.argmin(X @ cents[0]))] if cents else X[0]
                cents.append(_unit(v))
            new = np.argmax(X @ np.stack(cents).T, axis=1)
            if np.array_equal(new, assign):
                break
            assign = new
        return assign

    def _answered_question(self, idx: list[int], assign: np.ndarray) -> bool:
        """Did a question from one cluster get an answer from the other (next segment)?"""
        for a, b in zip(range(len(idx) - 1), range(1, len(idx))):
            if assign[a] != assign[b] and is_question(self.items[idx[a]].obs.text):
                return True
        return False

    def _enrol_mismatch(self, prof: np.ndarray | None, X: np.ndarray, assign: np.ndarray) -> bool:
        """With a profile: is cluster 1 clearly less like the clinician than cluster 0?"""
        if prof is None:
            return False
        sims = X @ prof
        return float(sims[assign == 0].mean() - sims[assign == 1].mean()) >= self.config.enrol_mismatch

    def _fill_short(self, labels: np.ndarray) -> None:
        """Segments without an embedding: the other voice than the one before, if there are two."""
        voices = sorted(set(labels.tolist()) - {-1})
        for k in range(len(labels)):
            if labels[k] != -1:
                continue
            prev = labels[k - 1] if k > 0 else -1
            if len(voices) == 2 and prev != -1:
                labels[k] = voices[1] if prev == voices[0] else voices[0]
            else:
                labels[k] = voices[0] if voices else 0

    def _clinician(self, clusters: np.ndarray, two: bool) -> tuple[int, bool]:
        if not two:
            return int(clusters[0]) if len(clusters) else 0, False
        if self.clinician_profile is not None and not any(it.obs.channel is not None for it in self.items):
            return 0, False  # the profile's cluster, pinned in _two_means
        evidence: dict[int, RoleEvidence] = {}
        speech: dict[int, float] = {}
        for it, c in zip(self.items, clusters.tolist()):
            evidence.setdefault(c, RoleEvidence()).add(it.obs.text)
            speech[c] = speech.get(c, 0.0) + max(it.weight, it.obs.end - it.obs.start)
        if self.clinician_profile is not None:  # stereo with enrolment: the channel nearer the profile
            best, best_sim = None, -2.0
            for c in speech:
                embs = [it.emb for it, cc in zip(self.items, clusters.tolist()) if cc == c and it.emb is not None]
                if embs:
                    sim = float(_unit(np.mean(embs, axis=0)) @ self.clinician_profile)
                    if sim > best_sim:
                        best, best_sim = c, sim
            if best is not None:
                return best, False
        decision = infer_clinician(evidence, speech, clusters.tolist())
        return (decision.clinician if decision.clinician is not None else 0), not decision.confident

    def _split_inside(self, centred: tuple[np.ndarray, np.ndarray], clin: int) -> None:
        """Label words by window where ≥ 2 consecutive windows of a segment disagree with it."""
        mean, cents = centred
        for it in self.items[-self.config.revise_last - 1 :]:
            obs = it.obs
            if len(obs.windows) < 3 or not obs.word_times:
                continue
            X = obs.windows - mean
            X /= np.linalg.norm(X, axis=1, keepdims=True).clip(1e-8)
            win = np.argmax(X @ cents.T, axis=1)
            runs = _runs(win)
            if not any(c != it.cluster and n >= 2 for c, n in runs):
                continue
            # smooth runs shorter than 2 windows into their neighbours
            smoothed = []
            for c, n in runs:
                smoothed += [c if (n >= 2 or not smoothed) else smoothed[-1]] * n
            centres = np.array([(s + e) / 2 for s, e in obs.window_spans])
            roles = []
            for ws, we in obs.word_times:
                k = int(np.argmin(np.abs(centres - (ws + we) / 2)))
                roles.append(Speaker.clinician if smoothed[k] == clin else Speaker.patient)
            if len(set(roles)) > 1:
                it.word_speakers = tuple(roles)
                counts = {r: roles.count(r) for r in set(roles)}
                it.speaker = max(counts, key=counts.get)


def _runs(seq: np.ndarray) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in seq.tolist():
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out
