"""``scribe bench fhir`` against the local FHIR test server (Medplum's engine on Node, from
``tests/fhir_server``), which it starts, empties between runs and counts documents on.

Development tooling: the product never loads the test server; ``scribe bench fhir --base-url``
works against any FHIR R4 server.

    .venv/bin/python scripts/bench_fhir.py -n 200 --latency-notes 100 --concurrency 1,4,8 --json fhir-bench.json
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fhir_server.harness import run_fhir_server  # noqa: E402

from scribe.cli.common import err  # noqa: E402
from scribe.cli.fhir import cmd_bench_fhir  # noqa: E402
from scribe.cli.main import build_parser  # noqa: E402


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(["bench", "fhir", *argv])
    err.print("starting the local FHIR test server (Medplum 4.5.2) …")
    with run_fhir_server() as server:
        return cmd_bench_fhir(args, server)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
