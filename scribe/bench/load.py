"""``scribe bench load``: N simulated clinicians stream real audio in real time for M minutes.

Figures, not pass/fail. A real ``scribe serve`` runs as a subprocess (its own interpreter, so
its memory and CPU are measured apart from the clients'); each simulated clinician is a real
``StreamClient`` on its own encounter, playing a real recording paced at real time (looped to
fill the requested minutes). The run reports:

- frames sent / acked / persisted per clinician (they must be equal: an ack means "on disk",
  and the stored audio is compared byte for byte with what was sent);
- the server's RSS sampled every second (peak, and the last minute against the first: memory
  must stay flat while audio keeps arriving) and its CPU use;
- ack latency (frame sent → ack received: the store commit with ``synchronous=FULL``) and
  segment latency (a segment event received → the end of its speech in the audio clock),
  p50/p95.

``ServerProcess`` (start a real server on a free port, SIGKILL it, restart it) is also what
the failure drills in ``tests/drills/test_drills_*.py`` use.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audio import SAMPLE_RATE
from .stats import percentile

FRAME_MS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m scribe serve`` as a child process on 127.0.0.1.

    Configuration goes through the environment exactly as an operator would set it
    (``SCRIBE_DATA_DIR``, ``SCRIBE_SERVER__TOKENS``); the working directory is the data
    directory so no stray ``scribe.toml`` is read. ``kill()`` sends SIGKILL to this one PID:
    no shutdown handler runs, which is the point of the crash drills.
    """

    def __init__(self, data_dir: Path, token: str, *, port: int | None = None,
                 env: dict[str, str] | None = None, log_level: str = "INFO"):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.port = port or free_port()
        self.extra_env = dict(env or {})
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"
        self.starts = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_")}
        env.update({
            "SCRIBE_DATA_DIR": str(self.data_dir),
            "SCRIBE_SERVER__TOKENS": json.dumps([self.token]),
            "SCRIBE_LOG_LEVEL": self.log_level,
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 180.0) -> float:
        """Start and wait until ``/healthz`` answers (the model is loaded before the port is
        bound); returns the seconds that took."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server already running")
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scribe", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.data_dir, env=self._env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self.starts += 1
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scribe serve exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.http}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"scribe serve did not answer /healthz within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, by PID, and reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it does not exit in 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_bytes(self) -> int | None:
        import psutil

        try:
            return int(psutil.Process(self.pid).memory_info().rss)
        except (psutil.Error, AssertionError):
            return None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- the load run




@dataclass
class ClinicianResult:
    encounter_id: str
    frames_sent: int = 0
    frames_acked: int = 0
    frames_persisted: int = 0
    audio_identical: bool = False
    segments: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    ack_latencies: list[float] = field(default_factory=list)
    segment_latencies: list[float] = field(default_factory=list)


async def _clinician(idx: int, url: str, token: str, pcm: bytes, seconds: float, result: ClinicianResult,
                     speed: float) -> None:
    from ..client import StreamClient
    from ..models import Consent
    from ..protocol import AckEvent, SegmentEvent, StartMessage

    step = SAMPLE_RATE * FRAME_MS // 1000 * 2
    total = int(seconds * SAMPLE_RATE) * 2
    sent_at: dict[int, float] = {}
    t_start = 0.0

    async def frames():
        nonlocal t_start
        t_start = time.monotonic()
        produced = 0
        seq = 0
        while produced < total:
            offset = produced % len(pcm)
            chunk = pcm[offset:offset + min(step, total - produced, len(pcm) - offset)]
            if speed > 0:
                due = t_start + produced / 2 / SAMPLE_RATE / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent_at[seq] = time.monotonic()
            seq += 1
            produced += len(chunk)
            yield chunk

    last_ack = -1

    def on_event(event: object) -> None:
        nonlocal last_ack
        now = time.monotonic()
        if isinstance(event, AckEvent):
            for s in range(last_ack + 1, event.seq + 1):
                t = sent_at.pop(s, None)
                if t is not None:
                    result.ack_latencies.append(now - t)
            last_ack = max(last_ack, event.seq)
        elif isinstance(event, SegmentEvent) and speed > 0:
            result.segment_latencies.append(now - (t_start + event.segment.end / speed))

    start = StartMessage(encounter_id=result.encounter_id, clinician_id=f"dr-load-{idx}",
                         patient_ref=f"Patient/load-{idx}", consent=Consent.recorded_now(f"dr-load-{idx}"))
    client = StreamClient(url, start, token=token, on_event=on_event)
    try:
        transcript = await client.run(frames())
        result.segments = len(transcript.segments)
    except Exception as exc:  # noqa: BLE001 -- a figure to report, not a crash of the whole bench
        result.errors.append(f"{type(exc).__name__}: {exc}")
    result.frames_sent = client.next_seq
    result.frames_acked = client._highest_ack + 1
    result.reconnects = max(0, client.stats.connects - 1)
    result.errors += client.stats.errors


def _expected_pcm(pcm: bytes, seconds: float) -> bytes:
    total = int(seconds * SAMPLE_RATE) * 2
    out = bytearray()
    while len(out) < total:
        out += pcm[: total - len(out)]
    return bytes(out)


async def run_load(*, clinicians: int, minutes: float, audio: Path, url: str | None = None,
                   token: str | None = None, data_dir: Path | None = None, speed: float = 1.0,
                   stagger_s: float = 2.0, progress: Any = None) -> dict[str, Any]:
    """Run the load and return the figures (see the module docstring)."""
    import psutil

    from ..audio import float_to_pcm16, load_audio
    from ..config import Settings
    from ..database import open_store

    pcm = float_to_pcm16(load_audio(audio))
    seconds = minutes * 60.0
    owned: ServerProcess | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="scribe-load-")
        token = token or "load-" + os.urandom(12).hex()
        owned = ServerProcess(Path(data_dir or tmp.name) / "data", token)
        startup_s = owned.start()
        url = owned.url
    else:
        startup_s = None
    assert token is not None
    run_id = os.urandom(3).hex()
    results = [ClinicianResult(encounter_id=f"load-{run_id}-{i}") for i in range(clinicians)]
    samples: list[tuple[float, int]] = []
    server_ps = psutil.Process(owned.pid) if owned else None
    me = psutil.Process()
    cpu0 = server_ps.cpu_times() if server_ps else None
    my_cpu0 = me.cpu_times()
    t0 = time.monotonic()

    async def sampler(stop: asyncio.Event) -> None:
        while not stop.is_set():
            if server_ps is not None:
                try:
                    samples.append((time.monotonic() - t0, server_ps.memory_info().rss))
                except psutil.Error:
                    pass
            if progress:
                progress(time.monotonic() - t0, samples[-1][1] if samples else None)
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass

    stop = asyncio.Event()
    sample_task = asyncio.create_task(sampler(stop))
    tasks = []
    for i, r in enumerate(results):
        tasks.append(asyncio.create_task(_clinician(i, url, token, pcm, seconds, r, speed)))
        await asyncio.sleep(stagger_s)
    await asyncio.gather(*tasks)
    wall = time.monotonic() - t0
    stop.set()
    await sample_task
    server_cpu = None
    if server_ps is not None and cpu0 is not None:
        c1 = server_ps.cpu_times()
        server_cpu = (c1.user + c1.system) - (cpu0.user + cpu0.system)
    my1 = me.cpu_times()
    client_cpu = (my1.user + my1.system) - (my_cpu0.user + my_cpu0.system)

    # persisted: read the store the server wrote (only when this run owns the server)
    expected = _expected_pcm(pcm, seconds)
    if owned is not None:
        owned.stop()
        import numpy as np

        store = open_store(Settings(data_dir=owned.data_dir))  # with the server's data key
        try:
            for r in results:
                enc = store.get_encounter(r.encounter_id)
                if enc is None:
                    continue
                r.frames_persisted = enc.last_seq + 1
                stored = np.round(store.audio_from(r.encounter_id, 0) * 32768.0).astype("<i2").tobytes()
                r.audio_identical = stored == expected
        finally:
            store.close()
    if tmp is not None:
        tmp.cleanup()

    rss = [b for _, b in samples]
    first = [b for t, b in samples if t <= 60.0]
    last = [b for t, b in samples if t >= wall - 60.0]
    acks = [x for r in results for x in r.ack_latencies]
    segs = [x for r in results for x in r.segment_latencies]
    cpu_count = os.cpu_count() or 1
    return {
        "clinicians": clinicians,
        "minutes": minutes,
        "speed": speed,
        "audio": str(audio),
        "server_startup_s": startup_s,
        "wall_s": round(wall, 1),
        "frames": {
            "sent": sum(r.frames_sent for r in results),
            "acked": sum(r.frames_acked for r in results),
            "persisted": sum(r.frames_persisted for r in results) if owned else None,
            "audio_identical": all(r.audio_identical for r in results) if owned else None,
            "lost": (sum(r.frames_sent - r.frames_persisted for r in results) if owned
                     else sum(r.frames_sent - r.frames_acked for r in results)),
        },
        "per_clinician": [
            {"encounter": r.encounter_id, "sent": r.frames_sent, "acked": r.frames_acked,
             "persisted": r.frames_persisted, "audio_identical": r.audio_identical, "segments": r.segments,
             "reconnects": r.reconnects, "errors": r.errors[:5]}
            for r in results
        ],
        "server_rss_mb": {
            "peak": round(max(rss) / 2**20, 1) if rss else None,
            "first_minute_max": round(max(first) / 2**20, 1) if first else None,
            "last_minute_max": round(max(last) / 2**20, 1) if last else None,
            "samples": len(rss),
        },
        "server_cpu": ({"seconds": round(server_cpu, 1), "cores_used": round(server_cpu / wall, 2),
                        "of_cores": cpu_count} if server_cpu is not None else None),
        "client_cpu_seconds": round(client_cpu, 1),
        "ack_latency_ms": {"p50": round(percentile(acks, 0.5) * 1000, 1), "p95": round(percentile(acks, 0.95) * 1000, 1),
                           "n": len(acks)},
        "segment_latency_s": {"p50": round(percentile(segs, 0.5), 2), "p95": round(percentile(segs, 0.95), 2),
                              "n": len(segs)},
    }
