"""``scribe`` — the command line.

Each command is a thin shell: parse arguments, build settings, call the library, print with
rich. Errors a user can fix (a missing model, a bad file, a refused token) are printed as one
line that says what to do, with exit status 2; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from . import __version__

console = Console(stderr=False, highlight=False)
err = Console(stderr=True, highlight=False)


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


# --------------------------------------------------------------------------- helpers


def settings_from_args(args: argparse.Namespace, **overrides: Any):
    from .config import ConfigError, load_settings

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


def recognizer_from_settings(settings, *, single_stream: bool = False):
    """The configured recogniser. ``single_stream``: one file at a time (``scribe transcribe``):
    one decode using every core, unless the user set the parallelism explicitly."""
    from .asr.registry import ModelNotFound
    from .asr.whisper import WhisperRecognizer

    try:
        return WhisperRecognizer.from_settings(settings, single_stream=single_stream)
    except ModelNotFound as exc:
        raise UserError(str(exc)) from None


def _fmt_time(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m):02d}:{s:04.1f}"


def _print_segment(seg) -> None:
    speaker = f"[magenta]{seg.speaker.value}[/] " if seg.speaker.value != "unknown" else ""
    console.print(f"[dim]{_fmt_time(seg.start)}–{_fmt_time(seg.end)}[/] {speaker}{seg.text}", markup=True)


# --------------------------------------------------------------------------- commands


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    console.print_json(json.dumps(settings.public_dict()))
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    """Offline transcription of a whole file: the baseline the streaming path is compared to."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .asr.offline import transcribe_file
    from .audio import AudioError

    settings = settings_from_args(args)
    rec = recognizer_from_settings(settings, single_stream=True)
    try:
        with Progress(TextColumn("[bold]transcribing"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeRemainingColumn(), console=err, transient=True, disable=args.json) as progress:
            task = progress.add_task("asr", total=1.0)
            transcript = transcribe_file(
                rec, Path(args.file), progress=lambda f: progress.update(task, completed=f)
            )
    except AudioError as exc:
        raise UserError(str(exc)) from None
    if settings.speakers.enabled and transcript.segments:
        transcript = _label_offline(settings, Path(args.file), transcript)
    if args.json:
        print(transcript.model_dump_json(indent=2))
    else:
        for seg in transcript.segments:
            _print_segment(seg)
    return 0


def _label_offline(settings, path: Path, transcript):
    """Speaker labels for a whole file: by channel when the file has one speaker per channel
    (a two-channel recording), else by voice; an enrolled profile is not used offline."""
    from .audio import load_audio
    from .diarize.diarizer import label_segments
    from .diarize.encoder import EncoderMissing, load_encoder

    try:
        encoder = load_encoder()
    except EncoderMissing as exc:
        err.print(f"[yellow]no speaker labels:[/] {exc}")
        return transcript
    audio = load_audio(path, keep_stereo=True)
    segments, _ = label_segments(encoder, transcript.segments, audio)
    return transcript.model_copy(update={"segments": segments})


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .logs import setup_logging
    from .service import StreamServer

    settings = settings_from_args(args)
    if args.host:
        settings.server.host = args.host
    if args.port is not None:
        settings.server.port = args.port
    setup_logging(settings.log_level)
    try:
        server = StreamServer(settings)
        tls = server.ssl_context()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    scheme = "wss" if tls else "ws"
    err.print(f"scribe {__version__} serving {scheme}://{settings.server.host}:{settings.server.port}/v1/stream "
              f"(model {settings.asr.model}, store {settings.database_path})")
    if tls is None and settings.server.host not in ("127.0.0.1", "localhost", "::1"):
        err.print("[yellow]warning:[/] serving without TLS on a non-loopback address: set server.tls_cert_file/"
                  "tls_key_file or put a TLS reverse proxy in front (docs/deployment.md)")
    web.run_app(server.app(), host=settings.server.host, port=settings.server.port, print=None,
                handle_signals=True, ssl_context=tls, **server.http_options())
    return 0


def _start_message(args: argparse.Namespace, sample_rate: int = 16_000, channels: int = 1):
    from .models import Consent
    from .protocol import StartMessage

    if not args.consent:
        raise UserError("recording needs the patient's consent: pass --consent once it has been given")
    return StartMessage(
        encounter_id=args.encounter or f"enc-{uuid.uuid4().hex[:12]}",
        clinician_id=args.clinician,
        patient_ref=args.patient,
        sample_rate=sample_rate,
        channels=channels,
        language=args.language,
        consent=Consent.recorded_now(args.clinician, method=args.consent_method, given_by=args.consent_by),
    )


def _live_printer(quiet: bool = False):
    from .protocol import ErrorEvent, PartialEvent, ReadyEvent, SegmentEvent

    def on_event(event: object) -> None:
        if quiet:
            return
        if isinstance(event, SegmentEvent):
            _print_segment(event.segment)
        elif isinstance(event, PartialEvent) and sys.stdout.isatty():
            err.print(f"[dim]… {event.text[-100:]}[/]", end="\r", markup=True)
        elif isinstance(event, ReadyEvent):
            err.print(f"[green]encounter {event.encounter_id}[/] "
                      f"{'resumed at frame ' + str(event.next_seq) if event.resumed else 'started'}")
        elif isinstance(event, ErrorEvent):
            err.print(f"[yellow]server: {str(event.code)}: {event.message}[/]")

    return on_event


async def _stream(args: argparse.Namespace, source, url: str, token: str | None):
    import signal
    import ssl

    from .client import StreamClient

    tls = ssl.create_default_context(cafile=args.cafile) if getattr(args, "cafile", None) else None
    client = StreamClient(url, _start_message(args, source.sample_rate, getattr(source, "channels", 1)), token=token,
                          on_event=_live_printer(getattr(args, "quiet", False)), ssl=tls)
    if hasattr(source, "stop"):
        # Ctrl+C ends the recording gracefully: the rest is sent, then 'stop', then the
        # transcript (and the draft, stored by the service) are finished.
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, source.stop)
    return await client.run(source.chunks()), client


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("SCRIBE_TOKEN")


