"""``scribe bench speakers``: speaker attribution error with and without enrolment, and cost.

Per file: transcribe with scribe's streaming path (the segments the server would commit;
cached as JSON beside nothing else, under ``<data_dir>/cache/speakers-bench``), label the
segments with the online diarizer, align the words to the reference turns (``scoring``)
and count words with the wrong role.

Enrolment without cheating: the clinician's profile is built from the *first* ~30 s of
that clinician's speech in the file (segments whose aligned reference words are all the
clinician's, as if recorded at an earlier enrolment), and only words spoken *after* the last
enrolment segment are scored, both with and without the profile, so the two figures cover
the same words and no scored audio was used for enrolment. The no-enrolment figure over the
whole file is reported too. Compute = CPU seconds of encoder + tracker per audio second.

Third voice (``visitor.py``): no recording has one, so each real recording is also scored
with a visitor spliced in (another recording's patient, a different person), labelled with
and without the third-voice search in the same run: the error over all words (three roles),
the share of the visitor's words labelled ``other`` and the share of everyone else's that
wrongly are.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..models import Segment, Speaker
from ..diarize.scoring import (
    Attribution,
    OtherLabels,
    align,
    attribution,
    confusion,
    hypothesis_words,
    reference_words,
    tokens,
    true_roles,
)
from ..diarize.visitor import Recording, VisitorCase, pick_visitor, visitor_sentences, voice_centroids, with_visitor

DEFAULT_FILES = [
    "../shared/eval/audio/synth_dialogue_dev_01.flac",
    *sorted(str(p) for p in Path("../shared/eval/real_audio").glob("osce_*.mp3")),
]
ENROL_SECONDS = 30.0


@dataclass
class CaseResult:
    name: str
    audio_s: float
    full: Attribution
    hindsight: Attribution
    """The same words, labels re-decided with the whole visit (the transcript of record)."""
    held_out_plain: Attribution | None
    held_out_enrolled: Attribution | None
    enrol_speech_s: float
    compute_s: float
    split_words: int


def manifest_turns(manifest: dict) -> list[tuple[str, str]]:
    rows = manifest.get("dialogue") or manifest.get("segments") or []
    return [(r["speaker"], r["text"]) for r in rows]


def streaming_segments(settings, rec, audio: np.ndarray) -> list[Segment]:
    """The segments the live server would commit (same segmenter settings; no partials)."""
    from ..asr.streaming import Committed, UtteranceTranscriber
    from ..asr.vad import StreamingVad

    asr = settings.asr
    cfg = asr.segmenter_config()
    tr = UtteranceTranscriber(rec, StreamingVad(), cfg, partial_interval_s=0, context_s=asr.context_s)
    out: list[Segment] = []
    for i in range(0, len(audio), 1600):
        out += [s for e in tr.feed(audio[i:i + 1600], allow_partial=False) if isinstance(e, Committed)
                for s in e.segments]
    out += [s for e in tr.flush() if isinstance(e, Committed) for s in e.segments]
    return out


def segments_cache_name(settings, path: Path, audio: np.ndarray) -> str:
    """Cached transcripts are keyed by model, audio length and segmenter settings."""
    import hashlib

    seg = hashlib.sha1(repr(settings.asr.segmenter_config()).encode()).hexdigest()[:8]
    return f"{path.stem}.{Path(settings.asr.model).name}.{len(audio)}.{seg}.json"


def cached_segments(settings, path: Path, audio: np.ndarray, recognizer: Callable[[], Any]) -> list[Segment]:
    """The streaming segments of ``audio``: from the benchmark's cache, else transcribed with
    ``recognizer()`` and cached."""
    cache_dir = settings.data_dir / "cache" / "speakers-bench"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / segments_cache_name(settings, path, audio)
    if cache.is_file():
        return [Segment.model_validate(s) for s in json.loads(cache.read_text())]
    segments = streaming_segments(settings, recognizer(), audio)
    cache.write_text(json.dumps([s.model_dump(mode="json") for s in segments]))
    return segments


def load_recording(path: Path, segments: list[Segment], audio: np.ndarray, *, excerpt: bool = False) -> Recording:
    """The recording with its manifest's reference words and each segment's reference role.
    ``excerpt``: the audio is the start of the recording, so the reference stops at the last
    word heard."""
    manifest = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    ref = reference_words(manifest_turns(manifest))
    hyp = hypothesis_words(segments)
    pairs = align(ref, hyp)
    if excerpt:
        ref = ref[: max(i for i, _ in pairs) + 1]
        pairs = align(ref, hyp)
    return Recording(path.stem, segments, audio, ref, _segment_truth(segments, true_roles(ref, hyp, pairs)),
                     synthetic=bool(manifest.get("synthetic", False)))


def _segment_truth(segments: list[Segment], truth: list[Speaker | None]) -> list[Speaker | None]:
    """A segment's reference role when all its aligned words share it (else None)."""
    out, k = [], 0
    for seg in segments:
        n = sum(len(tokens(w.text)) for w in seg.words) if seg.words else len(tokens(seg.text))
        roles = {r for r in truth[k:k + n] if r is not None}
        k += n
        out.append(roles.pop() if len(roles) == 1 else None)
    return out


