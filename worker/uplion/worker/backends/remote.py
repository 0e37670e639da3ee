"""`remote`: any OpenAI-compatible API over a pool of accounts, spoken directly over HTTP (aiohttp).

Every chat and completion request streams from upstream (with include_usage) so the runner gets
exact token counts for streamed and non-streamed requests alike. The SSE bytes are decoded once
(`sse.SSEDecoder`, `json.loads`) and each object fills a protobuf message directly
(`openai_wire`): the official openai SDK built three object models per chunk and cost about 16x the
CPU per request (docs in worker/README.md), and the errors it classified are plain HTTP statuses.

Failover happens before the first chunk reaches the runner: a 429, a rejected key, a connection
error, a 5xx or an in-band error before any content on one account moves the request to the next
usable account. After the first chunk a failure is final for this attempt (`unavailable`).

An upstream that answers a streamed request with a whole JSON completion is read as that
completion; one that streams without a usage chunk (no `stream_options` support) is billed by the
estimate of `estimate_usage` (about 4 characters a token), never as zero.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from google.protobuf import json_format

from uplion.core import tracing
from uplion.v1 import chat_pb2, completions_pb2, embeddings_pb2, responses_pb2, task_pb2

from ..config import Account
from ..content import estimate_tokens, estimate_usage, prompt_texts, value_text
from . import extra
from .accounts import DISABLE_S, QUOTA_S, AccountState, now, pick_order, soonest_available
from .base import BackendError, invalid, unavailable
from .openai_wire import (
    UpstreamProblem,
    Verdict,
    chat_chunk,
    chat_chunks_from_answer,
    classify,
    completion_chunk,
    completion_chunks_from_answer,
    embedding_response,
    stream_error,
)
from .responses_wire import input_chars
from .sse import DONE, SSEDecoder

Chunk = TypeVar("Chunk", chat_pb2.ChatCompletionChunk, completions_pb2.Completion)
T = TypeVar("T")


class _UpstreamFailed(Exception):
    """The upstream sent an error object or something unreadable instead of a chunk: before the
    first chunk another account may still answer; after it, the attempt fails."""


# what reading an upstream's answer can raise
_READ_ERRORS = (_UpstreamFailed, aiohttp.ClientError, TimeoutError)


def _body(message: Any, upstream_model: str, **fields: Any) -> bytes:
    """The request as the upstream's JSON: the client's fields, the upstream's model name, `fields`,
    and the members the contract does not name (`extra_json`) where the client put them."""
    body: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    body["model"] = upstream_model
    if "seed" in body:
        body["seed"] = int(body["seed"])  # proto3 JSON prints int64 as a string
    body.pop("stream_options", None)
    body.update(fields)
    extra_json = body.pop(extra.EXTRA, "")
    if extra_json:
        extra.overlay(body, extra.loads(extra_json))
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _streamed() -> dict[str, Any]:
    """Every chat and completion request streams from upstream, with its usage (a fresh object: the
    client's own stream_options members are laid over it)."""
    return {"stream": True, "stream_options": {"include_usage": True}}


def _chat_chars(request: chat_pb2.ChatCompletionRequest) -> int:
    return sum(len(value_text(m.content)) for m in request.messages)


def _prompt_chars(prompt: Any) -> int:
    return sum(len(t) for t in prompt_texts(prompt))


def _generated_chars(chunk: chat_pb2.ChatCompletionChunk | completions_pb2.Completion) -> int:
    if isinstance(chunk, chat_pb2.ChatCompletionChunk):
        return sum(len(c.delta.content) + sum(len(t.function.arguments) for t in c.delta.tool_calls)
                   for c in chunk.choices)  # fmt: skip
    return sum(len(c.text) for c in chunk.choices)


class RemoteBackend:
    forwards_unknown = True  # a request's extra_json goes to the upstream

    def __init__(self, accounts: tuple[Account, ...], upstream_model: str, timeout_s: float) -> None:
        self.upstream_model = upstream_model
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.states = [AccountState(a) for a in accounts]
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use: a session belongs to the running event loop
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout, raise_for_status=False)
        return self._session

    def prompt_tokens(self, task: task_pb2.Task) -> int:
        # An estimate (about 4 characters a token) until upstream reports the exact count.
        which = task.WhichOneof("request")
        if which == "chat":
            chars = _chat_chars(task.chat)
        elif which == "completion":
            chars = _prompt_chars(task.completion.prompt)
        elif which == "embedding":
            chars = _prompt_chars(task.embedding.input)
        elif which == "response":
            chars = input_chars(task.response)
        else:
            chars = 0
        return estimate_tokens(chars)

    def _note(self, state: AccountState, problem: UpstreamProblem, problems: list[str]) -> None:
        """Record a failure on the account; raise when no other account would do better."""
        t = now()
        if problem.verdict is Verdict.NOT_FOUND:
            raise BackendError(task_pb2.TASK_ERROR_KIND_MODEL_NOT_FOUND, problem.message, retryable=False)
        if problem.verdict is Verdict.INVALID:
            raise invalid(problem.message)
        if problem.verdict is Verdict.QUOTA:
            state.disable(t, QUOTA_S, "quota")
        elif problem.verdict is Verdict.AUTHENTICATION:
            state.disable(t, DISABLE_S, "authentication")
        elif problem.verdict is Verdict.RATE_LIMITED:
            state.rate_limited(t, problem.retry_after)
        else:
            state.rate_limited(t, 1.0)
        problems.append(problem.verdict.value if problem.verdict is not Verdict.TRY_NEXT else problem.message[:80])

    def _none_left(self, problems: list[str]) -> BackendError:
        if problems and all(p == "authentication" for p in problems):
            return BackendError(
                task_pb2.TASK_ERROR_KIND_AUTHENTICATION, "upstream rejected every API key", retryable=False
            )
        if problems and all(p == "quota" for p in problems):
            return BackendError(
                task_pb2.TASK_ERROR_KIND_QUOTA_EXCEEDED, "every upstream account is out of quota", retryable=True
            )
        wait = soonest_available(self.states, now())
        return unavailable(f"no upstream account available ({', '.join(problems) or 'all cooling down'})", wait)

    async def _post(self, state: AccountState, path: str, body: bytes) -> aiohttp.ClientResponse:
        """The upstream's response with a success status, or UpstreamProblem raised as an exception."""
        url = state.account.base_url.rstrip("/") + path
        headers = {"authorization": f"Bearer {state.account.api_key}", "content-type": "application/json"}
        # until the upstream's answer starts (its status and headers): the trace context is not sent
        # to the provider, whose traces are not ours
        with tracing.span(f"upstream POST {path}", tracing.CLIENT, attributes=_upstream_attributes(url, path)) as span:
            try:
                resp = await self._http().post(url, data=body, headers=headers)
            except (aiohttp.ClientError, TimeoutError) as e:
                tracing.fail(span, e)
                raise _Problem(UpstreamProblem(Verdict.TRY_NEXT, f"{type(e).__name__}: {e}"[:200])) from None
            if span is not None:
                span.set_attribute("http.response.status_code", resp.status)
                if resp.status >= 400:
                    tracing.fail(span, f"HTTP {resp.status}")
        if resp.status >= 400:
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                raw = b""
            finally:
                resp.release()
            raise _Problem(classify(resp.status, raw, resp.headers))
        return resp

    async def _failover(self, path: str, body: bytes,
                        decode: Callable[[aiohttp.ClientResponse], AsyncIterator[T]]) -> AsyncIterator[T]:  # fmt: skip
        """What `decode` reads from the first account that answers: failing over to the next account
        until the first item arrives; a failure after it is final for this attempt."""
        problems: list[str] = []
        for state in pick_order(self.states, now()):
            state.inflight += 1
            try:
                resp = await self._post(state, path, body)
            except _Problem as p:
                state.inflight -= 1
                self._note(state, p.problem, problems)
                continue
            items = decode(resp)
            try:
                first = await anext(items, None)
            except _READ_ERRORS as e:
                state.inflight -= 1
                resp.release()
                self._note(state, UpstreamProblem(Verdict.TRY_NEXT, f"{type(e).__name__}: {e}"[:200]), problems)
                continue
            state.succeeded()
            try:
                if first is None:
                    raise unavailable("upstream answered with an empty stream (no completion, no usage)")
                item: T | None = first
                while item is not None:
                    yield item
                    try:
                        item = await anext(items, None)
                    except _READ_ERRORS as e:
                        raise unavailable(f"upstream failed mid-stream: {e}"[:500]) from None
            finally:
                state.inflight -= 1
                resp.release()
            return
        raise self._none_left(problems)

    async def _stream(
        self, path: str, body: bytes, convert: Callable[[dict[str, Any]], Chunk],
        from_answer: Callable[[dict[str, Any]], Iterator[Chunk]], prompt_estimate: int,
    ) -> AsyncIterator[Chunk]:  # fmt: skip
        generated, has_usage = 0, False
        first: Chunk | None = None
        async for chunk in self._failover(path, body, lambda resp: _decode(resp, convert, from_answer)):
            first = first or chunk
            generated += _generated_chars(chunk)
            has_usage = has_usage or chunk.HasField("usage")
            yield chunk
        if first is not None and not has_usage:  # the upstream ignored stream_options: bill the estimate
            last = type(first)()
            last.usage.CopyFrom(estimate_usage(prompt_estimate, generated))
            yield last

    def responses(self, request: responses_pb2.CreateResponseRequest,
                  stream: bool) -> AsyncIterator[tuple[bytes, dict[str, Any]]]:  # fmt: skip
        """A Responses API request passed to an upstream that serves it (the client's request, with
        the upstream's model name): its events, or its one answer, each as (raw JSON, parsed)."""
        body = _body(request, self.upstream_model, stream=stream)
        return self._failover("/responses", body, _raw_objects)

    def chat(self, request: chat_pb2.ChatCompletionRequest) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        body = _body(request, self.upstream_model, **_streamed())
        prompt = estimate_tokens(_chat_chars(request))
        return self._stream("/chat/completions", body, chat_chunk, chat_chunks_from_answer, prompt)

    def completion(self, request: completions_pb2.CompletionRequest) -> AsyncIterator[completions_pb2.Completion]:
        body = _body(request, self.upstream_model, **_streamed())
        prompt = estimate_tokens(_prompt_chars(request.prompt))
        return self._stream("/completions", body, completion_chunk, completion_chunks_from_answer, prompt)

    async def embed(self, request: embeddings_pb2.EmbeddingRequest) -> embeddings_pb2.EmbeddingResponse:
        body = _body(request, self.upstream_model, encoding_format=request.encoding_format or "float")
        problems: list[str] = []
        for state in pick_order(self.states, now()):
            state.inflight += 1
            try:
                resp = await self._post(state, "/embeddings", body)
                try:
                    answer = json.loads(await resp.read())
                finally:
                    resp.release()
            except _Problem as p:
                self._note(state, p.problem, problems)
                continue
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                self._note(state, UpstreamProblem(Verdict.TRY_NEXT, f"{type(e).__name__}: {e}"[:200]), problems)
                continue
            finally:
                state.inflight -= 1
            state.succeeded()
            message = stream_error(answer) if isinstance(answer, dict) else "not a JSON object"
            if message:
                raise unavailable(f"upstream error: {message}")
            return embedding_response(answer)
        raise self._none_left(problems)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Problem(Exception):
    def __init__(self, problem: UpstreamProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _is_sse(resp: aiohttp.ClientResponse) -> bool:
    return "text/event-stream" in resp.headers.get("content-type", "")


async def _raw_objects(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[bytes, dict[str, Any]]]:
    """The response's objects as (raw JSON, parsed): each SSE event's data (until `[DONE]` or the
    end), or one whole JSON answer."""
    if not _is_sse(resp):
        raw = await resp.read()
        yield raw, _object(raw, "an answer")
        return
    decoder = SSEDecoder()
    async for data in resp.content.iter_any():
        for event in decoder.feed(data):
            if event == DONE:
                return
            yield event, _object(event, "an event")
    for event in decoder.close():
        if event != DONE:
            yield event, _object(event, "an event")


async def _decode(
    resp: aiohttp.ClientResponse, convert: Callable[[dict[str, Any]], Chunk],
    from_answer: Callable[[dict[str, Any]], Iterator[Chunk]],
) -> AsyncIterator[Chunk]:  # fmt: skip
    """The response's chunks: each SSE event's, or those of a whole JSON answer."""
    sse = _is_sse(resp)
    async for _, obj in _raw_objects(resp):
        if sse:
            yield convert(obj)
        else:
            for chunk in from_answer(obj):
                yield chunk


def _object(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object the upstream sent; _UpstreamFailed for an error object or anything else."""
    try:
        obj = json.loads(raw)
    except ValueError:
        raise _UpstreamFailed(f"upstream sent {what} that is not JSON: {raw[:100]!r}") from None
    message = stream_error(obj) if isinstance(obj, dict) else f"upstream sent {what} that is not a JSON object"
    if message:
        raise _UpstreamFailed(message)
    return obj  # type: ignore[no-any-return]


def _upstream_attributes(url: str, path: str) -> dict[str, Any] | None:
    if not tracing.enabled():
        return None
    return {"http.request.method": "POST", "server.address": urlsplit(url).hostname or "", "url.path": path}
