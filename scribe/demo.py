"""``scribe demo``: the main job end to end on the embedded defaults.

Starts the real service in-process on a free loopback port with a one-off token, streams the
bundled sample encounter through the real websocket client, prints the live transcript and
writes the final transcript to ``--out``. No network beyond loopback, no downloads.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from pathlib import Path

from pydantic import SecretStr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(args, *, console, err) -> int:
    from aiohttp import web

    from .audio import FileSource
    from .cli import UserError, _live_printer, recognizer_from_settings, settings_from_args
    from .client import StreamClient
    from .models import Consent
    from .protocol import StartMessage
    from .resources import samples_dir
    from .server import Engine, StreamServer

    sample = Path(args.sample) if args.sample else (samples_dir() or Path("samples")) / "synth_dialogue_dev_01.flac"
    if not sample.is_file():
        raise UserError(f"sample audio not found: {sample}; pass --sample FILE")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings_from_args(args)
    settings.data_dir = out / "data"
    token = secrets.token_urlsafe(16)
    settings.server.tokens = [SecretStr(token)]
    settings.server.port = _free_port()
    err.print(f"[bold]scribe demo[/]: loading {settings.asr.model} …")
    engine = Engine(settings, recognizer=recognizer_from_settings(settings))

    async def main():
        server = StreamServer(settings, engine=engine)
        runner = web.AppRunner(server.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.server.port).start()
        try:
            source = FileSource(sample, speed=args.speed)
            eid = f"demo-{secrets.token_hex(4)}"
            start = StartMessage(encounter_id=eid, clinician_id="demo-clinician", patient_ref="Patient/demo",
                                 consent=Consent.recorded_now("demo-clinician"))
            client = StreamClient(f"ws://127.0.0.1:{settings.server.port}/v1/stream", start, token=token,
                                  on_event=_live_printer())
            err.print(f"streaming {sample.name} ({source.duration:.0f} s of audio) through ws://127.0.0.1:"
                      f"{settings.server.port}/v1/stream")
            return await client.run(source.chunks())
        finally:
            await runner.cleanup()

    transcript = asyncio.run(main())
    path = out / f"{transcript.encounter_id}.transcript.json"
    path.write_text(transcript.model_dump_json(indent=2), encoding="utf-8")
    err.print(f"[green]done[/]: {len(transcript.segments)} segments, {transcript.duration:.0f} s of audio; "
              f"transcript written to {path}; store at {settings.database_path}")
    return 0