def enrolment_audio(segments: list[Segment], seg_truth: list[Speaker | None], audio: np.ndarray,
                    seconds: float = ENROL_SECONDS) -> tuple[np.ndarray, float]:
    """The first ``seconds`` of clinician-only segments, and the time scoring starts after."""
    parts, total, until = [], 0.0, 0.0
    for seg, role in zip(segments, seg_truth):
        if total >= seconds:
            break
        if role == Speaker.clinician:
            parts.append(audio[int(seg.start * 16000):int(seg.end * 16000)])
            total += seg.end - seg.start
            until = seg.end
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)), until


def run_case(recording: Recording, encoder, *, enrol: bool = True) -> CaseResult:
    from ..diarize.diarizer import label_segments
    from ..diarize.enroll import EnrolmentError, build_profile

    segments, audio, ref = recording.segments, recording.audio, recording.reference
    t0 = time.process_time()
    labelled, d = label_segments(encoder, segments, audio)
    compute = time.process_time() - t0
    hyp = hypothesis_words(labelled, d.word_labels)
    pairs = align(ref, hyp)
    full = attribution(ref, hyp, pairs)
    split_words = sum(len(v) for v in d.word_labels.values())
    hindsight = _with_hindsight(d, segments, ref)
    plain = enrolled = None
    enrol_s = 0.0
    if enrol:
        clip, until = enrolment_audio(segments, recording.segment_roles, audio)
        try:
            profile = build_profile(encoder, "bench-clinician", clip)
        except EnrolmentError:
            profile = None
        if profile is not None:
            enrol_s = profile.speech_seconds
            later = [s for s in segments if s.start >= until]
            plain = attribution(ref, hyp, pairs, from_time=until)
            lab2, d2 = label_segments(encoder, later, audio, profile=profile)
            hyp2 = hypothesis_words(lab2, d2.word_labels)
            enrolled = attribution(ref, hyp2, align(ref, hyp2), from_time=until)
    return CaseResult(recording.name, len(audio) / 16000, full, hindsight, plain, enrolled, enrol_s, compute,
                      split_words)


def _with_hindsight(d, segments: list[Segment], ref) -> Attribution:
    """Attribution after ``d`` (which has labelled ``segments``) re-decides with hindsight."""
    d.hindsight()
    labels = d.labels
    relabelled = [s.model_copy(update={"speaker": labels.get(s.id, Speaker.unknown)}) for s in segments]
    return attribution(ref, hypothesis_words(relabelled, d.word_labels))


@dataclass
class HarderResult:
    name: str
    kind: str
    audio_s: float
    online: Attribution
    hindsight: Attribution


def run_harder_case(case, encoder) -> HarderResult:
    """A rebuilt recording (``diarize.harder``) labelled as the stream would, then with hindsight."""
    from ..diarize.diarizer import label_segments

    labelled, d = label_segments(encoder, case.segments, case.audio)
    online = attribution(case.reference, hypothesis_words(labelled, d.word_labels))
    return HarderResult(case.name, case.kind, len(case.audio) / 16000, online,
                        _with_hindsight(d, case.segments, case.reference))


@dataclass
class VisitorResult:
    name: str
    visitor_s: float
    error_plain: float
    error_third: float
    other_recall: float
    false_other: float
    visitor_words: int


