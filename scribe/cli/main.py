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
from .bench import register as bench_commands
from .capture import register as capture_commands
from .demo import register as demo_commands
from .fhir import register as fhir_commands
from .notes import register as notes_commands
from .review import register as review_commands
from .service import register as service_commands
from .speakers import register as speakers_commands
from .trust import register as trust_commands
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
    for register in (demo_commands, capture_commands, service_commands, notes_commands, review_commands,
                     fhir_commands, speakers_commands, trust_commands, bench_commands):
        register(sub)
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
