"""``scribe`` — the command line: one module per verb group, assembled here.

    capture.py   transcribe, stream, record        service.py  serve, config, models
    demo.py      demo                              notes.py    draft, eval notes
    review.py    review                            fhir.py     outbox, deliver, bench fhir
    speakers.py  enroll, bench speakers            trust.py    audit, keys, tokens, purge
    bench.py     bench asr, bench load

The CLI is the top floor: it imports the service and the libraries; nothing imports it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from . import bench, capture, demo, fhir, notes, review, service, speakers, trust
from .common import UserError, err

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
    for group in (demo, capture, service, notes, review, fhir, speakers, trust, bench):
        group.register(sub)
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
