"""``scribe eval e2e``: real recordings through the streaming path into the note.

``scribe eval notes`` drafts from benchmark dialogues: the words and the speakers are what was
said. A clinician's note is drafted from what the recogniser heard and the labeller decided.
This evaluation runs each recording the way the server does and measures what the transcript
and its labels cost the note:

* the **live pass** (the segments the server commits; cached with ``scribe bench speakers``'s
  transcripts under ``<data_dir>/cache/speakers-bench``), labelled by the online labeller and
  re-decided with hindsight (``label_segments(..., hindsight=True)``);
* the **record pass** behind it (``asr.record_pass``: long windows, the previous text as
  context; ``bench.asr._record_pass``), its segments labelled from the labeller's turns by time
  (``asr.record.relabel``), as the note drafter reads them in the server;
* the **note**, drafted by the writer from those segments, paced as a live visit
  (``draft_paced``: the llama writer reads and writes during the visit);
* the **baseline, same run**: the same writer's note from the recording's reference dialogue
  (what was said, with the true roles).

Reported per recording: ROUGE-1/2/L and clinical-fact recall/precision of the note from audio
against the note from the reference dialogue (1.0 recall: the transcript lost no fact the
writer would have used), register-clean, evidence-linked and flagged shares of both notes,
stop→draft. The OSCE recordings have no reference *note*; what is measured is the loss from
audio, not the writer's quality (``scribe eval notes`` measures that).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..models import Note, Segment

if TYPE_CHECKING:
    from ..config import Settings
    from ..notes.templates import Template
    from ..notes.writers import NoteWriter

DEFAULT_FILES = sorted(str(p) for p in Path("../shared/eval/real_audio").glob("osce_*.mp3"))


SCORE_KEYS = ("rouge1", "rouge2", "rougeL", "fact_recall", "fact_precision")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _mean(vs: list[float | None]) -> float | None:
    got = [v for v in vs if v is not None]
    return sum(got) / len(got) if got else None


@dataclass
class E2EResult:
    name: str
    audio_s: float
    live_segments: int
    record_segments: int
    asr_cpu_s: float
    """Labeller + record pass (+ the live pass when its transcript was not cached), CPU seconds."""
    scores: dict[str, float | None]
    """The note from audio against the note from the reference dialogue (``evaluation.score``)."""
    audio_checks: dict[str, float]
    reference_checks: dict[str, float]
    stop_to_draft_s: float
    reference_stop_to_draft_s: float
    audio_note: Note
    reference_note: Note


def _checks(note: Note) -> dict[str, float]:
    from ..notes.evaluation import note_checks

    c = note_checks(note)
    n = max(1, c.sentences)
    return {"sentences": float(c.sentences), "evidence_linked_pct": 100.0 * c.with_evidence / n,
            "flagged_pct": 100.0 * c.flagged / n, "register_clean_pct": 100.0 * c.register_clean / n}


def transcript_of_record(settings: Settings, path: Path, audio: Any, recognizer: Callable[[], Any],
                         record_recognizer: Callable[[], Any], encoder: Any) -> tuple[list[Segment], int, float]:
    """(record segments labelled as the server labels them, live segment count, CPU seconds)."""
    from ..asr.record import Timeline, relabel
    from ..diarize.diarizer import label_segments
    from .asr import _record_pass
    from .speakers import cached_segments

    t0 = time.process_time()
    live = cached_segments(settings, path, audio, recognizer)
    _, d = label_segments(encoder, live, audio, hindsight=True)
    if settings.asr.record_pass:
        record, *_ = _record_pass(settings, record_recognizer(), audio, live)
    else:
        record = live
    labels = relabel(record, Timeline.of(d.turns()))
    record = [s.model_copy(update={"speaker": labels.get(s.id, s.speaker)}) for s in record]
    return record, len(live), time.process_time() - t0


async def run_case(settings: Settings, path: Path, writer: NoteWriter, template: Template, *,
                   recognizer: Callable[[], Any], record_recognizer: Callable[[], Any], encoder: Any) -> E2EResult:
    from ..audio import load_audio
    from ..notes.dialogue import segments_from_turns
    from ..notes.evaluation import note_text, score
    from ..notes.writers import draft_paced

    manifest = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    audio = load_audio(path)
    record, n_live, cpu = transcript_of_record(settings, path, audio, recognizer, record_recognizer, encoder)
    heard, _, _, stop = await draft_paced(writer, record, f"e2e-{path.stem}", template)
    turns = manifest.get("dialogue") or manifest.get("segments") or []  # real recordings / synthetic audio
    said, _, _, ref_stop = await draft_paced(writer, segments_from_turns(turns), f"e2e-{path.stem}-ref", template)
    s = score(note_text(heard), note_text(said))
    scores = {k: getattr(s, k) for k in SCORE_KEYS}
    return E2EResult(path.stem, len(audio) / 16000, n_live, len(record), cpu, scores, _checks(heard), _checks(said),
                     stop, ref_stop, heard, said)


def run_e2e(args: Any, settings: Settings, writer: NoteWriter, template: Template, *,
            make_recognizer: Callable[[], Any], make_record_recognizer: Callable[[], Any], console: Any) -> int:
    import asyncio

    from rich.table import Table

    from ..diarize.encoder import load_encoder

    files = [Path(f) for f in (args.files or DEFAULT_FILES)][: args.limit or None]
    encoder = load_encoder()
    recognizer = functools.cache(make_recognizer)
    record_recognizer = functools.cache(make_record_recognizer)
    results: list[E2EResult] = []
    for path in files:
        console.print(f"[dim]{path.stem}: transcribing, labelling, drafting twice…[/]")
        r = asyncio.run(run_case(settings, path, writer, template, recognizer=recognizer,
                                 record_recognizer=record_recognizer, encoder=encoder))
        results.append(r)
        if args.save_notes is not None:
            from ..notes.evaluation import note_file_name, note_for_reading
            from ..notes.render import render_text

            args.save_notes.mkdir(parents=True, exist_ok=True)
            for system, note, other in (("from-audio", r.audio_note, r.reference_note),
                                        ("from-reference-dialogue", r.reference_note, None)):
                ref = render_text(other) if other is not None else "(this is the baseline)"
                (args.save_notes / note_file_name(f"e2e/{r.name}", system)).write_text(
                    note_for_reading(f"e2e/{r.name}", system, note, ref), encoding="utf-8")
        console.print(f"[dim]{r.name}: R-1 {100 * r.scores['rouge1']:.1f}, fact recall "
                      f"{_pct(r.scores['fact_recall'])} against the reference dialogue's note[/]")
    table = Table(title=f"end to end: real recordings → live + record pass + speaker labels → {writer.name} note, "
                        "scored against the same writer's note from the reference dialogue")
    cols = ["recording", "audio min", "R-1", "R-2", "R-L", "fact rec", "fact prec", "register % (ref)",
            "evid % (ref)", "flag % (ref)", "stop→draft s (ref)", "pipeline CPU s/s"]
    for c in cols:
        table.add_column(c, justify="left" if c == "recording" else "right")
    for r in results:
        a, b = r.audio_checks, r.reference_checks
        table.add_row(r.name, f"{r.audio_s / 60:.1f}", *[_pct(r.scores[k]) for k in SCORE_KEYS],
                      f"{a['register_clean_pct']:.0f} ({b['register_clean_pct']:.0f})",
                      f"{a['evidence_linked_pct']:.0f} ({b['evidence_linked_pct']:.0f})",
                      f"{a['flagged_pct']:.1f} ({b['flagged_pct']:.1f})",
                      f"{r.stop_to_draft_s:.1f} ({r.reference_stop_to_draft_s:.1f})", f"{r.asr_cpu_s / r.audio_s:.3f}")
    if results:
        n = len(results)
        table.add_row("mean", f"{sum(r.audio_s for r in results) / 60 / n:.1f}",
                      *[_pct(_mean([r.scores[k] for r in results])) for k in SCORE_KEYS], "", "", "", "", "")
    console.print(table)
    if args.out:
        Path(args.out).write_text(json.dumps([{
            "recording": r.name, "audio_s": r.audio_s, "live_segments": r.live_segments,
            "record_segments": r.record_segments, "asr_cpu_s": r.asr_cpu_s, **r.scores,
            "audio_note": r.audio_checks, "reference_dialogue_note": r.reference_checks,
            "stop_to_draft_s": r.stop_to_draft_s, "reference_stop_to_draft_s": r.reference_stop_to_draft_s,
        } for r in results], indent=2), encoding="utf-8")
    return 0
