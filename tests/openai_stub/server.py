"""A small local stand-in for an OpenAI-compatible chat server (vLLM, llama.cpp, Ollama).

It speaks the real wire format of ``POST /v1/chat/completions``: a JSON body with ``model``,
``messages``, ``max_tokens``, ``stream``; a ``chat.completion`` object back, or with
``stream: true`` a ``text/event-stream`` of ``data: {chat.completion.chunk}`` events (role first,
then content deltas, a final chunk with ``finish_reason``, a usage chunk when
``stream_options.include_usage``), ending with ``data: [DONE]``. Errors use the OpenAI error
envelope ``{"error": {"message", "type", "code"}}``.

The "model" is deterministic so tests can assert on its output: it rewrites each statement line
``[seg-…] text`` of the user message into a bullet ``- Text. [seg-…]``. Behaviour is switched
per server with ``mode``:

* ``rephrase`` (default) — as above;
* ``invent`` — also adds "Blood pressure 130/80." citing the first statement (must be caught);
* ``error`` — HTTP 500 with an error body;
* ``slow`` — waits ``delay`` seconds before answering (to test timeouts);
* ``midstream_error`` — starts streaming, then sends an error event.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from aiohttp import web

_STATEMENT = re.compile(r"^\[((?:seg-\d+(?:,\s*)?)+)\]\s*(.+)$")


def reply_for(messages: list[dict]) -> str:
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    out = []
    for line in user.splitlines():
        m = _STATEMENT.match(line.strip())
        if not m:
            continue
        ids, text = m.group(1), m.group(2).strip().rstrip(".")
        text = re.sub(r"^(?:I|I've|I'm)\b", "The patient", text)
        out.append(f"- {text[0].upper() + text[1:]}. [{ids}]")
    return "\n".join(out) + ("\n" if out else "")


class StubState:
    def __init__(self, mode: str = "rephrase", delay: float = 0.0, api_key: str | None = None):
        self.mode = mode
        self.delay = delay
        self.api_key = api_key
        self.requests: list[dict] = []


def make_app(state: StubState) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        if state.api_key and request.headers.get("Authorization") != f"Bearer {state.api_key}":
            return web.json_response(
                {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}},
                status=401,
            )
        body = await request.json()
        state.requests.append(body)
        if state.mode == "error":
            return web.json_response(
                {"error": {"message": "model overloaded", "type": "server_error", "code": None}}, status=500
            )
        if state.mode == "slow":
            await asyncio.sleep(state.delay)
        text = reply_for(body["messages"])
        if state.mode == "invent" and text:
            first_ids = re.search(r"\[(seg-[^\]]+)\]", text).group(1)
            text += f"- Blood pressure 130/80. [{first_ids}]\n"
        created = int(time.time())
        cid = f"chatcmpl-{len(state.requests)}"
        usage = {"prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]),
                 "completion_tokens": len(text.split()), "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            return web.json_response({
                "id": cid, "object": "chat.completion", "created": created, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            })
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def send(obj) -> None:
            await resp.write(f"data: {json.dumps(obj)}\n\n".encode())

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        await resp.write(b": keep-alive\n\n")
        await send(chunk({"role": "assistant", "content": ""}))
        for k in range(0, len(text), 7):
            await send(chunk({"content": text[k:k + 7]}))
            if state.mode == "midstream_error" and k >= 7:
                await send({"error": {"message": "generation failed", "type": "server_error"}})
                await resp.write_eof()
                return resp
        await send(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({"id": cid, "object": "chat.completion.chunk", "created": created, "model": body["model"],
                        "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


class RunningStub:
    def __init__(self, runner: web.AppRunner, port: int, state: StubState):
        self.runner = runner
        self.port = port
        self.state = state
        self.base_url = f"http://127.0.0.1:{port}/v1"


async def start_stub(port: int, state: StubState) -> RunningStub:
    runner = web.AppRunner(make_app(state))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return RunningStub(runner, port, state)
