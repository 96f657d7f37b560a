"""An OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, a hosted API) over aiohttp.

How a site runs a 7–70B model on a GPU server. Speaks ``POST <base_url>/chat/completions`` with
``stream: true`` (server-sent events, ``data: {...}`` lines ending with ``data: [DONE]``) or
without. Errors become ``WriterError`` with the status and the server's own error message (never
the prompt, which holds PHI); a timeout names the configured limit.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .base import WriterError, WriterStats

log = logging.getLogger(__name__)


class OpenAIChat:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        stream: bool = True,
        temperature: float = 0.0,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.stream = stream
        self.temperature = temperature

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "text/event-stream" if self.stream else "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    async def chat(self, messages: list[dict[str, str]], *, max_tokens: int, stats: WriterStats) -> AsyncIterator[str]:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        timeout = aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.connect_timeout)
        t0 = time.perf_counter()
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                async with http.post(self.url, json=body, headers=self._headers()) as resp:
                    if resp.status != 200:
                        raise WriterError(
                            f"the note model endpoint {self.url} answered HTTP {resp.status}: {await _error_text(resp)}"
                        )
                    if self.stream:
                        async for delta in self._sse(resp, stats):
                            yield delta
                    else:
                        data = await resp.json(content_type=None)
                        text = _message_text(data, self.url)
                        _usage(data, stats, text)
                        yield text
        except TimeoutError:
            raise WriterError(
                f"the note model endpoint {self.url} did not finish within {self.timeout:g} s "
                "(raise notes.openai.timeout, or check the server)"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise WriterError(f"cannot reach the note model endpoint {self.url} ({exc.os_error or exc})") from None
        except aiohttp.ClientError as exc:
            raise WriterError(f"the note model endpoint {self.url} failed: {type(exc).__name__}: {exc}") from None
        log.debug("chat call to %s took %.2f s", self.url, time.perf_counter() - t0)

    async def _sse(self, resp: aiohttp.ClientResponse, stats: WriterStats) -> AsyncIterator[str]:
        got_usage = False
        chunks = 0
        buf = b""
        async for raw in resp.content:
            buf += raw
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue  # comments (": keep-alive"), event:, id:, blank separators
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    if not got_usage:
                        stats.completion_tokens += chunks
                    return
                try:
                    event = json.loads(payload)
                except json.JSONDecodeError:
                    raise WriterError(f"the note model endpoint {self.url} sent a malformed stream event") from None
                if "error" in event:
                    raise WriterError(f"the note model endpoint {self.url} reported an error: {_err_msg(event)}")
                if event.get("usage"):
                    got_usage = True
                    stats.prompt_tokens += int(event["usage"].get("prompt_tokens") or 0)
                    stats.completion_tokens += int(event["usage"].get("completion_tokens") or 0)
                for choice in event.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        chunks += 1
                        yield delta
        raise WriterError(f"the note model endpoint {self.url} closed the stream before [DONE]")


def _err_msg(data: object) -> str:
    if isinstance(data, dict):
        e = data.get("error")
        if isinstance(e, dict):
            return str(e.get("message") or e.get("type") or e)[:300]
        if e:
            return str(e)[:300]
    return str(data)[:300]


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    try:
        text = await resp.text()
    except Exception:  # noqa: BLE001 - best effort for the message only
        return resp.reason or "error"
    try:
        return _err_msg(json.loads(text))
    except ValueError:
        return text.strip()[:300] or (resp.reason or "error")


def _message_text(data: dict[str, Any], url: str) -> str:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise WriterError(f"the note model endpoint {url} returned no choices[0].message.content") from None
    return content or ""


def _usage(data: dict[str, Any], stats: WriterStats, text: str) -> None:
    usage = data.get("usage") or {}
    stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
    stats.completion_tokens += int(usage.get("completion_tokens") or max(1, len(text.split())) if text else 0)
