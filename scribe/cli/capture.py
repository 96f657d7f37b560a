"""Audio in: ``scribe transcribe`` (offline, no server), ``scribe stream`` (a file as if live)
and ``scribe record`` (the microphone), the last two through a running service."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import UserError, asr_args, console, err, live_printer, print_segment, recognizer_from_settings, \
    settings_from_args, stream_args

if TYPE_CHECKING:
    from ..config import Settings
    from ..models import Transcript


def register(sub: Any) -> None:
    p = sub.add_parser("stream", help="stream an audio file to the service as if live",
                       description="Send a wav/flac/mp3 file to a running server as a live encounter.")
    p.add_argument("file", help="audio file (wav, flac, ogg, mp3)")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time (default), 4 = 4× faster, 0 = unpaced")
    stream_args(p)
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("record", help="record from the microphone and stream it live")
    p.add_argument("--input-device", help="PortAudio input device name or index")
    stream_args(p)
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("transcribe", help="transcribe a file offline (no server)")
    p.add_argument("file", help="audio file (wav, flac, ogg, mp3)")
    p.add_argument("--json", action="store_true", help="print the transcript as JSON")
    asr_args(p)
    p.set_defaults(func=cmd_transcribe)


def cmd_transcribe(args: argparse.Namespace) -> int:
    """Offline transcription of a whole file: the baseline the streaming path is compared to."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ..asr.offline import transcribe_file
    from ..audio import AudioError

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
            print_segment(seg)
    return 0


def _label_offline(settings: Settings, path: Path, transcript: Transcript) -> Transcript:
    """Speaker labels for a whole file: by channel when the file has one speaker per channel
    (a two-channel recording), else by voice; an enrolled profile is not used offline."""
    from ..audio import load_audio
    from ..diarize.diarizer import label_segments
    from ..diarize.encoder import EncoderMissing, load_encoder

    try:
        encoder = load_encoder()
    except EncoderMissing as exc:
        err.print(f"[yellow]no speaker labels:[/] {exc}")
        return transcript
    audio = load_audio(path, keep_stereo=True)
    segments, _ = label_segments(encoder, transcript.segments, audio)
    return transcript.model_copy(update={"segments": segments})



def _start_message(args: argparse.Namespace, sample_rate: int = 16_000, channels: int = 1):
    from ..models import Consent
    from ..protocol import StartMessage

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



async def _stream(args: argparse.Namespace, source, url: str, token: str | None):
    import signal
    import ssl

    from ..client import StreamClient

    tls = ssl.create_default_context(cafile=args.cafile) if getattr(args, "cafile", None) else None
    client = StreamClient(url, _start_message(args, source.sample_rate, getattr(source, "channels", 1)), token=token,
                          on_event=live_printer(getattr(args, "quiet", False)), ssl=tls)
    if hasattr(source, "stop"):
        # Ctrl+C ends the recording gracefully: the rest is sent, then 'stop', then the
        # transcript (and the draft, stored by the service) are finished.
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, source.stop)
    return await client.run(source.chunks()), client


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("SCRIBE_TOKEN")


def cmd_stream(args: argparse.Namespace) -> int:
    from ..audio import AudioError, FileSource
    from ..client import ClientError

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
    from ..audio import AudioError, MicrophoneSource
    from ..client import ClientError

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

