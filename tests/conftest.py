"""Shared fixtures: settings in a temp dir, the real recogniser, a live server on a free port."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from aiohttp import web

from scribe.config import Settings

# The product's default note writer is ``llama`` (Qwen2.5-Coder-1.5B in llama.cpp, ~1.1 GB, a
# minute or more per note on 2 cores). tests/notes/writers/test_writer_llama.py runs that path for
# real with the small packaged SmolLM2 (and checks the default); every other test drafts with the
# extractive writer, which the llama writer also falls back to. Subprocesses inherit this.
os.environ.setdefault("SCRIBE_NOTES__WRITER", "extractive")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TOKEN = "test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference_text(audio: Path) -> str:
    return json.loads(audio.with_suffix(".json").read_text())["reference_text"]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    s = Settings(data_dir=tmp_path / "data")
    s.server.tokens = [SecretStr(TOKEN)]
    s.server.port = free_port()
    s.trust.rate_per_second, s.trust.rate_burst = 10_000.0, 100_000.0  # rate limits have their own test
    s.asr.cache_dir = Path.home() / ".cache" / "scribe-test-models"
    return s


@pytest.fixture(scope="session")
def recognizer():
    """The real tiny.en model, loaded once for the whole run."""
    from scribe.asr.whisper import WhisperRecognizer

    return WhisperRecognizer("tiny.en", cache_dir=Path.home() / ".cache" / "scribe-test-models", cpu_threads=2)


class RunningServer:
    def __init__(self, server, runner: web.AppRunner, port: int):
        self.server = server
        self.runner = runner
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/v1/stream"
        self.http = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_server(settings: Settings, recognizer) -> RunningServer:
    from scribe.service import Engine, StreamServer

    server = StreamServer(settings, engine=Engine(settings, recognizer=recognizer))
    runner = server.runner(shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", settings.server.port)
    await site.start()
    return RunningServer(server, runner, settings.server.port)


@pytest.fixture
async def live_server(settings: Settings, recognizer) -> AsyncIterator[RunningServer]:
    running = await start_server(settings, recognizer)
    try:
        yield running
    finally:
        await running.stop()
        await asyncio.sleep(0)


async def wait_until(predicate, timeout: float, what: str, poll: float = 0.01) -> None:
    """Let the event loop run until ``predicate()`` holds; an upper bound on waiting, not a
    timing assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)


@pytest.fixture
def isolated_cli(tmp_path, monkeypatch):
    """A CLI command run in its own folder with its own data directory and no site config
    (``tests/cli``; a conftest there would shadow this module, which tests import by name)."""
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
