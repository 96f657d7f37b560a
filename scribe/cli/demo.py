"""``scribe demo``: the main job end to end on the embedded defaults.

Starts the real service in-process on a free loopback port with a one-off token, streams the
bundled sample encounter through the real websocket client (live transcript with speaker
labels), waits for the evidence-linked draft the service writes after ``stop``, and writes:

- ``<out>/<encounter>.transcript.json``  the committed transcript
- ``<out>/<encounter>.note.md`` / ``.note.json``  the draft, every sentence with its evidence
- ``<out>/fhir/<encounter>.draft.DocumentReference.json``  the FHIR R4 DocumentReference the
  EHR would receive for this draft (``docStatus: preliminary``: it is not signed yet)

In a terminal (and not under CI) it then opens the review app on the encounter, where the
draft can be checked, edited and signed; a signed note is delivered by the outbox to the
embedded FHIR target (``<out>/fhir/``, docStatus ``final``). No network beyond loopback, no
downloads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from .common import UserError, asr_args, console, err, live_printer, recognizer_from_settings, settings_from_args

if TYPE_CHECKING:
    from rich.console import Console

    from ..config import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _interactive(args) -> bool:
    if getattr(args, "no_review", False):
        return False
    return sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")


def _prepare_note_model(settings: Settings, err: Console) -> None:
    """Load the note model before the visit, with a progress bar for the first run's assembly
    (the packaged GGUF is ~1.1 GB copied from its PyPI parts once); when it cannot load, say so:
    the draft will then be the extractive one (the service falls back by itself)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from ..notes.writers import ModelMissing, WriterError, writer_from_settings

    writer = writer_from_settings(settings)
    prepare = getattr(writer, "prepare", None)
    if prepare is None:
        return
    err.print(f"loading the note model {settings.notes.llama.model} (llama.cpp) …")
    with Progress(TextColumn("assembling the note model (first run only)"), BarColumn(), DownloadColumn(),
                  console=err, transient=True) as progress:
        task = None

        def show(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = progress.add_task("assemble", total=total)
            progress.update(task, completed=done)

        try:
            prepare(show)
        except (ModelMissing, WriterError) as exc:
            err.print(f"[yellow]the note model is unavailable[/]: {exc}. The draft will be the extractive one.")


def run_demo(args, *, console, err) -> int:
    from aiohttp import web

    from ..audio import FileSource
    from ..client import StreamClient
    from ..fhir.document import DocumentContext, build_document_reference
    from ..models import Consent
    from ..notes import render_markdown, render_text
    from ..protocol import DraftEvent, StartMessage
    from ..resources import samples_dir
    from ..service import Engine, StreamServer

    sample = Path(args.sample) if args.sample else (samples_dir() or Path("samples")) / "synth_dialogue_dev_01.flac"
    if not sample.is_file():
        raise UserError(f"sample audio not found: {sample}; pass --sample FILE")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings_from_args(args)
    settings.data_dir = out / "data"
    settings.fhir.out_dir = out / "fhir"
    token = secrets.token_urlsafe(16)
    settings.server.tokens = [SecretStr(token)]
    settings.server.port = _free_port()
    err.print(f"[bold]scribe demo[/]: loading {settings.asr.model} …")
    engine = Engine(settings, recognizer=recognizer_from_settings(settings))
    _prepare_note_model(settings, err)
    printer = live_printer()
    drafts = 0

    def on_event(event: object) -> None:
        nonlocal drafts
        if isinstance(event, DraftEvent):
            drafts += 1
            if event.final:
                err.print(f"[green]draft ready[/] (version {event.version}, "
                          f"{len(event.note.sentences())} sentences, {len(event.note.open_flags)} flags to resolve)")
            return
        printer(event)

    clinician = "demo-clinician"

    async def main():
        server = StreamServer(settings, engine=engine)
        runner = server.runner()
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.server.port).start()
        try:
            source = FileSource(sample, speed=args.speed)
            eid = f"demo-{secrets.token_hex(4)}"
            start = StartMessage(encounter_id=eid, clinician_id=clinician, patient_ref="Patient/demo",
                                 consent=Consent.recorded_now(clinician))
            client = StreamClient(f"ws://127.0.0.1:{settings.server.port}/v1/stream", start, token=token,
                                  on_event=on_event, wait_for_draft=True)
            err.print(f"streaming {sample.name} ({source.duration:.0f} s of audio) through ws://127.0.0.1:"
                      f"{settings.server.port}/v1/stream")
            transcript = await client.run(source.chunks())
            if _interactive(args) and client.draft is not None:
                from tui.app import ReviewApp
                from tui.client import ReviewClient

                err.print("opening the review app (q or ctrl+q quits) …")
                app = ReviewApp(ReviewClient(f"http://127.0.0.1:{settings.server.port}", token, clinician),
                                encounter_id=eid)
                await app.run_async()
                await asyncio.sleep(1.0)  # let the outbox deliver a note signed just before quitting
            return transcript, client.draft
        finally:
            await runner.cleanup()

    transcript, note = asyncio.run(main())
    eid = transcript.encounter_id
    path = out / f"{eid}.transcript.json"
    path.write_text(transcript.model_dump_json(indent=2), encoding="utf-8")
    err.print(f"[green]transcript[/]: {len(transcript.segments)} segments, {transcript.duration:.0f} s of audio "
              f"→ {path}")
    if note is None:
        err.print("[yellow]no draft was written[/] (drafting is off: notes.draft_on_stop)")
        return 0
    console.print()
    console.print(render_text(note, evidence=True, flags=True), markup=False, highlight=False)
    (out / f"{eid}.note.md").write_text(render_markdown(note, evidence=True, flags=True), encoding="utf-8")
    (out / f"{eid}.note.json").write_text(note.model_dump_json(indent=2), encoding="utf-8")
    fhir_dir = out / "fhir"
    fhir_dir.mkdir(parents=True, exist_ok=True)
    ctx = DocumentContext(patient="Patient/demo", encounter=f"Encounter/{eid}", practitioner=f"Practitioner/{clinician}",
                          period_start=note.created_at)
    doc = build_document_reference(note, ctx)
    fhir_path = fhir_dir / f"{eid}.draft.DocumentReference.json"
    fhir_path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    flags = len(note.open_flags)
    err.print(f"[green]draft[/] → {out / (eid + '.note.md')} ({len(note.sentences())} sentences, all with evidence; "
              f"{flags} flag{'s' if flags != 1 else ''} to resolve before signing)")
    err.print(f"[green]FHIR[/] DocumentReference (docStatus {doc.get('docStatus')}) → {fhir_path}")
    signed = sorted(p for p in fhir_dir.rglob("*.json") if p != fhir_path and "DocumentReference" in p.name)
    for p in signed:
        err.print(f"[green]signed and delivered[/] → {p}")
    err.print(f"store: {settings.database_path}. Review and sign: scribe review (with the service running), "
              "or run this demo in a terminal.")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole job on the bundled sample encounter",
                       description="Start the service on a free local port, stream the bundled sample encounter "
                                   "through it (live transcript with speaker labels), wait for the evidence-linked "
                                   "draft, and write transcript, note and FHIR DocumentReference to --out. In a "
                                   "terminal it then opens the review app to check and sign the note.")
    p.add_argument("--no-review", action="store_true", help="do not open the review app (always off without a terminal)")
    p.add_argument("--sample", help="audio file to use instead of the bundled sample")
    p.add_argument("--speed", type=float, default=0.0, help="playback speed (1 = real time, 0 = as fast as possible)")
    p.add_argument("--out", default="scribe-demo", help="directory for the results (default ./scribe-demo)")
    asr_args(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve on a free port, stream the sample encounter through it, print the result."""
    return run_demo(args, console=console, err=err)
