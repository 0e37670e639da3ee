"""`remote`: any OpenAI-compatible API through the official openai SDK, over a pool of accounts.

Every request streams from upstream (with include_usage) so the runner gets exact token counts for
streamed and non-streamed requests alike. Failover happens before the first chunk reaches the
runner: a 429, a rejected key, a connection error or a 5xx on one account moves the request to
the next usable account.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
from google.protobuf import json_format

from uplion.v1 import chat_pb2, completions_pb2, embeddings_pb2, task_pb2

from ..config import Account
from ..content import prompt_texts, value_text
from .accounts import DISABLE_S, QUOTA_S, AccountState, now, parse_retry_after, pick_order, soonest_available
from .base import BackendError, invalid, unavailable

Opener = Callable[[Any], Awaitable[Any]]


def _body(message: Any, upstream_model: str) -> dict[str, Any]:
    body: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    body["model"] = upstream_model
    if "seed" in body:
        body["seed"] = int(body["seed"])  # proto3 JSON prints int64 as a string
    body.pop("stream", None)
    body.pop("stream_options", None)
    return body


class RemoteBackend:
    def __init__(self, accounts: tuple[Account, ...], upstream_model: str, timeout_s: float) -> None:
        self.upstream_model = upstream_model
        self.states = [
            AccountState(
                a, openai.AsyncOpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=timeout_s)
            )
            for a in accounts
        ]

    def prompt_tokens(self, task: task_pb2.Task) -> int:
        # An estimate (about 4 characters a token) until upstream reports the exact count.
        which = task.WhichOneof("request")
        if which == "chat":
            chars = sum(len(value_text(m.content)) for m in task.chat.messages)
        elif which == "completion":
            chars = sum(len(t) for t in prompt_texts(task.completion.prompt))
        elif which == "embedding":
            chars = sum(len(t) for t in prompt_texts(task.embedding.input))
        else:
            chars = 0
        return (chars + 3) // 4

    async def _first(self, open_call: Opener, streaming: bool) -> tuple[AccountState, Any, Any]:
        """Open the call on the first account that answers, returning (account, result, first chunk)."""
        problems: list[str] = []
        for state in pick_order(self.states, now()):
            state.inflight += 1
            try:
                result = await open_call(state.client)
                first = await anext(result, None) if streaming else None
            except openai.RateLimitError as e:
                if _code(e) == "insufficient_quota":
                    state.disable(now(), QUOTA_S, "quota")
                    problems.append("quota")
                else:
                    state.rate_limited(now(), parse_retry_after(e.response.headers))
                    problems.append("rate_limited")
            except (openai.AuthenticationError, openai.PermissionDeniedError):
                state.disable(now(), DISABLE_S, "authentication")
                problems.append("authentication")
            except openai.NotFoundError as e:
                state.inflight -= 1
                raise BackendError(task_pb2.TASK_ERROR_KIND_MODEL_NOT_FOUND, _msg(e), retryable=False) from None
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                state.inflight -= 1
                raise invalid(_msg(e)) from None
            except (openai.APIConnectionError, openai.InternalServerError, openai.APIStatusError) as e:
                state.rate_limited(now(), 1.0)
                problems.append(type(e).__name__)
            else:
                state.succeeded()
                return state, result, first
            state.inflight -= 1
        if problems and all(p == "authentication" for p in problems):
            raise BackendError(
                task_pb2.TASK_ERROR_KIND_AUTHENTICATION, "upstream rejected every API key", retryable=False
            )
        if problems and all(p == "quota" for p in problems):
            raise BackendError(
                task_pb2.TASK_ERROR_KIND_QUOTA_EXCEEDED, "every upstream account is out of quota", retryable=True
            )
        wait = soonest_available(self.states, now())
        raise unavailable(f"no upstream account available ({', '.join(problems) or 'all cooling down'})", wait)

    async def _stream(self, open_call: Opener, target: type[Any]) -> AsyncIterator[Any]:
        state, stream, first = await self._first(open_call, streaming=True)
        try:
            chunk = first
            while chunk is not None:
                yield json_format.ParseDict(chunk.model_dump(exclude_none=True), target(), ignore_unknown_fields=True)
                try:
                    chunk = await anext(stream, None)
                except openai.APIError as e:
                    raise unavailable(f"upstream failed mid-stream: {_msg(e)}") from None
        finally:
            state.inflight -= 1

    def chat(self, request: chat_pb2.ChatCompletionRequest) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        base = _body(request, self.upstream_model)

        async def open_call(client: Any) -> Any:
            body = dict(base)
            return await client.chat.completions.create(
                model=body.pop("model"), messages=body.pop("messages"), stream=True,
                stream_options={"include_usage": True}, extra_body=body,
            )  # fmt: skip

        return self._stream(open_call, chat_pb2.ChatCompletionChunk)

    def completion(self, request: completions_pb2.CompletionRequest) -> AsyncIterator[completions_pb2.Completion]:
        base = _body(request, self.upstream_model)

        async def open_call(client: Any) -> Any:
            body = dict(base)
            return await client.completions.create(
                model=body.pop("model"), prompt=body.pop("prompt", ""), stream=True,
                stream_options={"include_usage": True}, extra_body=body,
            )  # fmt: skip

        return self._stream(open_call, completions_pb2.Completion)

    async def embed(self, request: embeddings_pb2.EmbeddingRequest) -> embeddings_pb2.EmbeddingResponse:
        base = _body(request, self.upstream_model)

        async def open_call(client: Any) -> Any:
            body = dict(base)
            return await client.embeddings.create(
                model=body.pop("model"), input=body.pop("input"),
                encoding_format=body.pop("encoding_format", "float"), extra_body=body,
            )  # fmt: skip

        state, result, _ = await self._first(open_call, streaming=False)
        state.inflight -= 1
        parsed = json_format.ParseDict(
            result.model_dump(exclude_none=True), embeddings_pb2.EmbeddingResponse(), ignore_unknown_fields=True
        )
        return parsed

    async def close(self) -> None:
        for state in self.states:
            await state.client.close()


def _code(e: openai.APIStatusError) -> str | None:
    body = e.body if isinstance(e.body, dict) else {}
    err = body.get("error", body) if isinstance(body, dict) else {}
    code = err.get("code") if isinstance(err, dict) else None
    return str(code) if code else None


def _msg(e: openai.APIError) -> str:
    return str(e.message)[:500]
