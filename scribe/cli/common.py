"""What every command shares: the consoles, the one error type a user can fix, settings from
the arguments, the recogniser, and the live transcript printer.

Commands are thin shells: parse arguments, build settings, call the library, print with rich.
Errors a user can fix (a missing model, a bad file, a refused token) are printed as one line
that says what to do, with exit status 2; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from ..asr.whisper import WhisperRecognizer
    from ..config import Settings
    from ..models import Segment

console = Console(stderr=False, highlight=False)
err = Console(stderr=True, highlight=False)


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


def cli_actor(args: argparse.Namespace) -> str:
    """Who acts, for the audit log: ``--actor`` if the command has one, else ``cli:<login>``."""
    from ..trust.audit import as_code

    name = getattr(args, "actor", None)
    if not name:
        try:
            name = "cli:" + getpass.getuser()
        except Exception:
            name = "cli"
    return as_code(name, "cli")


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    from ..config import ConfigError, load_settings

    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    asr = settings.asr
    if getattr(args, "model", None):
        asr.model = args.model
    if getattr(args, "device", None):
        asr.device = args.device
    if getattr(args, "beam_size", None):
        asr.beam_size = args.beam_size
    if getattr(args, "hotwords", None) is not None:
        asr.hotwords = args.hotwords
    for k, v in overrides.items():
        setattr(settings, k, v)
    return settings


def recognizer_from_settings(settings: Settings, *, single_stream: bool = False) -> WhisperRecognizer:
    """The configured recogniser. ``single_stream``: one file at a time (``scribe transcribe``):
    one decode using every core, unless the user set the parallelism explicitly."""
    from ..asr.registry import ModelNotFound
    from ..asr.whisper import WhisperRecognizer

    try:
        return WhisperRecognizer.from_settings(settings, single_stream=single_stream)
    except ModelNotFound as exc:
        raise UserError(str(exc)) from None


def _fmt_time(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m):02d}:{s:04.1f}"


def print_segment(seg: Segment) -> None:
    speaker = f"[magenta]{seg.speaker.value}[/] " if seg.speaker.value != "unknown" else ""
    console.print(f"[dim]{_fmt_time(seg.start)}–{_fmt_time(seg.end)}[/] {speaker}{seg.text}", markup=True)



def live_printer(quiet: bool = False):
    from ..protocol import ErrorEvent, PartialEvent, ReadyEvent, SegmentEvent

    def on_event(event: object) -> None:
        if quiet:
            return
        if isinstance(event, SegmentEvent):
            print_segment(event.segment)
        elif isinstance(event, PartialEvent) and sys.stdout.isatty():
            err.print(f"[dim]… {event.text[-100:]}[/]", end="\r", markup=True)
        elif isinstance(event, ReadyEvent):
            err.print(f"[green]encounter {event.encounter_id}[/] "
                      f"{'resumed at frame ' + str(event.next_seq) if event.resumed else 'started'}")
        elif isinstance(event, ErrorEvent):
            err.print(f"[yellow]server: {str(event.code)}: {event.message}[/]")

    return on_event



def stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("SCRIBE_URL", "ws://127.0.0.1:8765/v1/stream"),
                   help="server websocket URL (env SCRIBE_URL)")
    p.add_argument("--token", help="API token (env SCRIBE_TOKEN)")
    p.add_argument("--cafile", help="CA certificate (PEM) to trust for a wss:// server with a private CA")
    p.add_argument("--encounter", help="encounter id; reuse one to resume it (default: a new id)")
    p.add_argument("--clinician", default=os.environ.get("USER", "clinician"), help="clinician id")
    p.add_argument("--patient", default="Patient/unknown", help="patient reference, e.g. Patient/123")
    p.add_argument("--language", help="spoken language (default: the server's)")
    p.add_argument("--consent", action="store_true",
                   help="confirm that consent to recording was just obtained (recorded with you as the recorder)")
    p.add_argument("--consent-method", choices=["verbal", "written", "electronic"], default="verbal",
                   help="how consent was given (default verbal)")
    p.add_argument("--consent-by", choices=["patient", "guardian", "representative"], default="patient",
                   help="who gave consent (default patient)")
    p.add_argument("-o", "--output", help="write the final transcript JSON here")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the live transcript")


def asr_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="'tiny.en' (default), 'base', or a local CTranslate2 Whisper directory")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="inference device (default auto)")
    p.add_argument("--beam-size", type=int, help="beam size for final decodes (default 1)")
    p.add_argument("--hotwords", action=argparse.BooleanOptionalAction, default=None,
                   help="bias decoding toward the medical lexicon (default off; helps dictation with 'base')")

