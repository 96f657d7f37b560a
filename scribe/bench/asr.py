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
from typing import TYPE_CHECKING

import numpy as np
from rich.table import Table

from .stats import percentile

if TYPE_CHECKING:
    from ..config import Settings

DEFAULT_FILES = [
    "../shared/eval/audio/synth_dialogue_dev_01.flac",
    "../shared/eval/audio/synth_dictation_dev_01.flac",
    *sorted(str(p) for p in Path("../shared/eval/real_audio").glob("osce_*.mp3")),
]


def _stream(settings: Settings, rec, audio: np.ndarray, *, shed: bool = True):
    """Stream ``audio`` through the server's transcriber on a simulated real-time clock: 100 ms
    frames arrive in real time; each ``feed`` takes its measured wall time; a transcriber that
    is behind gets what has queued (up to 2 s, as the server coalesces) without partials or
    early re-decodes (as the server does; ``shed=False``: never, so which decodes run does not
    depend on the machine's speed). Latency of a ``feed``'s commits: the clock when it returns
    minus the end of the last committed word (one stream, no network)."""
    from ..asr.streaming import Committed, UtteranceTranscriber
    from ..asr.vad import StreamingVad

    asr = settings.asr
    cfg = asr.segmenter_config()
    tr = UtteranceTranscriber(rec, StreamingVad(), cfg, **asr.utterance_options())
    segments, latencies, lags = [], [], []
    t0 = time.process_time()
    w0 = time.perf_counter()
    clock, i, n = 0.0, 0, len(audio)
    while i < n:
        arrived = int(clock * 16000) // 1600 * 1600
        j = min(n, max(i + 1600, min(arrived, i + 32000)) if shed else i + 1600)
        t = time.perf_counter()
        events = tr.feed(audio[i:j], allow_partial=arrived <= j or not shed)
        clock = max(clock, j / 16000) + time.perf_counter() - t
        i = j
        new = [seg for e in events if isinstance(e, Committed) for seg in e.segments]
        if new:
            segments += new
            latencies.append(max(0.0, clock - max(seg.end for seg in new)))
            lags += [max(0.0, clock - seg.end) for seg in new]
    f0 = time.perf_counter()
    for e in tr.flush():
        if isinstance(e, Committed):
            segments += e.segments
    _stream.flush_wall = time.perf_counter() - f0
    _stream.last = tr  # the bench reads the partial-decode accounting from it
    return segments, time.process_time() - t0, time.perf_counter() - w0, latencies, lags


def _record_pass(settings: Settings, rec, audio: np.ndarray, live: list, flush_wall: float = 0.0):
    """The record pass over ``audio`` as the server runs it (``scribe.asr.record.RecordPass``):
    windows planned from the live segments as each one is committed (each window decoded when
    it is planned), the rest after stop. Returns the segments, the decode CPU time, the number
    of windows, and stop → final transcript: ``flush_wall`` (the live pass's last utterance)
    plus the wall time of the windows decoded after stop."""
    from ..asr.offline import transcribe_window
    from ..asr.record import RecordPass

    state = RecordPass(window_s=settings.asr.record_window_s)
    out: list = []
    cpu0 = time.process_time()

    def run(final: bool) -> None:
        while (plan := state.next(final=final)) is not None:
            decoded = transcribe_window(rec, audio[plan.start:plan.end], offset=plan.start / 16000,
                                        prompt=state.prompt if settings.asr.record_prompt else None)
            out.extend(state.accept(plan, decoded).segments)

    for seg in live:
        state.add_live([seg], int(seg.end * 16000))
        run(False)
    windows_live = state.number
    w0 = time.perf_counter()
    state.add_live([], len(audio))
    run(True)
    stop_to_final = flush_wall + time.perf_counter() - w0
    return out, time.process_time() - cpu0, state.number, state.number - windows_live, stop_to_final


