"""Build samples/synth_dictation_commands_01.{flac,json}: a single-voice dictation of a whole
note (chief complaint to plan) with spoken commands ("colon", "period", "comma", "new
paragraph", "scratch that") and numbered plan items, for the dictation tests.

Run once by a developer (needs espeak-ng and sox on PATH, and ../shared/eval/train):

    .venv/bin/python scripts/make_dictation_sample.py

The text is ACI-Bench *train* record D2N005's reference note (CC BY 4.0), sentence by sentence,
with "mg" spoken as "milligrams", the spoken cues marked ``origin: "added"`` in the manifest,
and one added sentence that the dictation then scratches. The tests only read the result; the
manifest's ``expected`` is the note (H&P template) the dictation asks for.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "samples" / "synth_dictation_commands_01"
TRAIN = ROOT.parent / "shared" / "eval" / "train" / "aci_bench_train.jsonl"
RECORD = "aci-bench/D2N005"
VOICE, PITCH, WPM, GAP_S, LEAD_S = "en-us+m3", 40, 160, 0.35, 0.25

# (spoken text, origin): "verbatim" segments carry a sentence of the reference note with spoken
# commands around it; "added" ones are cues or the sentence that gets scratched.
SEGMENTS: list[tuple[str, str]] = [
    ("Chief complaint colon right middle finger pain period", "verbatim"),
    ("History of present illness colon Ms. Hill is a 41-year-old female who presents today for an evaluation "
     "of right middle finger pain after she was rear-ended in a motor vehicle accident period", "verbatim"),
    ("She has a history of hand surgery period", "added"),
    ("Scratch that", "added"),
    ("She has no other injuries period", "verbatim"),
    ("Current medications colon digoxin period", "verbatim"),
    ("Past medical history colon atrial fibrillation period", "verbatim"),
    ("Physical exam colon examination of the right middle finger shows tenderness over the distal phalanx period",
     "verbatim"),
    ("Results colon x-rays of the right middle finger comma 3 views obtained on today's visit shows a comminuted "
     "distal phalanx fracture period", "verbatim"),
    ("Impression colon right middle finger distal phalanx fracture period", "verbatim"),
    ("Plan colon number one comma pain period", "added"),
    ("I recommend a prescription for Tramadol 50 milligrams every 6 hours as needed for pain comma dispense 8 "
     "period", "verbatim"),
    ("Number two comma fracture care period", "added"),
    ("She is provided a finger splint and will return in 2 weeks for a follow-up x-ray period", "verbatim"),
    ("New paragraph all questions were answered period", "verbatim"),
]

EXPECTED = {
    "template": "hp",
    "sections": {
        "chief_complaint": ["Right middle finger pain."],
        "hpi": [
            "Ms. Hill is a 41-year-old female who presents today for an evaluation of right middle finger pain after "
            "she was rear-ended in a motor vehicle accident.",
            "She has no other injuries.",
        ],
        "medications": ["Digoxin."],
        "pmh": ["Atrial fibrillation."],
        "exam": ["Examination of the right middle finger shows tenderness over the distal phalanx."],
        "results": ["X-rays of the right middle finger, 3 views obtained on today's visit shows a comminuted distal "
                    "phalanx fracture."],
        "assessment": ["Right middle finger distal phalanx fracture."],
        "plan": [
            "1. Pain. I recommend a prescription for Tramadol 50 milligrams every 6 hours as needed for pain, "
            "dispense 8.",
            "2. Fracture care. She is provided a finger splint and will return in 2 weeks for a follow-up x-ray.",
            "All questions were answered.",
        ],
    },
    "scratched": "She has a history of hand surgery.",
}


def tool_version(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]


def speak(text: str, tmp: Path) -> np.ndarray:
    raw, wav = tmp / "raw.wav", tmp / "16k.wav"
    subprocess.run(["espeak-ng", "-v", VOICE, "-p", str(PITCH), "-s", str(WPM), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
    audio, rate = sf.read(wav, dtype="float32")
    assert rate == 16000
    # espeak pads with silence; trim it so the manifest's times are the speech
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[loud[0]: loud[-1] + 1] if loud.size else audio


def main() -> None:
    record = next(json.loads(line) for line in TRAIN.read_text(encoding="utf-8").splitlines()
                  if line.strip() and json.loads(line)["id"] == RECORD)
    pieces: list[np.ndarray] = [np.zeros(int(LEAD_S * 16000), dtype=np.float32)]
    t = LEAD_S
    segments = []
    with tempfile.TemporaryDirectory() as d:
        for i, (text, origin) in enumerate(SEGMENTS):
            audio = speak(text, Path(d))
            segments.append({"index": i, "speaker": "clinician", "voice": VOICE, "text": text, "origin": origin,
                             "start": round(t, 3), "end": round(t + len(audio) / 16000, 3)})
            pieces += [audio, np.zeros(int(GAP_S * 16000), dtype=np.float32)]
            t += len(audio) / 16000 + GAP_S
    audio = np.concatenate(pieces)
    sf.write(OUT.with_suffix(".flac"), np.clip(audio, -1, 1), 16000, subtype="PCM_16")
    manifest = {
        "id": OUT.name, "kind": "dictation", "synthetic": True, "audio": OUT.name + ".flac", "sample_rate": 16000,
        "channels": 1, "sample_format": "s16", "duration_s": round(len(audio) / 16000, 3),
        "tts": {"engine": tool_version(["espeak-ng", "--version"]), "sox": tool_version(["sox", "--version"]),
                "words_per_minute": WPM, "voice": {"voice": VOICE, "pitch": PITCH}, "gap_s": GAP_S, "lead_s": LEAD_S},
        "text_source": {
            "dataset": "aci-bench", "record_id": RECORD, "split": "train", "section": "whole note",
            "source_commit": record.get("source_commit"), "license": "CC BY 4.0",
            "attribution": "ACI-Bench, Yim et al. 2023 (Nature Scientific Data)",
            "changes": "reference-note sentences in order with spoken headings, punctuation and commands; 'mg' "
                       "spoken as 'milligrams'; two numbered plan cues and one scratched sentence added "
                       "(origin='added')",
        },
        "segments": segments,
        "reference_text": " ".join(s["text"] for s in segments),
        "expected": EXPECTED,
    }
    OUT.with_suffix(".json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.with_suffix('.flac')} ({manifest['duration_s']} s) and its manifest")


if __name__ == "__main__":
    sys.exit(main())
