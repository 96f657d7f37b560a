"""The service and its configuration: ``scribe serve``, ``scribe config``, ``scribe models``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import __version__
from .common import UserError, asr_args, console, err, settings_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the streaming service",
                       description="Run the websocket + HTTP service. Needs at least one API token "
                                   "(SCRIBE_SERVER__TOKENS='[\"...\"]').")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8765)")
    asr_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("models", help="list the offline models and where they are")
    p.add_argument("--verify", action="store_true", help="hash-check the assembled base model")
    p.set_defaults(func=cmd_models)


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    console.print_json(json.dumps(settings.public_dict()))
    return 0



def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from ..logs import setup_logging
    from ..service import StreamServer

    settings = settings_from_args(args)
    if args.host:
        settings.server.host = args.host
    if args.port is not None:
        settings.server.port = args.port
    setup_logging(settings.log_level)
    try:
        server = StreamServer(settings)
        tls = server.ssl_context()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    scheme = "wss" if tls else "ws"
    err.print(f"scribe {__version__} serving {scheme}://{settings.server.host}:{settings.server.port}/v1/stream "
              f"(model {settings.asr.model}, store {settings.database_path})")
    if tls is None and settings.server.host not in ("127.0.0.1", "localhost", "::1"):
        err.print("[yellow]warning:[/] serving without TLS on a non-loopback address: set server.tls_cert_file/"
                  "tls_key_file or put a TLS reverse proxy in front (docs/deployment.md)")
    web.run_app(server.app(), host=settings.server.host, port=settings.server.port, print=None,
                handle_signals=True, ssl_context=tls, **server.http_options())
    return 0



def cmd_models(args: argparse.Namespace) -> int:
    from ..asr.registry import ModelNotFound, resolve_model, verify_base

    settings = settings_from_args(args)
    for name in ("tiny.en", "base"):
        try:
            info = resolve_model(name, settings.model_cache_dir)
            extra = ""
            if name == "base" and args.verify:
                extra = " sha256 ok" if verify_base(settings.model_cache_dir) else " [red]sha256 MISMATCH[/]"
            console.print(f"[green]{name}[/] {info.path}{extra}")
        except ModelNotFound as exc:
            console.print(f"[red]{name}[/] {exc}")
    return 0