def cmd_stream(args: argparse.Namespace) -> int:
    from .audio import AudioError, FileSource
    from .client import ClientError

    try:
        # A two-channel file (a microphone per person) is sent as such: the server labels
        # speakers by channel and transcribes the mix.
        source = FileSource(args.file, speed=args.speed, keep_stereo=True)
    except AudioError as exc:
        raise UserError(str(exc)) from None
    try:
        transcript, _ = asyncio.run(_stream(args, source, args.url, _token(args)))
    except ClientError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot reach the scribe server at {args.url} ({exc}); is 'scribe serve' running?") from None
    if args.output:
        Path(args.output).write_text(transcript.model_dump_json(indent=2), encoding="utf-8")
        err.print(f"transcript written to {args.output}")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from .audio import AudioError, MicrophoneSource
    from .client import ClientError

    source = MicrophoneSource(device=args.input_device)
    err.print("recording — press Ctrl+C to stop (the transcript is then finished and the draft written)")
    try:
        transcript, _ = asyncio.run(_stream(args, source, args.url, _token(args)))
    except (AudioError, ClientError) as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        err.print("stopped")
        return 0
    if args.output:
        Path(args.output).write_text(transcript.model_dump_json(indent=2), encoding="utf-8")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve on a free port, stream the sample encounter through it, print the result."""
    from .demo import run_demo

    return run_demo(args, console=console, err=err)


def cmd_bench_asr(args: argparse.Namespace) -> int:
    from .bench.asr import run_asr_bench

    return run_asr_bench(args, console=console)


def cmd_models(args: argparse.Namespace) -> int:
    from .asr.registry import ModelNotFound, resolve_model, verify_base

    settings = settings_from_args(args)
    for name in ("tiny.en", "base"):
        try:
            info = resolve_model(name, settings.model_cache_dir)
            extra = ""
            if name == "base" and args.verify:
                extra = " sha256 ok" if verify_base(settings.model_cache_dir) else " [red]sha256 MISMATCH[/]"
            console.print(f"[green]{name}[/] {info.path}{extra}")
        except ModelNotFound as exc:
            console.print(f"[red]{name}[/] {exc}")
    return 0


# --------------------------------------------------------------------------- parser

COMMAND_MODULES = (
    "scribe.notes.cli",      # draft, eval notes
    "scribe.fhir.cli",       # outbox, deliver
    "scribe.diarize.cli",    # enroll, bench speakers
    "scribe.review.cli",     # review (the TUI), api helpers
    "scribe.trust.cli",      # audit, keys, tokens, purge
    "scribe.bench.cli",      # bench load
)


def _stream_args(p: argparse.ArgumentParser) -> None:
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


def _asr_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="'tiny.en' (default), 'base', or a local CTranslate2 Whisper directory")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="inference device (default auto)")
    p.add_argument("--beam-size", type=int, help="beam size for final decodes (default 1)")
    p.add_argument("--hotwords", action=argparse.BooleanOptionalAction, default=None,
                   help="bias decoding toward the medical lexicon (default off; helps dictation with 'base')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scribe",
        description="Local-first ambient clinical documentation: live transcription of an encounter with "
                    "speaker labels, an evidence-linked note draft, review and sign-off, FHIR delivery to the EHR. "
                    "Start with 'scribe demo'.",
        epilog="Configuration: SCRIBE_* environment variables or a TOML file (--config). "
               "See 'scribe config' for the effective values.",
    )
    parser.add_argument("--version", action="version", version=f"scribe {__version__}")
    parser.add_argument("--config", type=Path, help="TOML configuration file (env SCRIBE_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="run the whole job on the bundled sample encounter",
                       description="Start the service on a free local port, stream the bundled sample encounter "
                                   "through it (live transcript with speaker labels), wait for the evidence-linked "
                                   "draft, and write transcript, note and FHIR DocumentReference to --out. In a "
                                   "terminal it then opens the review app to check and sign the note.")
    p.add_argument("--no-review", action="store_true", help="do not open the review app (always off without a terminal)")
    p.add_argument("--sample", help="audio file to use instead of the bundled sample")
    p.add_argument("--speed", type=float, default=0.0, help="playback speed (1 = real time, 0 = as fast as possible)")
    p.add_argument("--out", default="scribe-demo", help="directory for the results (default ./scribe-demo)")
    _asr_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="run the streaming service",
                       description="Run the websocket + HTTP service. Needs at least one API token "
                                   "(SCRIBE_SERVER__TOKENS='[\"...\"]').")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8765)")
    _asr_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("stream", help="stream an audio file to the service as if live",
                       description="Send a wav/flac/mp3 file to a running server as a live encounter.")
    p.add_argument("file", help="audio file (wav, flac, ogg, mp3)")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time (default), 4 = 4× faster, 0 = unpaced")
    _stream_args(p)
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("record", help="record from the microphone and stream it live")
    p.add_argument("--input-device", help="PortAudio input device name or index")
    _stream_args(p)
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("transcribe", help="transcribe a file offline (no server)")
    p.add_argument("file", help="audio file (wav, flac, ogg, mp3)")
    p.add_argument("--json", action="store_true", help="print the transcript as JSON")
    _asr_args(p)
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("models", help="list the offline models and where they are")
    p.add_argument("--verify", action="store_true", help="hash-check the assembled base model")
    p.set_defaults(func=cmd_models)

    bench = sub.add_parser("bench", help="benchmarks (figures, not pass/fail)")
    bsub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    p = bsub.add_parser("asr", help="streaming vs offline: WER, compute, commit latency, memory, concurrency",
                        description="Transcribe evaluation audio offline and through the streaming path in the "
                                    "same run and print WER (normalised, medical-term), compute per audio second, "
                                    "commit latency after end of utterance, peak memory, and the number of "
                                    "concurrent real-time streams sustained.")
    p.add_argument("files", nargs="*", help="audio files with a .json manifest beside them "
                                             "(default: ../shared/eval audio)")
    p.add_argument("--max-seconds", type=float, default=0, help="use only the first N seconds of each file")
    p.add_argument("--streams", default="1,2,4,6,8", help="concurrency levels to try (comma-separated; '' skips)")
    p.add_argument("--stream-seconds", type=float, default=60.0, help="audio per stream in the concurrency test")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    _asr_args(p)
    p.set_defaults(func=cmd_bench_asr)

    for name in COMMAND_MODULES:
        # Feature packages add their own commands so each owns its shell; a module that is not
        # part of this build is simply absent, an import error inside one is a bug and surfaces.
        parent = name.rpartition(".")[0]
        if importlib.util.find_spec(parent) is not None and importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub, bsub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
