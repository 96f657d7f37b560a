"""Build samples/visit_with_visitor_dev_01.{flac,json}: a short real doctor–patient recording
with a visitor (another recording's patient, a different person) joining twice.

Run once by a developer (needs ../shared/eval and the tiny.en model):

    .venv/bin/python scripts/make_visitor_sample.py BASE_NAME [SECONDS]

The tests only read the result. See scribe/diarize/visitor.py for how the case is built and
samples/README.md for the attribution (CC BY 4.0).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from scribe.audio import load_audio
from scribe.config import load_settings
from scribe.bench.speakers import cached_segments, load_recording, visitor_cases
from scribe.diarize.encoder import load_encoder
from scribe.diarize.visitor import Recording
from scribe.models import Speaker

EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "eval" / "real_audio"
OUT = Path(__file__).resolve().parents[1] / "samples" / "visit_with_visitor_dev_01"
TAG = {Speaker.clinician: "doctor", Speaker.patient: "patient", Speaker.other: "visitor"}


def recording(path: Path, seconds: float | None, rec) -> Recording:
    audio = load_audio(path)
    if seconds:
        audio = audio[: int(seconds * 16000)]
    segments = cached_segments(load_settings(), path, audio, lambda: rec)  # what `scribe bench speakers` transcribed
    return load_recording(path, segments, audio, excerpt=bool(seconds))


def main(base_name: str, seconds: float) -> None:
    from scribe.asr.whisper import WhisperRecognizer

    rec = WhisperRecognizer.from_settings(load_settings())
    names = sorted(p.stem for p in EVAL.glob("osce_*.mp3"))
    recs = [recording(EVAL / f"{n}.mp3", seconds if n == base_name else None, rec) for n in names]
    case = next(c for c in visitor_cases(recs, load_encoder()) if c.name.startswith(base_name + "+"))
    sf.write(OUT.with_suffix(".flac"), np.clip(case.audio, -1, 1), 16000, subtype="PCM_16")
    turns: list[dict] = []
    for w in case.reference:
        if turns and turns[-1]["speaker"] == TAG[w.role]:
            turns[-1]["text"] += " " + w.token
        else:
            turns.append({"speaker": TAG[w.role], "text": w.token})
    src = {n: hashlib.sha256((EVAL / f"{n}.mp3").read_bytes()).hexdigest() for n in (base_name, case.visitor_from)}
    manifest = {
        "id": OUT.name, "kind": "dialogue", "synthetic": False, "real_human_speech": True, "constructed": True,
        "audio": OUT.name + ".flac", "sample_rate": 16000, "channels": 1,
        "duration_s": round(len(case.audio) / 16000, 3),
        "how": f"the first {seconds:.0f} s of {base_name} (doctor and patient) with six patient statements of "
               f"{case.visitor_from} (a different person) spliced in at segment boundaries, three after the "
               "segment at 1/3 and three after the segment at 2/3, 0.3 s of silence around each; "
               "built by scripts/make_visitor_sample.py with scribe/diarize/visitor.py",
        "sources": {n: {"file": f"../shared/eval/real_audio/{n}.mp3", "sha256": h} for n, h in src.items()},
        "speakers": [{"label": "doctor", "role": "clinician"}, {"label": "patient", "role": "patient"},
                     {"label": "visitor", "role": "other"}],
        "dialogue": turns,
        "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                      "speaker": TAG[r] if r else None} for s, r in zip(case.segments, case.segment_roles)],
        "visitor_seconds": round(case.visitor_s, 1),
        "license": "CC BY 4.0", "license_url": "https://creativecommons.org/licenses/by/4.0/",
        "attribution": "Audio and transcripts from 'A dataset of simulated patient-physician medical interviews with "
                       "a focus on respiratory cases' by C.W. Smith, F. Fareez, T. Parikh, C. Wavell, S. Shahab, "
                       "M. Chevalier et al. (figshare, 2022, doi:10.6084/m9.figshare.c.5545842.v1), licensed CC BY "
                       "4.0. Changes: excerpted, another recording's speech spliced in, re-encoded as 16-bit FLAC; "
                       "reference words re-tokenised (lower case, no punctuation) and segment times from scribe's "
                       "tiny.en streaming transcription, roles from aligning it to the dataset's transcript.",
    }
    OUT.with_suffix(".json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{OUT}.flac: {len(case.audio) / 16000:.1f} s, visitor {case.visitor_from} {case.visitor_s:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 150.0)
