"""Logging without PHI.

Log lines carry ids, codes, counts and timings — never transcript or note text, patient
references or tokens. The formatter prints only ``extra`` fields whose names are on an
allow-list, so a careless ``extra={"text": ...}`` is dropped rather than written to disk.
"""

from __future__ import annotations

import json
import logging
import sys

SAFE_FIELDS = frozenset({
    "encounter", "resumed", "next_seq", "backlog_s", "segments", "audio_s", "count", "store_ms",
    "model", "device", "compute_type", "hotwords", "reason", "peer", "attempt", "delay_s", "code",
    "status", "duration_ms", "port", "host", "sessions", "policy",
})

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class SafeFormatter(logging.Formatter):
    def __init__(self, json_lines: bool = False):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and k in SAFE_FIELDS}
        if self.json_lines:
            data = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                    "event": record.getMessage(), **extras}
            if record.exc_info:
                data["exception"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            return json.dumps(data, default=str)
        base = super().format(record)
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return base


def setup_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(json_lines=json_lines))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "websockets", "faster_whisper"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
