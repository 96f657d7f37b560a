"""``scribe draft`` and ``scribe eval notes``: the notes feature's command-line shell.

Thin: read a transcript (store or file), run the configured writer, print. Errors a user can
fix (unknown template, template syntax error, unreadable transcript, model not installed,
endpoint down) are ``UserError`` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings
    from ..models import Note, Transcript
    from ..notes.templates import Template
    from ..notes.writers import NoteWriter
    from ..store import Store


def register(sub: Any) -> None:
    p = sub.add_parser(
        "draft",
        help="draft a note from an encounter or a transcript file",
        description="Draft a clinical note (SOAP by default) from a stored encounter's transcript or from a "
                    "transcript file (*.transcript.json from 'scribe demo', JSONL of segments or of "
                    "{speaker, text} turns). Every sentence is printed with the transcript segments it rests on; "
                    "sentences the guard could not verify are flagged.",
    )
    p.add_argument("source", help="encounter id (read from the store) or a transcript file")
    _writer_args(p)
    p.add_argument("--markdown", action="store_true", help="print Markdown instead of plain text")
    p.add_argument("--no-flags", action="store_true", help="do not list guard flags and omissions")
    p.add_argument("--json", action="store_true", help="print the note as JSON (the lossless form)")
    p.add_argument("--save", action="store_true", help="store the draft as a new version of the encounter's note")
    p.set_defaults(func=cmd_draft)

    ev = sub.add_parser("eval", help="evaluations against reference data (figures, not pass/fail)")
    esub = ev.add_subparsers(dest="eval", metavar="EVAL", required=True)
    p = esub.add_parser(
        "notes",
        help="score drafted notes against reference notes (ROUGE, clinical facts, evidence, flags, speed)",
        description="For each record of the benchmark files (ACI-Bench, MTS-Dialog, PriMock57 JSONL: a dialogue "
                    "and a reference note), draft a note and score it: ROUGE-1/2/L, recall and precision of "
                    "clinical facts (drugs, doses, numbers with units, findings with negation; see "
                    "scribe.notes.evaluation), share of sentences with evidence, share flagged, share that is "
                    "note language (register: no questions, I/you, fillers, fragments), stop-to-draft "
                    "time, tokens/s, peak memory. The copy-transcript and extractive baselines run in the same "
                    "pass.",
    )
    p.add_argument("files", nargs="+", type=Path, help="benchmark JSONL files")
    p.add_argument("--limit", type=int, default=0, help="use only the first N records of each file")
    _writer_args(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--out", type=Path, help="also write the JSON results here")
    p.add_argument("--save-notes", type=Path, metavar="DIR",
                   help="also write every drafted note here, one Markdown file per record and writer (sentences "
                        "with their evidence ids and flags), to read what the writers produce")
    p.set_defaults(func=cmd_eval_notes)

    p = esub.add_parser(
        "e2e",
        help="real recordings → live + record pass + speaker labels → note, against the note from the "
             "reference dialogue",
        description="End to end, as the server runs it: each recording (audio with a .json manifest holding the "
                    "reference dialogue) is transcribed by the live pass (cached with 'scribe bench speakers'), "
                    "labelled by the online labeller with hindsight, transcribed again by the record pass and "
                    "drafted by the writer, paced as a live visit. The same writer's note from the reference "
                    "dialogue is the baseline, in the same run: ROUGE-1/2/L and clinical-fact recall/precision of "
                    "the note from audio against it say what transcript and label errors cost the note; register, "
                    "evidence and flag shares and stop-to-draft of both notes are printed beside.",
    )
    p.add_argument("files", nargs="*", type=Path,
                   help="audio files with a .json manifest beside them (default: ../shared/eval/real_audio/osce_*.mp3)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N recordings")
    _writer_args(p)
    p.add_argument("--model", help="ASR model of the live pass (default: configured asr.model)")
    p.add_argument("--out", type=Path, help="also write the JSON results here")
    p.add_argument("--save-notes", type=Path, metavar="DIR", help="also write both notes of every recording here")
    p.set_defaults(func=cmd_eval_e2e)


def _writer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--template", help="template name or .toml path (default: settings notes.template, 'soap')")
    p.add_argument("--writer", choices=["extractive", "llama", "transformers", "openai"],
                   help="note writer (default: settings notes.writer)")
    p.add_argument("--lm-model", help="llama writer: 'qwen2.5-coder-1.5b', 'smollm2-135m' or a .gguf file; "
                                      "transformers writer: those two or a local model directory")
    p.add_argument("--base-url", help="openai writer: endpoint base URL, e.g. http://gpu-host:8000/v1")
    p.add_argument("--openai-model", help="openai writer: model name the endpoint serves")


# --------------------------------------------------------------------------- helpers


def _settings(args: argparse.Namespace):
    from .common import settings_from_args

    settings = settings_from_args(args)
    n = settings.notes
    if getattr(args, "lm_model", None):
        n.transformers.model = args.lm_model
        n.llama.model = args.lm_model
    if getattr(args, "base_url", None):
        n.openai.base_url = args.base_url
    if getattr(args, "openai_model", None):
        n.openai.model = args.openai_model
    return settings


def _template(settings: Settings, name: str | None) -> Template:
    from .common import UserError

    from ..notes.templates import TemplateError, load_template

    try:
        return load_template(name or settings.notes.template, site_dir=settings.notes.templates_dir)
    except TemplateError as exc:
        raise UserError(f"template {exc}") from None
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None


def _writer(settings: Settings, name: str | None) -> NoteWriter:
    from .common import UserError

    from ..notes.writers import WriterError, writer_from_settings

    try:
        return writer_from_settings(settings, name)
    except WriterError as exc:
        raise UserError(str(exc)) from None


def _load_source(settings: Settings, source: str) -> tuple[Transcript, bool]:
    """(transcript, from_store)."""
    from .common import UserError

    from ..models import Transcript
    from ..notes.sources import TranscriptError, load_transcript

    path = Path(source)
    if path.suffix in (".json", ".jsonl") or path.exists():
        try:
            return load_transcript(path), False
        except TranscriptError as exc:
            raise UserError(str(exc)) from None
    from ..store import StoreError
    from ..database import open_store

    if not settings.database_path.is_file():
        raise UserError(f"{source!r} is not a file, and there is no store at {settings.database_path} to look it up in")
    try:
        store = open_store(settings)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        enc = store.get_encounter(source)
        if enc is None:
            raise UserError(f"no encounter {source!r} in {settings.database_path} (and no such file)")
        segments = store.transcript(enc.id)  # the record pass's segments where it has run
        _audit_transcript_read(store, enc.id, len(segments))  # the CLI operator reads PHI: audited like the API
        return Transcript(encounter_id=enc.id, language=enc.language, segments=segments), True
    finally:
        store.close()


def _audit_transcript_read(store: Store, encounter_id: str, segments: int) -> None:
    """``read`` of ``transcript`` by ``cli:<user>``, as ``GET …/transcript`` records it."""
    from ..trust.audit import Action, AuditLog, Outcome, as_code
    from .common import cli_actor

    AuditLog(store).record(cli_actor(argparse.Namespace()), Action.read, "transcript", as_code(encounter_id, "invalid-id"),
                           Outcome.success, {"segments": segments, "via": "cli_draft"})


# --------------------------------------------------------------------------- draft


def cmd_draft(args: argparse.Namespace) -> int:
    from .common import UserError, console, err

    from ..notes.extractive import UnsupportedLanguage
    from ..notes.render import render_markdown, render_text
    from ..notes.writers import WriterError, write_note

    settings = _settings(args)
    template = _template(settings, args.template)
    transcript, from_store = _load_source(settings, args.source)
    writer = _writer(settings, args.writer)
    segments = [s for s in transcript.segments]
    if not any(s.text.strip() for s in segments):
        err.print("[yellow]the transcript has no speech: the note is empty[/]")
    flags = not args.no_flags

    def render(note) -> str:
        if args.markdown:
            return render_markdown(note, evidence=True, flags=flags)
        return render_text(note, evidence=True, flags=flags)

    live = None
    if writer.streams and console.is_terminal and not args.json:
        from rich.live import Live
        from rich.text import Text

        live = Live(console=console, refresh_per_second=4, transient=True)
        live.start()
    drafts = 0

    def on_draft(note) -> None:
        nonlocal drafts
        drafts += 1
        if live is not None:
            live.update(Text(render(note)))
        elif writer.streams:
            err.print(f"[dim]draft {drafts}: {len(note.sentences())} sentences[/]")

    t0 = time.perf_counter()
    try:
        note, stats = asyncio.run(
            write_note(writer, segments, encounter_id=transcript.encounter_id, template=template,
                       language=transcript.language, on_draft=on_draft)
        )
    except UnsupportedLanguage as exc:
        raise UserError(str(exc)) from None
    except WriterError as exc:
        raise UserError(str(exc)) from None
    finally:
        if live is not None:
            live.stop()
    elapsed = time.perf_counter() - t0
    if args.json:
        print(note.model_dump_json(indent=2))
    elif args.markdown:
        print(render(note), end="")
    else:
        console.print(render(note), markup=False, highlight=False, end="")
    summary = f"{writer.name}: {len(note.sentences())} sentences, {len(note.open_flags)} open flags, " \
              f"{len(note.omissions)} omissions, {elapsed:.1f} s"
    if stats.tokens_per_s:
        summary += f", {stats.completion_tokens} tokens at {stats.tokens_per_s:.1f}/s"
    err.print(f"[dim]{summary}[/]")
    if args.save:
        from ..store import StoreError
        from ..database import open_store
        from ..notes.repo import NoteRepo

        if not from_store:
            err.print("[yellow]--save: the note is stored under encounter id "
                      f"{transcript.encounter_id!r} (from the file)[/]")
        try:
            store = open_store(settings)
        except StoreError as exc:
            raise UserError(str(exc)) from None
        try:
            version = NoteRepo(store).save_draft(note, actor=f"cli:{writer.name}")
        finally:
            store.close()
        err.print(f"saved as version {version} of {transcript.encounter_id}")
    return 0


# --------------------------------------------------------------------------- eval


def _records(files: list[Path], limit: int) -> list[tuple[str, dict]]:
    from .common import UserError

    out = []
    for f in files:
        if not f.is_file():
            raise UserError(f"{f}: no such file")
        n = 0
        with f.open(encoding="utf-8") as fh:
            for k, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{f}:{k}: invalid JSON ({e.msg})") from None
                if not isinstance(rec.get("dialogue"), list) or not rec.get("reference_note"):
                    raise UserError(f"{f}:{k}: a record needs 'dialogue' (turns) and 'reference_note'")
                out.append((f.stem, rec))
                n += 1
                if limit and n >= limit:
                    break
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cmd_eval_notes(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from .common import UserError, console, err

    from ..notes.dialogue import segments_from_turns
    from ..notes.completeness import without_fact_lines
    from ..notes.evaluation import SystemTotals, copy_transcript, note_checks, note_text, score
    from ..notes.writers import ExtractiveWriter, ModelMissing, WriterError, draft_paced

    settings = _settings(args)
    template = _template(settings, args.template)
    records = _records(args.files, args.limit)
    if not records:
        raise UserError("no records to evaluate")
    chosen = args.writer or settings.notes.writer
    systems: list[tuple[str, Any]] = [("copy-transcript", None), ("extractive", ExtractiveWriter())]
    if chosen != "extractive":
        systems.append((chosen, _writer(settings, chosen)))
    # the same notes without the lines written from omitted facts (notes.completeness): what
    # those lines add, measured in the same run on the same model output
    without_facts = f"{chosen} without fact lines"
    if chosen == "llama":
        systems.append((without_facts, "derived"))
    files = list(dict.fromkeys(f for f, _ in records))
    totals = {(f, name): SystemTotals(name) for f in files for name, _ in systems}
    words = {f: [] for f in files}
    per_record: list[dict[str, Any]] = []
    """Each record's figures for each drafting system: a tail (stop→draft p95) or a score
    that moved can be traced to the records that moved it."""

    async def run_all(progress, task) -> None:
        for fname, rec in records:
            segments = segments_from_turns(rec["dialogue"])
            words[fname].append(segments[-1].end if segments else 0.0)
            ref = rec["reference_note"]
            for name, writer in systems:
                t = totals[(fname, name)]
                progress.update(task, description=f"{fname} {rec['id'].split('/')[-1]} {name}")
                if writer is None:
                    t.add(score(copy_transcript(segments), ref), None)
                    continue
                if writer == "derived":
                    continue  # scored with the note it is derived from, below
                try:
                    note, stats, per_seg, stop = await draft_paced(writer, segments, rec["id"], template)
                except ModelMissing as exc:
                    raise UserError(str(exc)) from None
                except WriterError:
                    t.errors += 1
                    continue
                scores = score(note_text(note), ref)
                t.add(scores, note_checks(note))
                per_record.append({
                    "file": fname, "id": rec["id"], "system": name, "rouge1": scores.rouge1 * 100,
                    "fact_recall": scores.fact_recall * 100 if scores.fact_recall is not None else None,
                    "stop_to_draft_s": stop, "completion_tokens": stats.completion_tokens,
                    "sentences": sum(len(sec.sentences) for sec in note.sections),
                    # where the time after stop went: the model's own generation, how much it
                    # read anew, the sections it wrote after stop (the rest is checking, Python)
                    **{k: stats.extra[k] for k in ("lm_seconds", "evaluated_after_stop", "sections_after_stop",
                                                   "after_stop_limit_hit") if k in stats.extra},
                })
                if args.save_notes is not None:
                    _save_note(args.save_notes, rec["id"], name, note, ref)
                if (fname, without_facts) in totals and name == chosen:
                    bare = without_fact_lines(note)
                    totals[(fname, without_facts)].add(score(note_text(bare), ref), note_checks(bare))
                t.stop_to_draft.append(stop)
                t.incremental_per_segment.append(per_seg)
                t.completion_tokens += stats.completion_tokens
                t.generate_seconds += stats.extra.get("lm_seconds", stats.generate_seconds)
                t.lm_sentences += stats.lm_sentences
                t.repaired += stats.repaired
                t.peak_rss_mb = max(t.peak_rss_mb, _peak_rss_mb())
                visit_lm = stats.extra.get("feed_seconds", 0.0) + stats.extra.get("visit_write_seconds", 0.0)
                if visit_lm:
                    t.visit_lm_seconds += visit_lm
                    t.visit_seconds += segments[-1].end if segments else 0.0
                if "sections_after_stop" in stats.extra:
                    t.sections_after_stop.append(stats.extra["sections_after_stop"])
            progress.advance(task)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("eval", total=len(records))
        asyncio.run(run_all(progress, task))

    results = {
        "template": template.name,
        "writer": chosen,
        "limit": args.limit or None,
        "files": {
            f: {
                "records": len(words[f]),
                "mean_visit_s": sum(words[f]) / max(1, len(words[f])),
                "systems": [totals[(f, name)].summary() for name, _ in systems],
            }
            for f in files
        },
        "records": per_record,
    }
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for f in files:
        r = results["files"][f]
        table = Table(title=f"{f}: {r['records']} records, mean visit {r['mean_visit_s'] / 60:.1f} min (0.4 s/word)")
        cols = [("system", "system"), ("R-1", "rouge1"), ("R-2", "rouge2"), ("R-L", "rougeL"),
                ("fact rec", "fact_recall"), ("fact prec", "fact_precision"), ("evid %", "evidence_linked_pct"),
                ("flag %", "flagged_pct"), ("register %", "register_clean_pct"),
                ("stop→draft p50 s", "stop_to_draft_s_p50"), ("p95 s", "stop_to_draft_s_p95"),
                ("LM busy in visit %", "lm_busy_during_visit_pct"),
                ("tok/s", "tokens_per_s"), ("peak MB", "peak_rss_mb")]
        for title, _ in cols:
            table.add_column(title, justify="left" if title == "system" else "right")
        for s in r["systems"]:
            table.add_row(*[_fmt(s[k]) for _, k in cols])
        console.print(table)
    return 0


def cmd_eval_e2e(args: argparse.Namespace) -> int:
    from ..asr.registry import ModelNotFound
    from ..asr.whisper import WhisperRecognizer
    from ..bench.e2e import run_e2e
    from ..diarize.encoder import EncoderMissing
    from ..notes.writers import ModelMissing
    from .common import UserError, console, recognizer_from_settings

    settings = _settings(args)
    template = _template(settings, args.template)
    writer = _writer(settings, args.writer)
    for f in args.files:
        if not f.is_file() or not f.with_suffix(".json").is_file():
            raise UserError(f"{f}: need the audio file and its .json manifest beside it")

    def record_recognizer() -> WhisperRecognizer:
        try:
            return WhisperRecognizer.for_record_pass(settings)
        except ModelNotFound as exc:
            raise UserError(str(exc)) from None

    try:
        return run_e2e(args, settings, writer, template, make_recognizer=lambda: recognizer_from_settings(settings),
                       make_record_recognizer=record_recognizer, console=console)
    except (EncoderMissing, ModelMissing) as exc:
        raise UserError(str(exc)) from None


def _save_note(folder: Path, record_id: str, system: str, note: Note, reference: str) -> None:
    from ..notes.evaluation import note_for_reading, note_file_name

    folder.mkdir(parents=True, exist_ok=True)
    (folder / note_file_name(record_id, system)).write_text(note_for_reading(record_id, system, note, reference),
                                                            encoding="utf-8")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)
