"""A stand-in for a third-party OpenAI account, speaking OpenAI's real HTTP wire format.

Allowed by the project rules because the real thing is a paid SaaS. Behaviour per API key:
`good-*` answers (SSE when `stream` is set, with a usage chunk when include_usage); `bad-*` answers
401; `limited-*` answers 429 with `retry-after: 2` for its first `limit_first` requests. Upstreams
that bend the protocol: `plain-*` answers a streamed request with a whole JSON completion,
`nousage-*` streams without a usage chunk (no stream_options support), `inband-*` streams one
in-band error object (`data: {"error": ...}`) and ends, as OpenAI does for an overloaded model.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def _error(status: int, message: str, kind: str, code: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class FakeOpenAI:
    limit_first: int = 1
    calls: Counter[str] = field(default_factory=Counter)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    def _gate(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls[key] += 1
        if key.startswith("bad"):
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if key.startswith("limited") and self.calls[key] <= self.limit_first:
            return _error(429, "Rate limit reached.", "requests", "rate_limit_exceeded", {"retry-after": "2"})
        if not key.startswith(("good", "limited", "plain", "nousage", "inband")):
            return _error(401, "Missing API key.", "invalid_request_error", "invalid_api_key")
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        denied = self._gate(request)
        if denied:
            return denied
        body: dict[str, Any] = await request.json()
        text = body["messages"][-1]["content"]
        words = [w + " " for w in text.split()]
        usage = {"prompt_tokens": len(words), "completion_tokens": len(words), "total_tokens": 2 * len(words)}
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body["model"]}
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not body.get("stream") or key.startswith("plain"):
            message = {"role": "assistant", "content": "".join(words)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(f"data: {json.dumps(obj)}\n\n".encode())

        if key.startswith("inband"):
            await send({"error": {"message": "The server is overloaded.", "type": "server_error", "code": None}})
            return resp
        chunk = {**base, "object": "chat.completion.chunk"}
        await send(
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        )
        for w in words:
            await send({**chunk, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
        await send({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if body.get("stream_options", {}).get("include_usage") and not key.startswith("nousage"):
            await send({**chunk, "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        denied = self._gate(request)
        if denied:
            return denied
        body: dict[str, Any] = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.5, -0.5, float(len(t))]} for i, t in enumerate(inputs)
        ]
        n = sum(len(str(t).split()) for t in inputs)
        usage = {"prompt_tokens": n, "total_tokens": n}
        return web.json_response({"object": "list", "data": data, "model": body["model"], "usage": usage})
