"""``scribe bench asr`` and ``scribe bench load``: the benchmarks of the streaming service as
commands (figures, not pass/fail)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .common import UserError, asr_args, console, err, recognizer_from_settings, settings_from_args

DEFAULT_AUDIO = "samples/synth_dialogue_dev_01.flac"


def register(sub: Any) -> None:
    """``scribe bench …``: every benchmark under one verb (each feature's cmd lives with its
    group)."""
    from .fhir import register_bench as fhir_bench
    from .speakers import register_bench as speakers_bench

    bench = sub.add_parser("bench", help="benchmarks (figures, not pass/fail)")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    p = bench_sub.add_parser("asr", help="streaming vs offline: WER, compute, commit latency, memory, concurrency",
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
    p.add_argument("--live", action="store_true", help="also stream each file (its first --stream-seconds) in "
                                                       "real time through a server and report its commit latency")
    p.add_argument("--greedy", action="store_true", help="deterministic decodes, to compare settings without "
                                                         "run-to-run WER noise: no temperature fallback, and the "
                                                         "streaming pass never sheds partials or early re-decodes "
                                                         "(as on an idle machine)")
    p.add_argument("--record-model", help="the record pass's model (default asr.record_model)")
    p.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                   help="also run the record pass and report it (default asr.record_pass)")
    asr_args(p)
    p.set_defaults(func=cmd_bench_asr)

    p = bench_sub.add_parser(
        "load", help="N simulated clinicians stream real audio in real time for M minutes",
        description="Start a real 'scribe serve' (a child process on a free port, temporary data directory) "
                    "unless --url is given, and stream a real recording (looped) from N clients at once, in real "
                    "time, for M minutes each. Prints frames sent/acked/persisted (must match: no frame lost; the "
                    "stored audio is compared byte for byte), the server's RSS over time (peak, first vs last "
                    "minute), its CPU use, and ack and segment latency p50/p95.")
    p.add_argument("-n", "--clinicians", type=int, default=4, help="concurrent clinicians (default 4)")
    p.add_argument("-m", "--minutes", type=float, default=5.0, help="minutes of audio per clinician (default 5)")
    p.add_argument("--audio", default=None, help=f"audio file to loop (default {DEFAULT_AUDIO})")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time (default); 0 = unpaced (stress)")
    p.add_argument("--stagger", type=float, default=2.0, help="seconds between clinicians starting (default 2)")
    p.add_argument("--url", help="an already running server's websocket URL (then persisted frames are not "
                                 "checked and RSS/CPU are not sampled)")
    p.add_argument("--token", help="API token for --url (env SCRIBE_TOKEN)")
    p.add_argument("--json", dest="json_out", help="also write the figures as JSON here")
    p.set_defaults(func=cmd_bench_load)
    fhir_bench(bench_sub)
    speakers_bench(bench_sub)


def _audio_path(given: str | None) -> Path:
    from .common import UserError

    if given:
        path = Path(given)
    else:
        here = Path(__file__).resolve().parent.parent.parent / DEFAULT_AUDIO
        installed = Path(sys.prefix) / "share" / "scribe" / DEFAULT_AUDIO
        path = here if here.is_file() else installed
    if not path.is_file():
        raise UserError(f"audio file not found: {path}; pass --audio FILE")
    return path


def cmd_bench_load(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from rich.table import Table

    from .common import UserError, console, err

    from ..bench.load import run_load

    if args.clinicians < 1 or args.minutes <= 0:
        raise UserError("--clinicians must be at least 1 and --minutes more than 0")
    token = args.token or os.environ.get("SCRIBE_TOKEN")
    if args.url and not token:
        raise UserError("--url needs a token: --token or SCRIBE_TOKEN")
    audio = _audio_path(args.audio)
    err.print(f"load: {args.clinicians} clinician(s) × {args.minutes:g} min of {audio.name} at "
              f"{'real time' if args.speed == 1 else f'{args.speed:g}×' if args.speed else 'full speed'}"
              f"{'' if args.url else ' against a fresh scribe serve'} …")

    def progress(elapsed: float, rss: int | None) -> None:
        if int(elapsed) % 30 == 0:
            err.print(f"  {elapsed:5.0f} s  server RSS {rss / 2**20 if rss else float('nan'):.0f} MiB")

    try:
        result = asyncio.run(run_load(clinicians=args.clinicians, minutes=args.minutes, audio=audio, url=args.url,
                                      token=token, speed=args.speed, stagger_s=args.stagger, progress=progress))
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    f = result["frames"]
    table = Table("figure", "value", title="scribe bench load")
    table.add_row("clinicians × minutes", f"{result['clinicians']} × {result['minutes']:g} (speed {result['speed']:g})")
    table.add_row("wall time", f"{result['wall_s']} s")
    table.add_row("frames sent / acked / persisted",
                  f"{f['sent']} / {f['acked']} / {f['persisted'] if f['persisted'] is not None else 'n/a'}")
    table.add_row("audio byte-identical", str(f["audio_identical"]))
    table.add_row("frames lost", f"[{'red' if f['lost'] else 'green'}]{f['lost']}[/]")
    rss = result["server_rss_mb"]
    table.add_row("server RSS peak (MiB)", str(rss["peak"]))
    table.add_row("server RSS first / last minute max (MiB)", f"{rss['first_minute_max']} / {rss['last_minute_max']}")
    if result["server_cpu"]:
        c = result["server_cpu"]
        table.add_row("server CPU", f"{c['seconds']} s = {c['cores_used']} of {c['of_cores']} cores")
    table.add_row("client CPU (this process)", f"{result['client_cpu_seconds']} s")
    a, s = result["ack_latency_ms"], result["segment_latency_s"]
    table.add_row("ack latency p50 / p95", f"{a['p50']} / {a['p95']} ms (n={a['n']})")
    table.add_row("segment latency p50 / p95", f"{s['p50']} / {s['p95']} s (n={s['n']})")
    reconnects = sum(c["reconnects"] for c in result["per_clinician"])
    table.add_row("reconnects", str(reconnects))
    errors = [e for c in result["per_clinician"] for e in c["errors"]]
    if errors:
        table.add_row("errors", "; ".join(errors[:5]))
    console.print(table)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2), encoding="utf-8")
        err.print(f"figures written to {args.json_out}")
    return 1 if f["lost"] or f["audio_identical"] is False else 0


def cmd_bench_asr(args: argparse.Namespace) -> int:
    from ..bench.asr import run_asr_bench

    settings = settings_from_args(args)
    if args.record_model:
        settings.asr.record_model = args.record_model
    if args.record is not None:
        settings.asr.record_pass = args.record
    return run_asr_bench(args, settings, lambda: recognizer_from_settings(settings), console=console)
