"""The service: the one composition root (``app``) and the I/O shells it wires together.

    app.py             StreamServer: builds everything once; lifecycle; consent withdrawal
    host.py            Host: what a connection or a handler may ask of the service
    engine.py          the shared models and thread pools; per-encounter factories
    auth.py            Gate: authentication, rate limits, scoping, request audit; TLS
    session.py         one websocket recording (protocol, persist, transcribe)
    labelling.py       speaker labels for a recording
    drafting.py        the one draft runner (live and on request)
    encounters_api.py  /v1/encounters… handlers
    review_api.py      /v1/review/… handlers

Arrows point down: the CLI and benchmarks import this package; the feature libraries
(``asr``, ``diarize``, ``notes``, ``fhir``, ``trust``, ``review``) never do.
"""

from .app import StreamServer
from .engine import Engine

__all__ = ["Engine", "StreamServer"]