async def _concurrent_streams(settings: Settings, rec, audio: np.ndarray, level: int) -> dict:
    """``level`` clients stream ``audio`` in real time, at once, through a real server on
    loopback (shared recogniser and ASR thread, as ``scribe serve`` runs). Commit latency is
    measured end to end: the wall time a ``segment`` event reaches the client minus the wall
    time its last word was spoken (stream start + segment end)."""
    import asyncio
    import secrets
    import socket

    from aiohttp import web
    from pydantic import SecretStr

    from ..audio import iter_chunks
    from ..client import StreamClient
    from ..models import Consent
    from ..protocol import SegmentEvent, StartMessage
    from ..service import Engine, StreamServer
    from ..store import Store

    token = secrets.token_urlsafe(12)
    cfg = settings.model_copy(deep=True)
    cfg.server.tokens = [SecretStr(token)]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = StreamServer(cfg, engine=Engine(cfg, recognizer=rec), store=Store(":memory:"))
    runner = server.runner()
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    latencies: list[float] = []
    segment_lags: list[float] = []
    lags: list[float] = []
    duration = len(audio) / 16000

    async def one(i: int) -> None:
        t0 = 0.0

        async def paced():
            nonlocal t0
            t0 = time.perf_counter()
            sent = 0.0
            for pcm in iter_chunks(audio, 100):
                delay = t0 + sent - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                yield pcm
                sent += len(pcm) / 2 / 16000

        burst: list[tuple[float, float]] = []  # (arrival, segment end) of the commit being received

        def close_burst() -> None:
            if burst:
                arrival, end = burst[-1]
                latencies.append(arrival - (t0 + end))
                burst.clear()

        def on_event(event):
            # One commit (one closed utterance) arrives as a burst of segment events; its latency
            # is that of its last segment: the end of the utterance's speech to its arrival.
            if isinstance(event, SegmentEvent) and t0:
                now = time.perf_counter()
                if burst and now - burst[-1][0] > 0.05:
                    close_burst()
                burst.append((now, event.segment.end))
                segment_lags.append(now - (t0 + event.segment.end))

        start = StartMessage(encounter_id=f"bench-{level}-{i}", clinician_id="bench", patient_ref="Patient/bench",
                             consent=Consent.recorded_now("bench"))
        await StreamClient(f"ws://127.0.0.1:{port}/v1/stream", start, token=token, on_event=on_event).run(paced())
        close_burst()
        lags.append(time.perf_counter() - (t0 + duration))

    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(level)))
    finally:
        await runner.cleanup()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return {"streams": level, "audio_s": round(duration, 1), "commits": len(latencies),
            "segment_lag_p50": percentile(segment_lags, 0.5),
            "latency_p50": percentile(latencies, 0.5), "latency_p95": percentile(latencies, 0.95),
            "latency_max": max(latencies, default=float("nan")), "done_lag_max": max(lags, default=float("nan")),
            "cpu_per_audio_s": cpu / (duration * level), "cpu_util": cpu / wall}


