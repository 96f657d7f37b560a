"""Failure drills: the store fails under a live encounter (locked, full, corrupt).

Real server (in process, real tiny.en), real websocket, real SQLite file. The faults are real
too: another *process* holds the database's write lock; the data directory is a size-limited
tmpfs that is filled up (or, where mounting is not allowed, SQLite's own ``max_page_count``
limit, which fails the same way with ``SQLITE_FULL``); a committed segment row is overwritten
with garbage from outside. Each time: the store raises an error that names the problem, the
server tells the client (``internal``, fatal: reconnect to resume), nothing acked is lost, and
once the fault is gone the encounter completes with every frame byte-identical.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import websockets
from conftest import SAMPLES, TOKEN, start_server, wait_until
from stream_support import as_pcm, assert_clean_sequence

from scribe.audio import FileSource, float_to_pcm16, iter_chunks, load_audio
from scribe.client import ClientError, StreamClient
from scribe.models import Consent
from scribe.protocol import ErrorEvent, StartMessage, encode_frame, encode_start
from scribe.store import CorruptRow, DatabaseLocked, Store, StoreFull
from scribe.database import open_store

pytestmark = pytest.mark.slow

DICTATION = SAMPLES / "synth_dictation_dev_01.flac"


def start_msg(eid: str) -> StartMessage:
    return StartMessage(encounter_id=eid, clinician_id="dr-drill", patient_ref="Patient/drill-1",
                        consent=Consent.recorded_now("dr-drill"))


def _errors(events: list) -> list[ErrorEvent]:
    return [e for e in events if isinstance(e, ErrorEvent)]


def _failures(caplog: pytest.LogCaptureFixture, exc_type: type[BaseException]) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], exc_type)]


def _assert_all_audio(settings, eid: str, samples) -> None:
    store = open_store(settings)  # with the server's data key
    try:
        assert as_pcm(store.audio_from(eid, 0)) == float_to_pcm16(samples)
        assert store.get_encounter(eid).status.value != "recording"  # transcribed (or drafting on)
    finally:
        store.close()


# --------------------------------------------------------------------------- locked

LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


async def _resume_after(task: asyncio.Task, client: StreamClient, source: FileSource, url: str, eid: str,
                        events: list):
    """The transcript, whether the first client rode the fault out by itself (it reconnects
    after an ``internal`` error, also one before ``ready``) or gave up after its reconnect
    budget; then the app starts a new client with the first one's unacked buffer and the rest
    of the recording."""
    try:
        return await asyncio.wait_for(task, 300), False
    except ClientError:
        again = StreamClient(url, start_msg(eid), token=TOKEN, on_event=events.append)
        again.unacked.extend(client.unacked)
        again.next_seq = client.next_seq
        again.segments.update(client.segments)
        rest = list(iter_chunks(source.samples, source.frame_ms))[client.next_seq:]

        async def remaining():
            for pcm in rest:
                yield pcm

        return await asyncio.wait_for(again.run(remaining()), 300), True


async def test_database_locked_by_another_process_then_released(settings, recognizer, caplog):
    caplog.set_level(logging.ERROR, logger="scribe")
    server = await start_server(settings, recognizer)
    store = server.server.store

    def short_busy_timeout() -> None:  # 10 s by default; 0.5 s keeps the drill short
        store.store.busy_timeout_s = 0.5
        store.store.db.execute("PRAGMA busy_timeout = 500")

    await store.call(short_busy_timeout)
    source = FileSource(DICTATION, speed=6)
    events: list = []
    client = StreamClient(server.url, start_msg("enc-locked"), token=TOKEN, on_event=events.append)
    task = asyncio.create_task(client.run(source.chunks()))
    locker = None
    try:
        await wait_until(lambda: client._highest_ack >= 40, 120, "acks")
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(settings.database_path)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert locker.stdout.readline().strip() == "locked"
        acked_before = client._highest_ack
        # the server fails the write and says so; the client reconnects (and fails again: still locked)
        await wait_until(lambda: len(_errors(events)) >= 3 or task.done(), 60, "internal errors while locked")
        locker.stdin.write("\n")
        locker.stdin.flush()
        assert locker.wait(10) == 0
        transcript, restarted = await _resume_after(task, client, source, server.url, "enc-locked", events)
    finally:
        if locker and locker.poll() is None:
            locker.kill()
        if not task.done():
            task.cancel()
        await server.stop()
    errs = _errors(events)
    assert errs and {e.code for e in errs} == {"internal"} and all(e.fatal for e in errs)
    locked = _failures(caplog, DatabaseLocked)
    assert locked, "the server log does not show the locked database"
    msg = str(locked[0].exc_info[1])
    assert "is locked by another process" in msg and str(settings.database_path) in msg and "enc-locked" in msg
    assert client._highest_ack >= acked_before
    assert_clean_sequence(transcript.segments, source.duration)
    _assert_all_audio(settings, "enc-locked", source.samples)
    print(f"locked drill: {len(errs)} internal errors; client restarted by the app: {restarted}")


async def test_client_rides_out_a_locked_store_at_start(settings, recognizer):
    server = await start_server(settings, recognizer)
    store = server.server.store

    def short_busy_timeout() -> None:
        store.store.busy_timeout_s = 0.2
        store.store.db.execute("PRAGMA busy_timeout = 200")

    await store.call(short_busy_timeout)
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(settings.database_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        events: list = []
        client = StreamClient(server.url, start_msg("enc-locked-start"), token=TOKEN, on_event=events.append)
        task = asyncio.create_task(client.run(FileSource(SAMPLES / "general_jfk.flac", speed=0).chunks()))
        await wait_until(lambda: len(_errors(events)) >= 2 or task.done(), 60, "refusals while locked")
        locker.stdin.write("\n")
        locker.stdin.flush()
        locker.wait(10)
        transcript = await asyncio.wait_for(task, 300)
        assert transcript.segments
    finally:
        if locker.poll() is None:
            locker.kill()
        await server.stop()


# --------------------------------------------------------------------------- disk full


def _mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a size-limited tmpfs (needs root / CAP_SYS_ADMIN). ``SCRIBE_DRILL_NO_MOUNT=1``
    forces the fallback (SQLite's ``max_page_count``), as on a CI runner without root."""
    path.mkdir(parents=True, exist_ok=True)
    if os.environ.get("SCRIBE_DRILL_NO_MOUNT"):
        return False
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem has no space left (unbuffered: every ENOSPC is seen here)."""
    filler = directory / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


async def test_disk_full_mid_encounter_then_space_freed(settings, recognizer, caplog, tmp_path):
    caplog.set_level(logging.ERROR, logger="scribe")
    mount = tmp_path / "small-disk"
    mounted = _mount_tmpfs(mount, "24m")
    try:
        await _disk_full_drill(settings, recognizer, caplog, mount if mounted else None)
    finally:
        if mounted:
            _unmount(mount)


async def _disk_full_drill(settings, recognizer, caplog, mount: Path | None) -> None:
    if mount is not None:
        settings.data_dir = mount  # a real 24 MiB filesystem: ENOSPC is real
    server = await start_server(settings, recognizer)
    store = server.server.store
    source = FileSource(DICTATION, speed=6)
    events: list = []
    client = StreamClient(server.url, start_msg("enc-full"), token=TOKEN, on_event=events.append)
    task = asyncio.create_task(client.run(source.chunks()))
    filler = None
    try:
        await wait_until(lambda: client._highest_ack >= 40, 120, "acks")
        if mount is not None:
            filler = await asyncio.to_thread(_fill, mount)
        else:  # no mount permission (CI): SQLite's own size limit gives the same SQLITE_FULL
            await store.call(lambda: store.store.db.execute(
                "PRAGMA max_page_count = " + str(store.store.db.execute("PRAGMA page_count").fetchone()[0])))
        acked_before = client._highest_ack
        await wait_until(lambda: len(_errors(events)) >= 3 or task.done(), 60, "internal errors while full")
        if filler is not None:
            filler.unlink()
        else:
            await store.call(lambda: store.store.db.execute("PRAGMA max_page_count = 1073741823"))
        transcript, restarted = await _resume_after(task, client, source, server.url, "enc-full", events)
    finally:
        if not task.done():
            task.cancel()
        await server.stop()
        if filler is not None and filler.exists():
            filler.unlink()
    errs = _errors(events)
    assert errs and {e.code for e in errs} == {"internal"} and all(e.fatal for e in errs)
    full = _failures(caplog, StoreFull)
    assert full, "the server log does not show the full disk"
    msg = str(full[0].exc_info[1])
    assert "is full" in msg and "enc-full" in msg and "Free disk space" in msg
    assert client._highest_ack >= acked_before
    assert_clean_sequence(transcript.segments, source.duration)
    _assert_all_audio(settings, "enc-full", source.samples)
    print(f"disk-full drill mode: {'tmpfs 24m filled: ENOSPC' if mount else 'PRAGMA max_page_count'}; "
          f"{len(errs)} internal errors; {client.stats.connects} connections; app restart: {restarted}")


# --------------------------------------------------------------------------- corrupt row


async def test_corrupt_segment_row_is_named_refused_and_nothing_else_is_lost(settings, recognizer, caplog):
    caplog.set_level(logging.ERROR, logger="scribe")
    eid = "enc-corrupt"
    samples = load_audio(DICTATION)
    pcm = float_to_pcm16(samples)
    frames = [pcm[i:i + 3200] for i in range(0, len(pcm), 3200)]
    server = await start_server(settings, recognizer)
    try:
        # Part of the visit, then the network drops.
        ws = await websockets.connect(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
        await ws.send(encode_start(start_msg(eid)))
        assert json.loads(await ws.recv())["type"] == "ready"
        sent = 200
        for seq in range(sent):
            await ws.send(encode_frame(seq, frames[seq]))
        last_ack, segments = -1, 0
        while last_ack < sent - 1 or segments < 2:
            e = json.loads(await asyncio.wait_for(ws.recv(), 120))
            last_ack = e["seq"] if e["type"] == "ack" else last_ack
            segments += e["type"] == "segment"
        ws.transport.abort()
        await asyncio.sleep(0.3)

        # Garbage lands in a committed segment row (a bad disk sector, a hand edit).
        raw = sqlite3.connect(settings.database_path, isolation_level=None)
        original = raw.execute("SELECT data FROM segments WHERE encounter_id = ? AND idx = 1", (eid,)).fetchone()[0]
        raw.execute("UPDATE segments SET data = ? WHERE encounter_id = ? AND idx = 1", ('{"index": 1, "te\x00', eid))
        raw.close()

        # A resume must not skip or paper over the damaged segment: it is refused, clearly.
        events: list = []
        client = StreamClient(server.url, start_msg(eid), token=TOKEN, on_event=events.append, max_reconnects=2)
        client.unacked.extend((s, frames[s]) for s in range(sent, len(frames)))
        client.next_seq = len(frames)

        async def nothing():
            return
            yield b""

        with pytest.raises(ClientError):  # gives up after its 2 reconnection attempts
            await asyncio.wait_for(client.run(nothing()), 120)
        errs = _errors(events)
        assert errs and {e.code for e in errs} == {"internal"} and all(e.fatal for e in errs)
        corrupt = _failures(caplog, CorruptRow)
        assert corrupt, "the server log does not name the corrupt row"
        msg = str(corrupt[0].exc_info[1])
        assert f"encounter {eid}: transcript segment 1" in msg and "corrupt" in msg
        assert "te\x00" not in msg and "\\x00" not in msg  # names the row, never quotes its content

        # Nothing acked was lost meanwhile, and no frame of the failed resume was taken.
        check = open_store(settings)
        try:
            enc = check.get_encounter(eid)
            assert enc.last_seq == sent - 1 and enc.status.value == "recording"
            assert as_pcm(check.audio_from(eid, 0)) == b"".join(frames[:sent])
            with pytest.raises(CorruptRow):
                check.segments(eid)
        finally:
            check.close()

        # Restore the row from "backup": the encounter resumes and completes, every frame intact.
        raw = sqlite3.connect(settings.database_path, isolation_level=None)
        raw.execute("UPDATE segments SET data = ? WHERE encounter_id = ? AND idx = 1", (original, eid))
        raw.close()
        client = StreamClient(server.url, start_msg(eid), token=TOKEN)
        client.unacked.extend((s, frames[s]) for s in range(sent, len(frames)))
        client.next_seq = len(frames)
        transcript = await asyncio.wait_for(client.run(nothing()), 300)
        assert_clean_sequence(transcript.segments, len(samples) / 16_000)
        check = open_store(settings)
        try:
            assert as_pcm(check.audio_from(eid, 0)) == pcm
        finally:
            check.close()
    finally:
        await server.stop()


async def test_http_transcript_of_a_corrupt_encounter_says_what_is_wrong(settings, recognizer):
    eid = "enc-corrupt-http"
    store = open_store(settings)
    store.open_encounter(eid, clinician_id="dr-drill", patient_ref="Patient/drill-1", language="en",
                         sample_rate=16000, consent=Consent.recorded_now("dr-drill"))
    store.close()
    raw = sqlite3.connect(settings.database_path, isolation_level=None)
    raw.execute("INSERT INTO segments (encounter_id, idx, id, start, \"end\", data) VALUES (?, 0, 's0', 0, 1, 'x')",
                (eid,))
    raw.execute("UPDATE encounters SET segment_count = 1 WHERE id = ?", (eid,))
    raw.close()
    server = await start_server(settings, recognizer)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for path in (f"/v1/encounters/{eid}/transcript", f"/v1/review/encounters/{eid}/transcript"):
                async with http.get(server.http + path) as r:
                    body = await r.text()
                    assert r.status >= 500  # never a 200 with a silently shortened transcript
                    assert r.content_type == "application/json" and "corrupt" in body, (path, r.status, body)
    finally:
        await server.stop()


def test_store_full_rolls_back_the_whole_batch_and_the_store_stays_usable(tmp_path):
    """Store level, no server: a batch that does not fit is refused whole (no partial frames, no
    half-updated resume point), the error says what to do, and once there is room the same
    connection writes again (no transaction left open, no masked error)."""
    store = Store(tmp_path / "scribe.db")
    try:
        store.open_encounter("enc-s", clinician_id="dr", patient_ref="Patient/x", language="en",
                             sample_rate=16000, consent=Consent.recorded_now("dr"))
        store.append_frames("enc-s", [(0, b"\1\0" * 1600)])
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages + 2}")
        batch = [(seq, bytes([seq % 256, 0]) * 1600) for seq in range(1, 40)]
        with pytest.raises(StoreFull, match=r"encounter enc-s: saving audio frames: the database .* is full"):
            store.append_frames("enc-s", batch)
        assert not store.db.in_transaction and store._tx_depth == 0
        enc = store.get_encounter("enc-s")
        assert (enc.last_seq, enc.samples_received) == (0, 1600)
        assert store.db.execute("SELECT count(*) FROM frames").fetchone()[0] == 1
        store.db.execute("PRAGMA max_page_count = 1073741823")
        assert store.append_frames("enc-s", batch) == (39, 40 * 1600)
        assert as_pcm(store.audio_from("enc-s", 0)) == b"\1\0" * 1600 + b"".join(p for _, p in batch)
    finally:
        store.close()


def test_locked_database_error_names_the_file_and_keeps_sqlite3_compatibility(tmp_path):
    db = tmp_path / "scribe.db"
    store = Store(db)
    store.open_encounter("enc-l", clinician_id="dr", patient_ref="Patient/x", language="en",
                         sample_rate=16000, consent=Consent.recorded_now("dr"))
    store.db.execute("PRAGMA busy_timeout = 100")
    store.busy_timeout_s = 0.1
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError) as info:  # still catchable as before
            store.append_frames("enc-l", [(0, b"\0\0")])
        assert isinstance(info.value, DatabaseLocked)
        assert f"encounter enc-l: saving audio frames: the database {db} is locked" in str(info.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.append_frames("enc-l", [(0, b"\0\0")]) == (0, 1)
    store.close()