def run_visitor_case(case: VisitorCase, encoder) -> VisitorResult:
    from ..diarize.diarizer import label_segments
    from ..diarize.tracker import TrackerConfig

    out = {}
    for third in (False, True):
        labelled, d = label_segments(encoder, case.segments, case.audio, config=TrackerConfig(third_voice=third))
        hyp = hypothesis_words(labelled, d.word_labels)
        out[third] = (attribution(case.reference, hyp), confusion(case.reference, hyp))
    other = OtherLabels.of(out[True][1])
    return VisitorResult(case.name, case.visitor_s, out[False][0].error, out[True][0].error,
                         other.recall, other.false_share, other.visitor_words)


def centroids_of(recordings: list[Recording], encoder) -> dict[str, dict[Speaker, np.ndarray]]:
    """Each recording's voice centroids (window embeddings, pauses cut), computed once for the
    visitor and the harder cases."""
    from ..diarize.features import voiced

    def embed(audio: np.ndarray) -> np.ndarray:
        return encoder.embed_windows(voiced(audio)).embeddings

    return {r.name: voice_centroids(r, embed) for r in recordings}


def visitor_cases(recordings: list[Recording], cents: dict[str, dict[Speaker, np.ndarray]]) -> list[VisitorCase]:
    """One constructed three-voice case per real recording that has a suitable visitor
    (``cents``: ``centroids_of(recordings, …)``)."""
    by_name = {r.name: r for r in recordings}
    cases = []
    for rec in recordings:
        other = pick_visitor(rec.name, cents)
        if other is None:
            continue
        picks = visitor_sentences(by_name[other])
        if len(picks) >= 4:
            cases.append(with_visitor(rec, by_name[other], picks))
    return cases


