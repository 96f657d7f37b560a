"""Failure drill: no PHI in any log record, at DEBUG, from any logger.

A full visit runs through the real server (real model, real websocket, real store): streamed,
transcribed, drafted, flags resolved, signed and delivered (directory target) through the
review API, plus a few refused requests. Every log record from every logger is captured at
DEBUG (all loggers forced to NOTSET so none is filtered), and each record's *data* is searched:
its rendered arguments, its ``extra`` fields, the messages of any exception it carries, and
the line ``scribe.logs.SafeFormatter`` would write.

What counts as PHI here:
- the patient reference (a unique token, searched as a substring of the whole line);
- every *content word* of the visit: the words of the reference transcript, of the transcript
  the server produced and of the drafted note, lower-cased, alphabetic, at least 4 letters,
  minus English stop-words; searched as whole words. Words that appear in the record's static
  format string (code, not data) are not counted for that record, nor are the field names of
  the wire and storage models (``type``, ``segment``, ``text`` … : code vocabulary that shows
  up in every frame and row whatever was said).

One logger is outside the assertion: ``websockets.client``, the *client* process's transport
library, which at DEBUG logs the first ~50 and last ~25 characters of every frame (so a short
partial's first words could appear). scribe's server uses aiohttp, which logs no frames;
``scribe.logs.setup_logging`` keeps ``websockets`` at WARNING, and an application embedding
``StreamClient`` must not turn it to DEBUG. The test counts those records and reports them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import aiohttp
import pytest
from conftest import SAMPLES, TOKEN, reference_text, start_server

from scribe.audio import FileSource
from scribe.client import StreamClient
from scribe.logs import SafeFormatter
from scribe.models import Consent
from scribe.protocol import StartMessage

pytestmark = pytest.mark.slow

DICTATION = SAMPLES / "synth_dictation_dev_01.flac"
PATIENT_TOKEN = "zqx7781hernandez"
PATIENT = f"Patient/{PATIENT_TOKEN}"
EID = "enc-logs-drill"

STOP = set(["a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "aren't", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "let", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "ought", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves", "okay", "yeah"])
_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
WORD = re.compile(r"[a-z]+")


def code_vocabulary() -> set[str]:
    """Field names of the models that go over the wire and into the store, split into words."""
    from pydantic import BaseModel

    import scribe.models
    import scribe.protocol
    import scribe.review.models

    vocab = {"type"} | {c.value for c in scribe.protocol.ErrorCode}
    for module in (scribe.models, scribe.protocol, scribe.review.models):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseModel):
                for name in obj.model_fields:
                    vocab |= set(name.lower().split("_"))
    return vocab


def content_words(*texts: str) -> set[str]:
    words: set[str] = set()
    for t in texts:
        words |= {w for w in WORD.findall(t.lower()) if len(w) >= 4 and w not in STOP}
    return words


class Capture(logging.Handler):
    """Renders each record when it is emitted, as a real handler would (some extras are weak
    references that are gone by the end of the test)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[tuple[logging.LogRecord, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record, *record_data(record)))


def _exception_messages(exc: BaseException | None) -> list[str]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return out


def _str(value: object) -> str:
    try:
        return str(value)
    except Exception as exc:  # noqa: BLE001 -- a dead weakref proxy, a broken __str__
        return f"<unprintable {type(exc).__name__}>"


def record_data(record: logging.LogRecord) -> tuple[str, str]:
    """(the data the record carries, the whole line as written)."""
    args = record.args if isinstance(record.args, tuple) else (record.args,) if record.args else ()
    parts = [_str(a) for a in args]
    parts += [_str(v) for k, v in record.__dict__.items() if k not in _STD]  # values: keys are code
    if record.exc_info and record.exc_info[1] is not None:
        parts += _exception_messages(record.exc_info[1])
    line = SafeFormatter().format(record)
    return "\n".join(parts), line


@pytest.fixture
def all_logs():
    capture = Capture()
    root = logging.getLogger()
    saved = {name: lg.level for name, lg in logging.Logger.manager.loggerDict.items()
             if isinstance(lg, logging.Logger)}
    for name in saved:
        logging.getLogger(name).setLevel(logging.NOTSET)
    root_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(root_level)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def _json(http: aiohttp.ClientSession, method: str, url: str, **kw):
    async with http.request(method, url, **kw) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else await r.text())


