"""``scribe bench asr``: streaming vs offline transcription of the same audio, same run.

Figures, not pass/fail. For each file: normalised WER and medical-term WER (medwer) for the
offline baseline (faster-whisper's own VAD batching, padded encoder) and for scribe's
streaming path (the same code the server runs, fed 100 ms frames); compute per audio second;
commit latency after end of utterance, estimated as the end-of-speech wait (the audio between
the utterance's last voiced window and the moment the segmenter closed it) plus the measured
decode time; and peak RSS.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
from rich.table import Table

DEFAULT_FILES = [
    "../shared/eval/audio/synth_dialogue_dev_01.flac",
    "../shared/eval/audio/synth_dictation_dev_01.flac",
    *sorted(str(p) for p in Path("../shared/eval/real_audio").glob("osce_*.mp3")),
]


def _stream(settings, rec, audio: np.ndarray):
    from ..asr.commit import SegmenterConfig
    from ..asr.streaming import Committed, UtteranceTranscriber
    from ..asr.vad import StreamingVad

    asr = settings.asr
    cfg = SegmenterConfig.from_ms(threshold=asr.vad_threshold, min_silence_ms=asr.min_silence_ms,
                                  max_utterance_s=asr.max_utterance_s, speech_pad_ms=asr.speech_pad_ms)
    tr = UtteranceTranscriber(rec, StreamingVad(), cfg, partial_interval_s=asr.partial_interval_s,
                              context_s=asr.context_s)
    segments, latencies = [], []
    t0 = time.process_time()
    w0 = time.perf_counter()
    for i in range(0, len(audio), 1600):
        t = time.perf_counter()
        events = tr.feed(audio[i:i + 1600])
        decode = time.perf_counter() - t
        fed_until = (i + len(audio[i:i + 1600])) / 16000
        for e in events:
            if isinstance(e, Committed) and e.segments:
                segments += e.segments
                speech_end = max(s.end for s in e.segments)
                latencies.append(max(0.0, fed_until - speech_end) + decode)
    for e in tr.flush():
        if isinstance(e, Committed):
            segments += e.segments
    return segments, time.process_time() - t0, time.perf_counter() - w0, latencies


def run_asr_bench(args, *, console) -> int:
    import medwer

    from ..asr.offline import transcribe_samples
    from ..audio import load_audio
    from ..cli import _recognizer, _settings

    settings = _settings(args)
    rec = _recognizer(settings)
    scorer = medwer.Scorer()
    files = args.files or [f for f in DEFAULT_FILES if Path(f).is_file()]
    rows, results = [], []
    for f in files:
        path = Path(f)
        meta = json.loads(path.with_suffix(".json").read_text())
        audio = load_audio(path)
        ref = meta["reference_text"]
        if args.max_seconds:
            audio = audio[: int(args.max_seconds * 16000)]
            words = ref.split()
            ref = " ".join(words[: int(len(words) * min(1.0, args.max_seconds / meta["duration_s"]))])
        dur = len(audio) / 16000
        t0 = time.process_time()
        off = transcribe_samples(rec, audio)
        off_cpu = time.process_time() - t0
        segs, st_cpu, _, lat = _stream(settings, rec, audio)
        o = scorer.corpus([ref], [off.text])
        s = scorer.corpus([ref], [" ".join(x.text for x in segs)])
        lat_sorted = sorted(lat) or [float("nan")]
        r = {
            "file": path.name, "audio_s": round(dur, 1),
            "offline_wer": o["wer"], "offline_med_wer": o["medical_wer"], "offline_cpu_per_s": off_cpu / dur,
            "stream_wer": s["wer"], "stream_med_wer": s["medical_wer"], "stream_cpu_per_s": st_cpu / dur,
            "latency_p50": lat_sorted[len(lat_sorted) // 2],
            "latency_p95": lat_sorted[min(len(lat_sorted) - 1, int(0.95 * len(lat_sorted)))],
        }
        results.append(r)
        rows.append(r)
        console.print(f"{path.name}: done", style="dim")
    table = Table(title=f"scribe bench asr — model {settings.asr.model}, {rec.device}/{rec.compute_type}")
    for col in ("file", "audio s", "offline WER", "stream WER", "offline med-WER", "stream med-WER",
                "offline CPU-s/s", "stream CPU-s/s", "commit p50 s", "commit p95 s"):
        table.add_column(col)

    def f(x):
        return "—" if x is None else f"{x:.3f}"

    for r in rows:
        table.add_row(r["file"], f"{r['audio_s']:.0f}", f(r["offline_wer"]), f(r["stream_wer"]),
                      f(r["offline_med_wer"]), f(r["stream_med_wer"]), f(r["offline_cpu_per_s"]),
                      f(r["stream_cpu_per_s"]), f(r["latency_p50"]), f(r["latency_p95"]))
    console.print(table)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"peak RSS {peak:.0f} MiB. CPU-s/s is process CPU time per audio second (2 threads).")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"results": results, "peak_rss_mib": peak}, indent=2))
    return 0
