"""A stand-in for a third-party OpenAI account, speaking OpenAI's real HTTP wire format.

Allowed by the project rules because the real thing is a paid SaaS. Behaviour per API key:
`good-*` answers (SSE when `stream` is set, with a usage chunk when include_usage); `bad-*` answers
401; `limited-*` answers 429 with `retry-after: 2` for its first `limit_first` requests. Upstreams
that bend the protocol: `plain-*` answers a streamed request with a whole JSON completion,
`nousage-*` streams without a usage chunk (no stream_options support), `inband-*` streams one
in-band error object (`data: {"error": ...}`) and ends, as OpenAI does for an overloaded model.
`rich-*` answers as OpenAI's current models do, with the members uplion's contract lacks: every
object has `system_fingerprint` and `service_tier`, every choice `logprobs` (one entry per word), the
usage `prompt_tokens_details`/`completion_tokens_details`, and the last delta (or the message)
`annotations`. Every request body is kept in `received`, as the fake read it.

`/v1/responses` answers as OpenAI's Responses API does (a `response` object, or with `stream` its typed
events with `event:` lines), echoing the last input text, with members uplion's contract lacks (a
reasoning item, `billing`, cached-token details); every answer and event it sent is kept in `sent`.

`threaded()` runs one on its own event loop in a thread, for suites whose tests block (sync clients).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
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
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # /v1/responses: each answer body or event data
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/responses", self.responses)
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
        if not key.startswith(("good", "limited", "plain", "nousage", "inband", "rich")):
            return _error(401, "Missing API key.", "invalid_request_error", "invalid_api_key")
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        denied = self._gate(request)
        if denied:
            return denied
        body: dict[str, Any] = await request.json()
        self.received.append(body)
        text = body["messages"][-1]["content"]
        words = [w + " " for w in text.split()]
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        rich = key.startswith("rich")
        usage = _usage(len(words), rich)
        base: dict[str, Any] = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body["model"]}
        base.update(RICH_TOP if rich else {})
        if not body.get("stream") or key.startswith("plain"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(words)}
            whole: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
            if rich:
                message.update(refusal=None, annotations=ANNOTATIONS)
                whole["logprobs"] = {"content": [logprob(w) for w in words], "refusal": None}
            return web.json_response({**base, "object": "chat.completion", "choices": [whole], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(f"data: {json.dumps(obj)}\n\n".encode())

        if key.startswith("inband"):
            await send({"error": {"message": "The server is overloaded.", "type": "server_error", "code": None}})
            return resp
        chunk = {**base, "object": "chat.completion.chunk"}

        def choice(delta: dict[str, Any], finish: str | None = None, word: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            if rich:
                out["logprobs"] = {"content": [logprob(word)], "refusal": None} if word else None
            return out

        await send({**chunk, "choices": [choice({"role": "assistant", "content": ""})]})
        for w in words:
            await send({**chunk, "choices": [choice({"content": w}, word=w)]})
        await send({**chunk, "choices": [choice({"annotations": ANNOTATIONS} if rich else {}, "stop")]})
        if body.get("stream_options", {}).get("include_usage") and not key.startswith("nousage"):
            await send({**chunk, "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """Legacy completions: the prompt's words back; `rich-*` with OpenAI's completion logprobs."""
        denied = self._gate(request)
        if denied:
            return denied
        body: dict[str, Any] = await request.json()
        self.received.append(body)
        words = [w + " " for w in str(body["prompt"]).split()]
        rich = request.headers.get("Authorization", "").startswith("Bearer rich")
        base = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": body["model"],
                **(RICH_TOP if rich else {})}  # fmt: skip

        def choice(text: str, finish: str | None, pieces: list[str]) -> dict[str, Any]:
            logprobs = {"tokens": pieces, "token_logprobs": [-0.5] * len(pieces),
                        "top_logprobs": [{p: -0.5} for p in pieces], "text_offset": [0] * len(pieces)}  # fmt: skip
            chosen = logprobs if rich and pieces else None
            return {"text": text, "index": 0, "logprobs": chosen, "finish_reason": finish}

        if not body.get("stream"):
            answer = {**base, "choices": [choice("".join(words), "stop", words)], "usage": _usage(len(words), rich)}
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for w in words:
            await resp.write(f"data: {json.dumps({**base, 'choices': [choice(w, None, [w])]})}\n\n".encode())
        await resp.write(f"data: {json.dumps({**base, 'choices': [choice('', 'stop', [])]})}\n\n".encode())
        if body.get("stream_options", {}).get("include_usage"):
            last = {**base, "choices": [], "usage": _usage(len(words), rich)}
            await resp.write(f"data: {json.dumps(last)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def responses(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's Responses API, echoing the last input text word by word."""
        denied = self._gate(request)
        if denied:
            return denied
        body: dict[str, Any] = await request.json()
        self.received.append(body)
        text = _last_text(body.get("input"))
        rid = f"resp_fake{len(self.received):06d}"
        words = [w + " " for w in text.split()]
        message = {
            "id": f"msg_{rid}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "".join(words)}],
        }
        reasoning = {"id": f"rs_{rid}", "type": "reasoning", "summary": []}
        details = {"cached_tokens": 1, "cache_write_tokens": 0}
        usage = {
            "input_tokens": len(text.split()),
            "input_tokens_details": details,
            "output_tokens": len(words),
            "output_tokens_details": {"reasoning_tokens": 2},
            "total_tokens": len(text.split()) + len(words),
        }
        whole = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
                 "background": False, "billing": {"payer": "developer"}, "error": None, "incomplete_details": None,
                 "instructions": body.get("instructions"), "model": body["model"], "output": [reasoning, message],
                 "previous_response_id": body.get("previous_response_id"), "store": body.get("store", True),
                 "usage": usage, "metadata": body.get("metadata", {})}  # fmt: skip
        if not body.get("stream"):
            raw = json.dumps(whole).encode()
            self.sent.append(raw)
            return web.Response(body=raw, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        seq = 0

        async def send(kind: str, **members: Any) -> None:
            nonlocal seq
            raw = json.dumps({"type": kind, "sequence_number": seq, **members}).encode()
            seq += 1
            self.sent.append(raw)
            await resp.write(b"event: " + kind.encode() + b"\ndata: " + raw + b"\n\n")

        started = {**whole, "status": "in_progress", "output": [], "usage": None}
        await send("response.created", response=started)
        await send("response.in_progress", response=started)
        await send("response.output_item.added", output_index=0, item=reasoning)
        await send("response.output_item.done", output_index=0, item=reasoning)
        opened = {**message, "status": "in_progress", "content": []}
        await send("response.output_item.added", output_index=1, item=opened)
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        await send("response.content_part.added", item_id=message["id"], output_index=1, content_index=0, part=part)
        for w in words:
            await send("response.output_text.delta", item_id=message["id"], output_index=1, content_index=0, delta=w,
                       logprobs=[], obfuscation="xyz")  # fmt: skip
        done: dict[str, Any] = {**part, "text": "".join(words)}
        await send("response.output_text.done", item_id=message["id"], output_index=1, content_index=0,
                   text=done["text"], logprobs=[])  # fmt: skip
        await send("response.content_part.done", item_id=message["id"], output_index=1, content_index=0, part=done)
        await send("response.output_item.done", output_index=1, item=message)
        await send("response.completed", response=whole)
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        denied = self._gate(request)
        if denied:
            return denied
        body: dict[str, Any] = await request.json()
        self.received.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.5, -0.5, float(len(t))]} for i, t in enumerate(inputs)
        ]
        n = sum(len(str(t).split()) for t in inputs)
        usage = {"prompt_tokens": n, "total_tokens": n}
        return web.json_response({"object": "list", "data": data, "model": body["model"], "usage": usage})


