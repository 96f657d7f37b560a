"""Measure the word-probability threshold of the guard's ``low_confidence_word`` flag.

Transcribes the synthetic dictation and the OSCE dev recordings offline with the default model
(tiny.en), aligns every hypothesis word to the reference and prints, for candidate thresholds,
the share of wrong words flagged against the share of correct words flagged — for all words,
number/dose words and drug names (logic: ``scribe.bench.confidence``).

    .venv/bin/python scripts/bench_word_confidence.py --max-seconds 300 --json conf.json

OSCE files are long: ``--max-seconds`` keeps the first N seconds of each (the reference is cut
proportionally, generously; trailing reference words are free in the alignment).
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scribe.bench.confidence import THRESHOLDS, measure, report  # noqa: E402

DEV_FILES = [
    ROOT / "samples" / "synth_dictation_dev_01.flac",
    *sorted((ROOT.parent / "shared" / "eval" / "real_audio").glob("osce_*.mp3")),
]


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.1%}"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="audio with a .json manifest beside it (default: dev set)")
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--hotwords", action="store_true", help="bias decoding towards the drug lexicon "
                   "(the failure the flag is for: a drug name put where none was said)")
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--cache", type=Path, default=Path("/tmp/scribe-word-confidence"),
                   help="folder for transcripts (re-analysis without re-transcribing)")
    p.add_argument("--json", dest="json_out", type=Path)
    args = p.parse_args(argv)

    @cache
    def recognizer():
        from scribe.asr.whisper import WhisperRecognizer

        return WhisperRecognizer(args.model, cache_dir=Path.home() / ".cache" / "scribe-test-models", cpu_threads=2,
                                 hotwords=args.hotwords or None)

    files = args.files or [f for f in DEV_FILES if f.is_file()]
    words = measure(files, recognizer, max_seconds=args.max_seconds, cache=args.cache,
                    tag=args.model + ("+hotwords" if args.hotwords else ""), log=print)
    sets = {
        "synthetic dictation": [w for w in words if w.file.startswith("synth")],
        "OSCE dev (real speech)": [w for w in words if w.file.startswith("osce")],
        "all": words,
    }
    out = {}
    for name, ws in sets.items():
        if not ws:
            continue
        rep = report(ws)
        out[name] = rep
        print(f"\n## {name}")
        for group, rows in rep.items():
            n, wrong = rows[0]["words"], rows[0]["wrong"]
            print(f"\n{group}: {n} words, {wrong} wrong ({wrong / n:.1%})" if n else f"\n{group}: none")
            if not n:
                continue
            print("| threshold | wrong flagged | correct flagged | precision |")
            print("|---|---|---|---|")
            for r in rows:
                print(f"| {r['threshold']:.2f} | {_fmt(r['wrong_flagged'])} | {_fmt(r['correct_flagged'])} "
                      f"| {_fmt(r['precision'])} |")
    print("\nwrong number/drug words (p):")
    for w in words:
        if (w.number or w.drug or w.said_number or w.said_drug) and not w.correct:
            print(f"  {w.file}: {w.text!r} p={w.probability:.2f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"thresholds": THRESHOLDS, "max_seconds": args.max_seconds,
                                             "model": args.model, "report": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