def run_speakers_bench(args, settings, make_recognizer, *, console) -> int:
    """``make_recognizer``: a factory for the configured recogniser (called only when a
    transcript is not cached)."""
    from rich.table import Table

    from ..audio import load_audio
    from ..diarize.encoder import load_encoder

    files = [Path(f) for f in (args.files or DEFAULT_FILES)]
    encoder = load_encoder()
    recognizer = functools.cache(make_recognizer)
    results: list[CaseResult] = []
    recordings: list[Recording] = []
    for path in files:
        audio = load_audio(path)
        if args.max_seconds:
            audio = audio[: int(args.max_seconds * 16000)]
        segments = cached_segments(settings, path, audio, recognizer)
        recording = load_recording(path, segments, audio)
        results.append(run_case(recording, encoder, enrol=not args.no_enrol))
        if not recording.synthetic:
            recordings.append(recording)
        r = results[-1]
        console.print(f"[dim]{r.name}: {len(segments)} segments, error {r.full.error:.1%}[/]")

    table = Table(title="speaker attribution error (share of aligned words with the wrong role), worst first")
    for col in ("file", "audio s", "words scored", "no enrolment (all)", "with hindsight (all)",
                "held-out: no enrolment", "held-out: enrolled", "enrol speech s", "compute s/audio s"):
        table.add_column(col, justify="right" if col != "file" else "left")
    total_full = Attribution(0, 0, 0)
    total_hind = Attribution(0, 0, 0)
    total_plain = Attribution(0, 0, 0)
    total_enr = Attribution(0, 0, 0)
    audio_s = compute_s = 0.0
    for r in sorted(results, key=lambda r: -max(r.full.error, r.hindsight.error)):
        total_full += r.full
        total_hind += r.hindsight
        if r.held_out_plain and r.held_out_enrolled:
            total_plain += r.held_out_plain
            total_enr += r.held_out_enrolled
        audio_s += r.audio_s
        compute_s += r.compute_s
        table.add_row(r.name, f"{r.audio_s:.0f}", f"{r.full.matched}/{r.full.reference_words}", f"{r.full.error:.1%}",
                      f"{r.hindsight.error:.1%}",
                      f"{r.held_out_plain.error:.1%}" if r.held_out_plain else "–",
                      f"{r.held_out_enrolled.error:.1%}" if r.held_out_enrolled else "–",
                      f"{r.enrol_speech_s:.0f}", f"{r.compute_s / r.audio_s:.4f}")
    table.add_row("all", f"{audio_s:.0f}", f"{total_full.matched}/{total_full.reference_words}",
                  f"{total_full.error:.1%}", f"{total_hind.error:.1%}", f"{total_plain.error:.1%}",
                  f"{total_enr.error:.1%}", "", f"{compute_s / audio_s:.4f}" if audio_s else "–")
    console.print(table)
    cents = centroids_of(recordings, encoder) if recordings and not (args.no_harder and args.no_visitor) else {}
    harder: list[HarderResult] = []
    if recordings and not args.no_harder:
        from ..diarize.harder import harder_cases

        for case in harder_cases(recordings, lambda r: cents[r.name]):
            harder.append(run_harder_case(case, encoder))
            console.print(f"[dim]{case.name}: error {harder[-1].online.error:.1%}, "
                          f"with hindsight {harder[-1].hindsight.error:.1%}[/]")
        ht = Table(title="harder cases rebuilt from the real recordings, worst first")
        for col in ("case", "kind", "audio s", "words scored", "online", "with hindsight"):
            ht.add_column(col, justify="left" if col in ("case", "kind") else "right")
        tot_on, tot_hi = Attribution(0, 0, 0), Attribution(0, 0, 0)
        for h in sorted(harder, key=lambda h: -max(h.online.error, h.hindsight.error)):
            tot_on += h.online
            tot_hi += h.hindsight
            ht.add_row(h.name, h.kind, f"{h.audio_s:.0f}", f"{h.online.matched}/{h.online.reference_words}",
                       f"{h.online.error:.1%}", f"{h.hindsight.error:.1%}")
        ht.add_row("all", "", f"{sum(h.audio_s for h in harder):.0f}", f"{tot_on.matched}/{tot_on.reference_words}",
                   f"{tot_on.error:.1%}", f"{tot_hi.error:.1%}")
        console.print(ht)
    visitors = ([run_visitor_case(c, encoder) for c in visitor_cases(recordings, cents)]
                if len(recordings) > 1 and not args.no_visitor else [])
    if visitors:
        vt = Table(title="third voice: a visitor (another recording's patient) joins each real recording twice")
        for col in ("recording + visitor", "visitor s", "error, 2 voices max", "error, third voice on",
                    "visitor words → other", "others' words → other"):
            vt.add_column(col, justify="right" if col != "recording + visitor" else "left")
        for v in visitors:
            vt.add_row(v.name, f"{v.visitor_s:.0f}", f"{v.error_plain:.1%}", f"{v.error_third:.1%}",
                       f"{v.other_recall:.0%}", f"{v.false_other:.1%}")
        words = sum(v.visitor_words for v in visitors) or 1
        vt.add_row("mean", f"{np.mean([v.visitor_s for v in visitors]):.0f}",
                   f"{np.mean([v.error_plain for v in visitors]):.1%}", f"{np.mean([v.error_third for v in visitors]):.1%}",
                   f"{sum(v.other_recall * v.visitor_words for v in visitors) / words:.0%}",
                   f"{np.mean([v.false_other for v in visitors]):.1%}")
        console.print(vt)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([{
            "file": r.name, "audio_s": r.audio_s, "compute_s": r.compute_s,
            "error_all": r.full.error, "matched": r.full.matched, "reference_words": r.full.reference_words,
            "error_held_out_plain": r.held_out_plain.error if r.held_out_plain else None,
            "error_held_out_enrolled": r.held_out_enrolled.error if r.held_out_enrolled else None,
            "error_hindsight": r.hindsight.error, "enrol_speech_s": r.enrol_speech_s,
        } for r in results] + [{
            "harder_case": h.name, "kind": h.kind, "audio_s": h.audio_s, "error_online": h.online.error,
            "error_hindsight": h.hindsight.error, "matched": h.online.matched,
            "reference_words": h.online.reference_words,
        } for h in harder] + [{
            "visitor_case": v.name, "visitor_s": v.visitor_s, "error_two_voices": v.error_plain,
            "error_third_voice": v.error_third, "visitor_words_other": v.other_recall,
            "others_words_other": v.false_other,
        } for v in visitors], indent=2))
    return 0