# what `rich-*` answers carry that uplion's contract has no field for
RICH_TOP = {"system_fingerprint": "fp_fake", "service_tier": "default"}
ANNOTATIONS = [{"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 3, "title": "t",
                                                         "url": "https://example.com/"}}]  # fmt: skip
PROMPT_DETAILS = {"cached_tokens": 1, "audio_tokens": 0}
COMPLETION_DETAILS = {"reasoning_tokens": 2, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                      "rejected_prediction_tokens": 0}  # fmt: skip


def _last_text(value: Any) -> str:
    """The text of the last input message (a string input is one)."""
    if isinstance(value, str):
        return value
    for item in reversed(value if isinstance(value, list) else []):
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [str(p.get("text", "")) for p in content if isinstance(p, dict)]
            if texts:
                return texts[-1]
    return ""


def logprob(token: str) -> dict[str, Any]:
    """A chat logprobs entry for one token, as OpenAI sends it."""
    return {"token": token, "logprob": -0.25, "bytes": list(token.encode()), "top_logprobs": []}


def _usage(words: int, rich: bool) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": words, "completion_tokens": words, "total_tokens": 2 * words}
    if rich:
        usage.update(prompt_tokens_details=PROMPT_DETAILS, completion_tokens_details=COMPLETION_DETAILS)
    return usage


@contextmanager
def threaded(**options: Any) -> Iterator[FakeOpenAI]:
    """A FakeOpenAI serving from its own event loop in a daemon thread until the block ends."""
    fake = FakeOpenAI(**options)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-openai", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(30)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