async def _visit(server, settings) -> tuple[str, str, dict]:
    """Stream, draft, resolve, sign, deliver; returns (transcript text, note text, figures)."""
    source = FileSource(DICTATION, speed=0)
    start = StartMessage(encounter_id=EID, clinician_id="dr-drill", patient_ref=PATIENT,
                         consent=Consent.recorded_now("dr-drill"))
    transcript = await StreamClient(server.url, start, token=TOKEN).run(source.chunks())
    base = f"{server.http}/v1/review/encounters/{EID}"
    figures = {"segments": len(transcript.segments)}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        # refused requests log too
        await _json(http, "GET", f"{server.http}/v1/encounters/no-such-encounter")
        await _json(http, "PUT", f"{base}/draft", data=b'{"base_version": "x"}')
        async with aiohttp.ClientSession() as anon:
            await _json(anon, "GET", f"{server.http}/v1/encounters")
        # the draft (written on stop by the server, or asked for now)
        deadline = time.monotonic() + 120
        draft = None
        while time.monotonic() < deadline:
            status, body = await _json(http, "GET", f"{base}/draft")
            if status == 200:
                draft = body
                break
            if status == 404:
                await _json(http, "POST", f"{base}/draft")
            await asyncio.sleep(0.5)
        assert draft is not None, "no draft was written"
        version = draft["version"]
        note_text = []
        for section in draft["note"]["sections"]:
            for sentence in section["sentences"]:
                note_text.append(sentence["text"])
                for i, flag in enumerate(sentence.get("flags", [])):
                    if flag.get("resolved"):
                        continue
                    status, body = await _json(http, "POST", f"{base}/flags/resolve", json={
                        "base_version": version, "sentence_id": sentence["id"], "flag": i,
                        "resolution": "accepted", "reason": "checked against the recording", "actor": "dr-drill"})
                    assert status == 200, body
                    version = body["version"]
        status, body = await _json(http, "POST", f"{base}/sign",
                                   json={"version": version, "confirm": True, "actor": "dr-drill"})
        assert status == 200, body
        figures["sentences"] = len(note_text)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, body = await _json(http, "GET", f"{base}/deliveries")
            if body["deliveries"] and all(d["state"] == "delivered" for d in body["deliveries"]):
                break
            await asyncio.sleep(0.3)
        figures["deliveries"] = [d["state"] for d in body["deliveries"]]
    return transcript.text, " ".join(note_text), figures


async def test_full_visit_logs_carry_no_phi_at_debug(settings, recognizer, all_logs: Capture):
    server = await start_server(settings, recognizer)
    try:
        text, note, figures = await _visit(server, settings)
    finally:
        await server.stop()
    assert figures["deliveries"] == ["delivered"], figures
    words = content_words(reference_text(DICTATION), text, note) - code_vocabulary()
    assert len(words) > 30  # the search has something to find
    leaks = []
    loggers = set()
    client_transport = 0
    for record, data, line in all_logs.records:
        loggers.add(record.name)
        if record.name.startswith("websockets.client"):
            client_transport += 1
            continue
        template = content_words(str(record.msg), record.name)
        found = sorted((content_words(data) & words) - template)
        if found or PATIENT_TOKEN in line.lower() or PATIENT_TOKEN in data.lower():
            leaks.append(f"{record.name} {record.pathname}:{record.lineno}: {found} | {line[:200]!r}")
    print(f"log drill: {len(all_logs.records)} records from {len(loggers)} loggers ({sorted(loggers)}) searched for "
          f"{len(words)} content words + the patient reference ({client_transport} websockets.client records "
          f"not asserted); {figures}")
    assert all_logs.records and "scribe.service.session" in loggers
    assert not leaks, "PHI in logs:\n" + "\n".join(leaks[:20])


def test_the_search_finds_a_planted_leak():
    """The detector itself can fail: transcript words in args, extras or an exception are found;
    the same words in the static format string are not counted."""
    words = content_words("Patient takes metoprolol for palpitations")
    planted = [
        logging.LogRecord("scribe.x", logging.INFO, __file__, 1, "segment %s", ("takes metoprolol",), None),
        logging.LogRecord("scribe.x", logging.INFO, __file__, 1, "failed", (), (ValueError, ValueError(
            "bad value 'palpitations'"), None)),
    ]
    extra = logging.LogRecord("scribe.x", logging.INFO, __file__, 1, "segment", (), None)
    extra.note_text = "metoprolol"
    planted.append(extra)
    for record in planted:
        data, _ = record_data(record)
        assert content_words(data) & words, record.msg
    clean = logging.LogRecord("scribe.x", logging.INFO, __file__, 1, "patient consent recorded", (), None)
    data, _ = record_data(clean)
    assert not (content_words(data) & words) - content_words(str(clean.msg))
