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
3. **A third voice** (a relative, a carer, an interpreter) is looked for once two are
   established, as an *overlay* on the two-voice split: a segment either moves to the third
   voice or keeps its two-way voice, so believing in a visitor never reshuffles clinician and
   patient. Candidates start from each voice's smaller side along its main axis and from its
   worst-fitting segments, and grow to every segment nearer them than to both main voices.
   Only segments with ``third_min_segment_s`` of voice take part (fragments embed noisily and
   together mimic a visitor). A third voice is believed when it has ``min_other_speech_s`` of
   such speech, less than each main voice (clinician and patient do most of the talking), and
   is *strongly* separated from both; halves of one real speaker separate weakly (0.02–0.05 on
   the dev recordings, below ``strong_separation``).
4. **Roles**: the enrolled cluster, else the one ``roles.infer_clinician`` picks from the text
   of the two main voices, is the clinician; the other main voice is the patient and a third
   voice is ``other``. With stereo input the channels are the voices and ``other`` is not used.
5. **Revisions**: labels of the last ``revise_last`` segments may change as evidence grows;
   each change is returned as data (``Revision``) for the protocol to carry. Older labels
   are frozen, so what a reader already acted on stays stable.

Segments too short to embed (< 0.4 s of voice: "yes", "mm-hm") take the main voice *other* than
the last main voice heard when two voices are known: a short reply after a pause is usually the
other person answering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..models import Speaker
from .roles import RoleEvidence, infer_clinician, sounds_like_question


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
    min_answered: int = 2
    """Questions answered across a weak split needed to believe it is two voices."""
    enrol_weight: float = 8.0
    """The enrolled profile counts as this many segments in its cluster's centroid."""
    enrol_mismatch: float = 0.2
    """Centred similarity gap to the profile that marks a cluster as not the clinician."""
    third_voice: bool = True
    """Look for a third voice (a relative, an interpreter) and label it ``other``."""
    min_other_speech_s: float = 15.0
    """Voiced seconds (in segments of ``third_min_segment_s`` or more) a third voice needs
    before it is believed; both main voices must have as much. Less lets a handful of odd
    segments of one speaker pass for a visitor (seen at 8–11 s on the dev recordings)."""
    third_min_segment_s: float = 2.0
    """Only segments with this much voice (a reliable embedding) can be the third voice's."""
    third_seeds: int = 4
    """Worst-fitting segments per voice that seed the search for a third voice."""
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
class Turn:
    """A stretch of one voice inside a segment: the whole segment, or the run of its words the
    in-segment split gave one speaker (a short answer the recogniser joined to the question)."""

    segment_id: str
    start: float
    end: float
    speaker: Speaker


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
    voiced_s: float = 0.0
    """Seconds covered by the segment's embedding windows (its voiced audio)."""
    cluster: int = 0
    two_way: int = 0
    """The segment's side in the two-voice split (the next split starts from it)."""
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
    voices: int = 0
    """Distinct voices believed so far (0 before any speech, at most 3)."""
    clinician_cluster: int = 0

    @property
    def two_voices(self) -> bool:
        """At least two voices (clinician and patient) are established."""
        return self.voices >= 2

    # ------------------------------------------------------------------ public

    def observe(self, obs: Observation) -> LabelUpdate:
        emb = _unit(obs.windows.mean(axis=0)) if len(obs.windows) else None
        weight = float(sum(e - s for s, e in obs.window_spans)) if len(obs.windows) else 0.0
        self.items.append(_Item(obs, emb, weight, _covered(obs.window_spans) if len(obs.windows) else 0.0))
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

    def hindsight(self) -> tuple[Revision, ...]:
        """Re-decide every label with the whole visit so far, frozen ones included.

        ``observe`` freezes labels older than ``revise_last`` segments, so what a reader acted
        on stays put; but a label decided before the evidence was in (the first minutes, before
        a second voice was believed or the roles were clear from the conversation) then stays
        wrong for good. The transcript of record is read after the visit, not while it is acted
        on, so it can take the clustering of all the voices heard and the roles decided from
        the whole conversation. Every changed label is returned as a revision; afterwards the
        new labels are the frozen ones."""
        before = [it.speaker for it in self.items]
        self._relabel(every_segment=True)
        return tuple(Revision(it.obs.segment_id, it.speaker, b) for it, b in zip(self.items, before)
                     if it.speaker != b and b != Speaker.unknown)

    def turns(self) -> list[Turn]:
        """Who spoke when, as labelled now, at word resolution where a segment was split (the
        record pass labels its own segments, cut differently, from this)."""
        out: list[Turn] = []
        for it in self.items:
            obs = it.obs
            roles = it.word_speakers
            if not roles or len(roles) != len(obs.word_times):
                out.append(Turn(obs.segment_id, obs.start, obs.end, it.speaker))
                continue
            first = len(out)
            for (ws, we), role in zip(obs.word_times, roles):
                if len(out) > first and out[-1].speaker == role:
                    out[-1] = Turn(obs.segment_id, out[-1].start, we, role)
                else:
                    out.append(Turn(obs.segment_id, ws, we, role))
            out[first] = Turn(obs.segment_id, min(obs.start, out[first].start), out[first].end, out[first].speaker)
            out[-1] = Turn(obs.segment_id, out[-1].start, max(obs.end, out[-1].end), out[-1].speaker)
        return out

    @property
    def labels(self) -> dict[str, Speaker]:
        return {it.obs.segment_id: it.speaker for it in self.items}

    @property
    def word_labels(self) -> dict[str, list[Speaker]]:
        return {it.obs.segment_id: list(it.word_speakers) for it in self.items if it.word_speakers}

    # ------------------------------------------------------------------ core

    def _relabel(self, *, every_segment: bool = False) -> bool:
        items = self.items
        if any(it.obs.channel is not None for it in items):
            clusters = np.array([it.obs.channel if it.obs.channel is not None else -1 for it in items])
            self._fill_short(clusters)
            voices = min(2, len(set(clusters.tolist()) - {-1}))
            centred = None
        else:
            clusters, voices, centred = self._cluster()
        self.voices = voices
        clin, tentative = self._clinician(clusters, voices)
        self.clinician_cluster = clin
        for k, it in enumerate(items):
            it.cluster = int(clusters[k])
            it.speaker = self._role(it.cluster, voices, clin)
            it.word_speakers = None
        if voices > 1 and centred is not None and self.config.split_windows:
            self._split_inside(centred, clin, voices, items if every_segment else None)
        return tentative

    @staticmethod
    def _role(cluster: int, voices: int, clin: int) -> Speaker:
        if voices < 2 or cluster == clin:
            return Speaker.clinician
        return Speaker.other if cluster == _THIRD else Speaker.patient

    def _cluster(self) -> tuple[np.ndarray, int, tuple[np.ndarray, np.ndarray] | None]:
        cfg = self.config
        idx = [k for k, it in enumerate(self.items) if it.emb is not None]
        labels = np.full(len(self.items), -1)
        if not idx:
            return np.zeros(len(self.items), dtype=int), 0, None
        E = np.stack([self.items[k].emb for k in idx])
        w = np.array([max(0.2, self.items[k].weight) for k in idx])
        mean = np.average(E, axis=0, weights=w)
        X = E - mean
        X /= np.linalg.norm(X, axis=1, keepdims=True).clip(1e-8)
        prof = None
        if self.clinician_profile is not None:
            prof = _unit(self.clinician_profile - mean)
        warm = np.array([self.items[k].two_way for k in idx]) if len(idx) > 2 else None
        assign = self._two_means(X, w, prof, _initial_two(X, prof, warm))
        # Is the split real? Judged in the raw embedding space: centring makes any split of
        # a few segments look clean, while raw similarity keeps its meaning across encounters.
        speech = [float(w[assign == c].sum()) for c in (0, 1)]
        voices = 1
        if min(speech) >= cfg.min_speech_s and self._pair_ok(E, X, w, assign, idx, prof, 0, 1):
            voices = 2
        for k, c in zip(idx, assign.tolist()):
            self.items[k].two_way = c if voices > 1 else 0
        if voices == 2 and cfg.third_voice:
            was = np.array([self.items[k].cluster == _THIRD for k in idx]) if self.voices == 3 else None
            three = self._third_voice(E, X, w, assign, idx, prof, was)
            if three is not None:
                assign, voices = three, 3
        labels[idx] = assign if voices > 1 else 0
        self._fill_short(labels)
        if voices < 2:
            return labels, voices, None
        cents = np.stack([_unit(np.average(X[assign == c], axis=0, weights=w[assign == c])) for c in range(voices)])
        return labels, voices, (mean, cents)

    def _two_means(self, X: np.ndarray, w: np.ndarray, prof: np.ndarray | None, assign: np.ndarray) -> np.ndarray:
        """Weighted spherical 2-means from ``assign``; the profile is pinned to cluster 0."""
        cfg = self.config
        if len(X) == 1:
            return np.zeros(1, dtype=int)
        for _ in range(cfg.iterations):
            cents: list[np.ndarray] = []
            for c in (0, 1):
                m = assign == c
                v = (X[m] * w[m, None]).sum(axis=0)
                if c == 0 and prof is not None:
                    v = v + prof * cfg.enrol_weight * float(w.mean())
                if not np.any(v):  # an emptied cluster restarts at the point least like the other
                    v = X[int(np.argmin(X @ cents[0]))] if cents else X[0]
                cents.append(_unit(v))
            new = np.argmax(X @ np.stack(cents).T, axis=1)
            if np.array_equal(new, assign):
                break
            assign = new
        return assign

    def _pair_ok(self, E: np.ndarray, X: np.ndarray, w: np.ndarray, assign: np.ndarray, idx: list[int],
                 prof: np.ndarray | None, a: int, b: int) -> bool:
        """The two-voice test for clusters ``a`` and ``b``: a clear separation, or a weaker one
        plus conversational or enrolment evidence."""
        cfg = self.config
        sep = _separation(E, w, assign, a, b)
        if sep >= cfg.strong_separation:
            return True
        if sep < cfg.weak_separation:
            return False
        return self._answered_question(idx, assign, a, b) or self._enrol_mismatch(prof, X, assign, a, b)

    def _third_voice(self, E: np.ndarray, X: np.ndarray, w: np.ndarray, two: np.ndarray, idx: list[int],
                     prof: np.ndarray | None, was: np.ndarray | None) -> np.ndarray | None:
        """The two-way split with a third voice (``_THIRD``) carved out of it, or None.

        The third voice is an overlay: segments either move to it or keep their two-way
        voice, so believing in a visitor never reshuffles clinician and patient. Only segments
        with ``third_min_segment_s`` of voice can move: embeddings of short fragments ("um I…",
        "okay okay") are noisy, and together they sit apart from both real voices as tidily as
        a real third person would. So a visitor's "yes" keeps a main voice; their sentences
        become ``other``."""
        cfg = self.config
        voiced = np.array([self.items[k].voiced_s for k in idx])
        reliable = voiced >= cfg.third_min_segment_s
        if voiced[reliable].sum() < 3 * cfg.min_other_speech_s:
            return None
        starts: list[np.ndarray] = []
        if was is not None and (was & reliable).any():
            starts.append(was & reliable)
        for c in (0, 1):
            members = np.flatnonzero((two == c) & reliable)
            if voiced[members].sum() < 2 * cfg.min_other_speech_s or len(members) < 3:
                continue
            # the voice's main axis of variation: its smaller side starts a third voice …
            Xc = X[members] - np.average(X[members], axis=0, weights=w[members])
            Xc /= np.linalg.norm(Xc, axis=1, keepdims=True).clip(1e-8)
            side = self._two_means(Xc, w[members], None, _initial_two(Xc, None, None))
            small = int(w[members][side == 1].sum() < w[members][side == 0].sum())
            seeds = [members[side == small]]
            # … and so does each of its worst-fitting segments (where a brief visitor hides)
            fit = X[members] @ _unit(np.average(X[members], axis=0, weights=w[members]))
            seeds += [members[[k]] for k in np.argsort(fit)[: cfg.third_seeds]]
            for seed in seeds:
                start = np.zeros(len(X), dtype=bool)
                start[seed] = True
                starts.append(start)
        best, best_sep = None, 0.0
        for start in starts:
            third = self._grow_third(X, w, two, reliable, prof, start)
            if third is None:
                continue
            speech = [float(voiced[third].sum())] + [float(voiced[(two == c) & ~third].sum()) for c in (0, 1)]
            if speech[0] < cfg.min_other_speech_s or speech[0] >= min(speech[1:]):
                continue  # too little to believe, or not the smallest voice
            a3 = np.where(third, _THIRD, two)
            m = reliable
            sep = min(_separation(E[m], w[m], a3[m], 0, _THIRD), _separation(E[m], w[m], a3[m], 1, _THIRD))
            if sep < cfg.strong_separation or sep <= best_sep:
                continue
            if self._pair_ok(E, X, w, a3, idx, prof, 0, 1) and not self._talks_like_the_clinician(idx, a3):
                best, best_sep = a3, sep
        return best

    def _talks_like_the_clinician(self, idx: list[int], assign: np.ndarray) -> bool:
        """Does the candidate third voice ask and plan as much as the main voices' clinician
        does? A relative or an interpreter answers and reports; a "third voice" that takes
        the history ("did you smoke?", "are you retired?") is the clinician's own voice split
        off (the room or the microphone changed), not a visitor. The text breaks the tie the
        voice alone cannot."""
        evidence: dict[int, RoleEvidence] = {}
        for k, c in zip(idx, assign.tolist()):
            evidence.setdefault(int(c), RoleEvidence()).add(self.items[k].obs.text)
        third = evidence.get(_THIRD)
        mains = [evidence[c] for c in (0, 1) if c in evidence]
        if third is None or not mains:
            return False
        return third.score >= max(e.score for e in mains)

    def _grow_third(self, X: np.ndarray, w: np.ndarray, two: np.ndarray, reliable: np.ndarray,
                    prof: np.ndarray | None, third: np.ndarray) -> np.ndarray | None:
        """Refine a candidate third voice: a reliable segment belongs to it when it is nearer
        its centroid than both main voices' (the rest of their two-way clusters)."""
        cfg = self.config
        for _ in range(cfg.iterations):
            sums = []
            for members in (third, (two == 0) & ~third, (two == 1) & ~third):
                if not members.any():
                    return None
                sums.append((X[members] * w[members, None]).sum(axis=0))
            if prof is not None:  # pinned to main voice 0 with the same weight as in _two_means
                sums[1] = sums[1] + prof * cfg.enrol_weight * float(w.mean())
            cents = [_unit(v) for v in sums]
            if prof is not None and float(prof @ cents[0]) >= float(prof @ cents[1]):
                return None  # the enrolled clinician is a main voice
            sims = X @ np.stack(cents).T
            new = reliable & (sims[:, 0] > sims[:, 1:].max(axis=1))
            if np.array_equal(new, third):
                break
            third = new
        return third if third.any() else None

    def _answered_question(self, idx: list[int], assign: np.ndarray, a: int = 0, b: int = 1) -> bool:
        """Were at least ``min_answered`` questions from one of clusters ``a``/``b`` answered by
        the other (the next segment of the two)? One is not enough: a dictation's stray
        "any…"-sentence, or one question-shaped mis-recognition, would split a lone voice."""
        seq = [(int(c), idx[k]) for k, c in enumerate(assign.tolist()) if c in (a, b)]
        answered = sum(x != y and sounds_like_question(self.items[i].obs.text) for (x, i), (y, _) in zip(seq, seq[1:]))
        return answered >= self.config.min_answered

    def _enrol_mismatch(self, prof: np.ndarray | None, X: np.ndarray, assign: np.ndarray, a: int = 0,
                        b: int = 1) -> bool:
        """With a profile (pinned to cluster 0): is ``b`` clearly less like the clinician than 0?"""
        if prof is None or a != 0:
            return False
        sims = X @ prof
        return float(sims[assign == 0].mean() - sims[assign == b].mean()) >= self.config.enrol_mismatch

    def _fill_short(self, labels: np.ndarray) -> None:
        """Segments without an embedding: the main voice other than the last one heard, if two."""
        voices = sorted(set(labels.tolist()) - {-1})
        main = [v for v in voices if v != _THIRD] if len(voices) == 3 else voices
        for k in range(len(labels)):
            if labels[k] != -1:
                continue
            last = next((labels[j] for j in range(k - 1, -1, -1) if labels[j] in main), -1)
            if len(main) == 2 and last != -1:
                labels[k] = main[1] if last == main[0] else main[0]
            else:
                labels[k] = voices[0] if voices else 0

    def _clinician(self, clusters: np.ndarray, voices: int) -> tuple[int, bool]:
        if voices < 2:
            return int(clusters[0]) if len(clusters) else 0, False
        if self.clinician_profile is not None and not any(it.obs.channel is not None for it in self.items):
            return 0, False  # the profile's cluster, pinned in _two_means
        evidence: dict[int, RoleEvidence] = {}
        speech: dict[int, float] = {}
        for it, c in zip(self.items, clusters.tolist()):
            if voices == 3 and c == _THIRD:
                continue  # the clinician is one of the two main voices
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
        decision = infer_clinician(evidence, speech, [c for c in clusters.tolist() if c in speech])
        return (decision.clinician if decision.clinician is not None else 0), not decision.confident

    def _split_inside(self, centred: tuple[np.ndarray, np.ndarray], clin: int, voices: int,
                      items: Sequence[_Item] | None = None) -> None:
        """Label words by window where ≥ 2 consecutive windows of a segment disagree with it
        (``items``: which segments; the ones that may still be revised by default)."""
        mean, cents = centred
        for it in items if items is not None else self.items[-self.config.revise_last - 1 :]:
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
                roles.append(self._role(smoothed[k], voices, clin))
            if len(set(roles)) > 1:
                it.word_speakers = tuple(roles)
                counts = {r: roles.count(r) for r in set(roles)}
                it.speaker = max(counts, key=counts.get)