def run_asr_bench(args, settings: Settings, recognizer, *, console) -> int:
    """``recognizer``: a factory for the configured recogniser (the CLI turns a missing model
    into a clear error)."""
    import medwer

    from ..asr.offline import transcribe_samples
    from ..audio import load_audio

    if not console.is_terminal:
        console.width = max(console.width, 160)  # a file or pipe gets the whole table
    rec = recognizer()
    rec_pass = None
    if settings.asr.record_pass:
        from ..asr.whisper import WhisperRecognizer

        rec_pass = WhisperRecognizer.for_record_pass(settings)
    if getattr(args, "greedy", False):
        rec.fallback_temperature = None  # deterministic decodes: compare policies, not dice
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
        segs, st_cpu, st_wall, lat, lags = _stream(settings, rec, audio, shed=not getattr(args, "greedy", False))
        record = {}
        if rec_pass is not None:
            rsegs, r_cpu, windows, after_stop, stop_final = _record_pass(settings, rec_pass, audio, segs,
                                                                         _stream.flush_wall)
            rs = scorer.corpus([ref], [" ".join(x.text for x in rsegs)])
            if settings.asr.record_model == settings.asr.model:
                ro = None
            else:
                ro = scorer.corpus([ref], [transcribe_samples(rec_pass, audio).text])
            record = {"record_wer": rs["wer"], "record_med_wer": rs["medical_wer"], "record_cpu_per_s": r_cpu / dur,
                      "record_windows": windows, "record_windows_after_stop": after_stop,
                      "stop_to_final_s": stop_final,
                      "record_model_offline_wer": ro["wer"] if ro else None}
        partial_share = getattr(_stream.last, "partial_wall_s", 0.0) / st_wall if st_wall else 0.0
        early_share = getattr(_stream.last, "early_wall_s", 0.0) / st_wall if st_wall else 0.0
        o = scorer.corpus([ref], [off.text])
        s = scorer.corpus([ref], [" ".join(x.text for x in segs)])
        lat_sorted = sorted(lat) or [float("nan")]
        r = {
            "file": path.name, "audio_s": round(dur, 1),
            "offline_wer": o["wer"], "offline_med_wer": o["medical_wer"], "offline_cpu_per_s": off_cpu / dur,
            "stream_wer": s["wer"], "stream_med_wer": s["medical_wer"], "stream_cpu_per_s": st_cpu / dur,
            "partials_share": partial_share, "early_share": early_share, "commits": len(lat),
            "latency_p50": lat_sorted[len(lat_sorted) // 2],
            "latency_p95": lat_sorted[min(len(lat_sorted) - 1, int(0.95 * len(lat_sorted)))],
            "latency_max": lat_sorted[-1], "segment_lag_p95": percentile(lags, 0.95),
            **record,
        }
        if record:
            same = record["record_model_offline_wer"]
            r["record_vs_offline"] = record["record_wer"] / (same if same is not None else o["wer"])
            r["both_cpu_per_s"] = r["stream_cpu_per_s"] + record["record_cpu_per_s"]
        if getattr(args, "live", False):
            # One real-time stream of this file end to end (server, websocket, client).
            import asyncio

            console.print(f"{path.name}: live stream …", style="dim")
            live = asyncio.run(_concurrent_streams(settings, rec, audio[: int(args.stream_seconds * 16000)], 1))
            r.update({f"live_{k}": live[k] for k in ("commits", "latency_p50", "latency_p95", "latency_max")})
        results.append(r)
        rows.append(r)
        console.print(f"{path.name}: done", style="dim")
    table = Table(title=f"scribe bench asr — model {settings.asr.model}, {rec.device}/{rec.compute_type}")
    for col in ("file", "audio s", "offline WER", "stream WER", "offline med-WER", "stream med-WER",
                "offline CPU-s/s", "stream CPU-s/s", "partials share", "early share", "commits", "commit p50 s",
                "commit p95 s", "commit max s", "segment lag p95 s"):
        table.add_column(col)
    live_cols = bool(rows and "live_latency_p95" in rows[0])
    if live_cols:
        for col in ("live commits", "live p50 s", "live p95 s", "live max s"):
            table.add_column(col)

    def f(x):
        return "—" if x is None else f"{x:.3f}"

    for r in rows:
        table.add_row(r["file"], f"{r['audio_s']:.0f}", f(r["offline_wer"]), f(r["stream_wer"]),
                      f(r["offline_med_wer"]), f(r["stream_med_wer"]), f(r["offline_cpu_per_s"]),
                      f(r["stream_cpu_per_s"]), f"{r['partials_share']:.0%}", f"{r['early_share']:.0%}",
                      str(r["commits"]), f(r["latency_p50"]), f(r["latency_p95"]), f(r["latency_max"]),
                      f(r["segment_lag_p95"]),
                      *([str(r["live_commits"]), f(r["live_latency_p50"]), f(r["live_latency_p95"]),
                         f(r["live_latency_max"])] if live_cols else []))
    console.print(table)
    if rows and "record_wer" in rows[0]:
        same = settings.asr.record_model == settings.asr.model
        rtable = Table(title=f"record pass — model {settings.asr.record_model}, windows of "
                             f"{settings.asr.record_window_s:g} s, {settings.asr.record_threads or 'all'} thread(s)")
        for col in ("file", "offline WER" + ("" if same else f" ({settings.asr.record_model})"), "live WER",
                    "record WER", "record / offline", "record med-WER", "live CPU-s/s", "record CPU-s/s",
                    "both CPU-s/s", "windows", "after stop", "stop → final s"):
            rtable.add_column(col)
        for r in rows:
            rtable.add_row(r["file"], f(r["offline_wer"] if same else r["record_model_offline_wer"]),
                           f(r["stream_wer"]), f(r["record_wer"]), f"{r['record_vs_offline']:.3f}",
                           f(r["record_med_wer"]), f(r["stream_cpu_per_s"]), f(r["record_cpu_per_s"]),
                           f(r["both_cpu_per_s"]), str(r["record_windows"]), str(r["record_windows_after_stop"]),
                           f(r["stop_to_final_s"]))
        console.print(rtable)
        console.print("Record pass: the server's record pass over the same audio, windows planned from the live "
                      "segments as they are committed, the rest after stop. Stop → final: the live pass's last "
                      "utterance plus the record windows decoded after stop (wall time, this machine).")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"peak RSS {peak:.0f} MiB. CPU-s/s is process CPU time per audio second (2 threads). "
                  "Partials share: the part of the streaming decode time spent on display-only partials; "
                  "early share: on re-decodes for early commits (asr.early_commit_s). Commit latency here is "
                  "simulated (real-time arrival, measured decode times, one stream, no network): the end of "
                  "a commit's last word to its commit; segment lag: the same for every segment. The live "
                  "columns (--live) and the concurrency table measure it end to end.")
    concurrency = []
    levels = [int(x) for x in str(args.streams).split(",") if x.strip()]
    if levels and files:
        import asyncio

        path = Path(files[0])
        audio = load_audio(path)[: int(args.stream_seconds * 16000)]
        ctable = Table(title=f"concurrent real-time streams ({path.name}, {len(audio) / 16000:.0f} s each, "
                             "end-to-end over loopback websockets)")
        for col in ("streams", "commits", "commit p50 s", "commit p95 s", "commit max s", "segment lag p50 s", "done lag s",
                    "CPU-s/audio-s", "CPU util", "sustained"):
            ctable.add_column(col)
        for level in levels:
            console.print(f"{level} concurrent stream(s) …", style="dim")
            c = asyncio.run(_concurrent_streams(settings, rec, audio, level))
            # Sustained: latency within the target and the transcript finished promptly.
            c["sustained"] = bool(c["latency_p95"] <= 2.0 and c["done_lag_max"] <= 5.0)
            concurrency.append(c)
            ctable.add_row(str(level), str(c["commits"]), f(c["latency_p50"]), f(c["latency_p95"]),
                           f(c["latency_max"]), f(c["segment_lag_p50"]), f(c["done_lag_max"]), f(c["cpu_per_audio_s"]), f(c["cpu_util"]),
                           "yes" if c["sustained"] else "no")
            if not c["sustained"] and c["latency_p50"] > 5.0:
                break  # far past saturation: higher levels only take longer to say the same
        console.print(ctable)
        console.print("Commit latency: end of an utterance's speech to the arrival of its last segment (end to end). "
                      "Segment lag: the same for every segment (a segment early in a long utterance waits for the "
                      "utterance to close). Sustained = commit latency p95 <= 2.0 s and done <= 5 s after the audio "
                      "ended. CPU util is process CPU seconds per wall second (2.0 = both cores busy).")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"results": results, "concurrency": concurrency,
                                                   "peak_rss_mib": peak}, indent=2))
    return 0
