"""`echo`: a deterministic test model that streams the input back word by word.

Directives in the last user message drive failure tests (the model is for tests and benchmarks):
`[[fail:unavailable]]` a retryable backend error before any output; `[[fail:auth]]` a permanent
authentication error; `[[fail-after:N]]` a retryable error after N tokens; `[[delay:MS]]` a
per-token delay for this request.

Fault injection for tests (off unless set): with `UPLION_ECHO_CRASH_ON=<marker>`, a request whose
prompt contains the marker ends the worker process at once (`os._exit`, no cleanup, as a segfault
or an out-of-memory kill would): a poison task (tests/chaos/test_poison_task.py). A directive in
the prompt could not do this: anyone may send a prompt, only the worker's operator sets the marker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import os
import re
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from google.protobuf import struct_pb2

from uplion.v1 import chat_pb2, common_pb2, completions_pb2, embeddings_pb2, task_pb2

from ..content import last_user_text, prompt_texts, stop_sequences, value_text
from .base import BackendError, invalid, unavailable

log = logging.getLogger("uplion.worker")
_PIECES = re.compile(r"\S+\s*|\s+")
CRASH_EXIT_CODE = 70  # the exit code of a process ended by UPLION_ECHO_CRASH_ON
_DIRECTIVE = re.compile(r"\[\[(fail|fail-after|delay):([a-z0-9]+)\]\]")


def pieces(text: str) -> list[str]:
    """Word-sized tokens whose concatenation is exactly `text`."""
    return _PIECES.findall(text)


@dataclass(frozen=True)
class EchoSettings:
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    embedding_dimensions: int = 16
    crash_on: str = ""  # fault injection: a prompt containing it ends the process (module docstring)

    def crash_if_marked(self, texts: Iterable[str]) -> None:
        """`texts` is only read when the fault injection is on (a generator costs nothing otherwise)."""
        if self.crash_on and any(self.crash_on in t for t in texts):
            log.error("echo: the prompt holds UPLION_ECHO_CRASH_ON's marker; ending the process (fault injection)")
            os._exit(CRASH_EXIT_CODE)


@dataclass(frozen=True)
class _Plan:
    tokens: list[str]
    finish_reason: str
    fail: str | None
    fail_after: int | None
    delay_s: float


def plan(text: str, max_tokens: int | None, stops: list[str], default_delay_s: float) -> _Plan:
    """What the echo model will emit for `text`: a pure function, tested directly."""
    fail = fail_after = None
    delay_s = default_delay_s
    for name, arg in _DIRECTIVE.findall(text):
        if name == "fail":
            fail = arg
        elif name == "fail-after":
            fail_after = int(arg)
        elif name == "delay":
            delay_s = int(arg) / 1000
    out = text
    finish = "stop"
    for stop in stops:
        cut = out.find(stop)
        if cut >= 0:
            out = out[:cut]
    tokens = pieces(out)
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens = tokens[:max_tokens]
        finish = "length"
    return _Plan(tokens, finish, fail, fail_after, delay_s)


def _forced_tool(request: chat_pb2.ChatCompletionRequest) -> chat_pb2.Tool | None:
    """The tool the request forces (tool_choice "required" or a named function), if any."""
    if not request.tools:
        return None
    choice = request.tool_choice
    if choice.WhichOneof("kind") == "string_value" and choice.string_value == "required":
        return request.tools[0]
    if choice.WhichOneof("kind") == "struct_value":
        fn = choice.struct_value.fields.get("function")
        name = fn.struct_value.fields["name"].string_value if fn and "name" in fn.struct_value.fields else ""
        for tool in request.tools:
            if tool.function.name == name:
                return tool
    return None


class EchoBackend:
    def __init__(self, settings: EchoSettings) -> None:
        self.settings = settings

    def prompt_tokens(self, task: task_pb2.Task) -> int:
        which = task.WhichOneof("request")
        if which == "chat":
            return sum(len(pieces(value_text(m.content))) for m in task.chat.messages)
        if which == "completion":
            return sum(len(pieces(t)) for t in prompt_texts(task.completion.prompt))
        if which == "embedding":
            return sum(len(pieces(t)) for t in prompt_texts(task.embedding.input))
        return 0

    async def _emit(self, p: _Plan) -> AsyncIterator[str]:
        if p.fail == "unavailable":
            raise unavailable("echo: simulated unavailable backend")
        if p.fail == "auth":
            raise BackendError(task_pb2.TASK_ERROR_KIND_AUTHENTICATION, "echo: simulated bad key", retryable=False)
        if self.settings.first_token_delay_s:
            await asyncio.sleep(self.settings.first_token_delay_s)
        for i, token in enumerate(p.tokens):
            if p.fail_after is not None and i == p.fail_after:
                raise unavailable(f"echo: simulated failure after {i} tokens")
            if p.delay_s:
                await asyncio.sleep(p.delay_s)
            yield token

    async def chat(self, request: chat_pb2.ChatCompletionRequest) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        if not request.messages:
            raise invalid("messages must not be empty")
        self.settings.crash_if_marked(value_text(m.content) for m in request.messages)
        text = last_user_text(list(request.messages))
        limit = request.max_completion_tokens if request.HasField("max_completion_tokens") else None
        if limit is None and request.HasField("max_tokens"):
            limit = request.max_tokens
        p = plan(text, limit, stop_sequences(request.stop), self.settings.token_delay_s)
        n = request.n if request.HasField("n") and request.n > 0 else 1
        prompt = sum(len(pieces(value_text(m.content))) for m in request.messages)
        yield _chunk(n, role="assistant")
        tool = _forced_tool(request)
        if tool is not None:
            args = json.dumps({"text": text})
            for i in range(n):
                call = chat_pb2.ToolCallDelta(
                    index=0, id=f"call_{i}", type="function",
                    function=chat_pb2.FunctionCallDelta(name=tool.function.name, arguments=args),
                )  # fmt: skip
                delta = chat_pb2.ChatCompletionDelta(tool_calls=[call])
                yield chat_pb2.ChatCompletionChunk(choices=[chat_pb2.ChatCompletionChunkChoice(index=i, delta=delta)])
            completion_tokens = len(pieces(args)) * n
            finish = "tool_calls"
        else:
            count = 0
            async for token in self._emit(p):
                count += 1
                yield _chunk(n, content=token)
            completion_tokens = count * n
            finish = p.finish_reason
        yield _chunk(n, finish_reason=finish)
        yield chat_pb2.ChatCompletionChunk(usage=_usage(prompt, completion_tokens))

    async def completion(self, request: completions_pb2.CompletionRequest) -> AsyncIterator[completions_pb2.Completion]:
        prompts = prompt_texts(request.prompt)
        if not prompts:
            raise invalid("prompt must not be empty")
        self.settings.crash_if_marked(prompts)
        text = "".join(prompts)
        limit = request.max_tokens if request.HasField("max_tokens") else None
        p = plan(text, limit, stop_sequences(request.stop), self.settings.token_delay_s)
        count = 0
        async for token in self._emit(p):
            count += 1
            yield completions_pb2.Completion(choices=[completions_pb2.CompletionChoice(text=token, index=0)])
        yield completions_pb2.Completion(
            choices=[completions_pb2.CompletionChoice(text="", index=0, finish_reason=p.finish_reason)]
        )
        yield completions_pb2.Completion(usage=_usage(len(pieces(text)), count))

    async def embed(self, request: embeddings_pb2.EmbeddingRequest) -> embeddings_pb2.EmbeddingResponse:
        texts = prompt_texts(request.input)
        if not texts:
            raise invalid("input must not be empty")
        self.settings.crash_if_marked(texts)
        dims = request.dimensions if request.HasField("dimensions") and request.dimensions else None
        dims = dims or self.settings.embedding_dimensions
        as_base64 = request.encoding_format == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = hash_vector(text, dims)
            value = struct_pb2.Value()
            if as_base64:
                value.string_value = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            else:
                value.list_value.extend(vector)
            data.append(embeddings_pb2.Embedding(object="embedding", index=i, embedding=value))
        tokens = sum(len(pieces(t)) for t in texts)
        return embeddings_pb2.EmbeddingResponse(
            object="list", data=data, usage=embeddings_pb2.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        )

    async def close(self) -> None:
        return None


def hash_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for `text` (same text, same vector)."""
    raw = b""
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    ints = struct.unpack(f"<{dims}i", raw[: dims * 4])
    vec = [x / 2**31 for x in ints]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def _chunk(
    n: int, *, role: str | None = None, content: str | None = None, finish_reason: str | None = None
) -> chat_pb2.ChatCompletionChunk:
    """One chunk with the same delta for each of the n choices."""
    delta = chat_pb2.ChatCompletionDelta(role=role, content=content)
    return chat_pb2.ChatCompletionChunk(
        choices=[
            chat_pb2.ChatCompletionChunkChoice(index=i, delta=delta, finish_reason=finish_reason) for i in range(n)
        ]
    )


def _usage(prompt: int, completion: int) -> common_pb2.Usage:
    return common_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