_THIRD = 2
"""Cluster id of a third voice; the two main voices are 0 and 1."""


def _initial_two(X: np.ndarray, prof: np.ndarray | None, warm: np.ndarray | None) -> np.ndarray:
    """A two-way start: the previous split, else the point least like the first one (or the
    profile) against the rest."""
    if warm is not None and len(set(warm.tolist())) == 2:
        return warm
    seed0 = prof if prof is not None else X[0]
    far = int(np.argmin(X @ seed0))
    return (X @ X[far] > X @ seed0).astype(int)


def _separation(E: np.ndarray, w: np.ndarray, assign: np.ndarray, a: int, b: int) -> float:
    """Mean (own − other) raw centroid similarity over the members of clusters ``a`` and ``b``."""
    ca = _unit(np.average(E[assign == a], axis=0, weights=w[assign == a]))
    cb = _unit(np.average(E[assign == b], axis=0, weights=w[assign == b]))
    m = (assign == a) | (assign == b)
    sa, sb = E[m] @ ca, E[m] @ cb
    own = np.where(assign[m] == a, sa, sb)
    other = np.where(assign[m] == a, sb, sa)
    return float(np.average(own - other, weights=w[m]))


def _covered(spans: Sequence[tuple[float, float]]) -> float:
    """Length of the union of (possibly overlapping) spans."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def _runs(seq: np.ndarray) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in seq.tolist():
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out
