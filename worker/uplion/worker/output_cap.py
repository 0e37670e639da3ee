"""The model's output cap for requests that name none (AIModel `maxOutputTokens`, the worker's
UPLION_MAX_OUTPUT_TOKENS): what one request can cost is bounded even when the client sets no
`max_tokens`. The cap is not sent upstream (an upstream whose context is smaller than the cap would
refuse the request); the worker counts the output as it streams and, at the cap, stops reading,
which closes the upstream connection, and ends the answer as OpenAI ends a cut one
(`finish_reason: "length"`), billing the tokens it counted.

A Responses request passed through to an upstream that serves the API is different: its events
cannot be cut short without breaking their sequence, so a request that names no
`max_output_tokens` is sent with the cap as its `max_output_tokens` (`response_with_cap`), and the
upstream ends it itself (`incomplete`, reason `max_output_tokens`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from uplion.v1 import chat_pb2, common_pb2, completions_pb2, responses_pb2

from .content import estimate_tokens

Chunk = TypeVar("Chunk", chat_pb2.ChatCompletionChunk, completions_pb2.Completion)


def cap_for(request: chat_pb2.ChatCompletionRequest | completions_pb2.CompletionRequest, limit: int) -> int | None:
    """The output tokens the worker allows a request (for all its choices), or None when the request
    names its own cap (the gateway has checked that one against the model's)."""
    if request.HasField("max_tokens"):
        return None
    if isinstance(request, chat_pb2.ChatCompletionRequest) and request.HasField("max_completion_tokens"):
        return None
    n = request.n if request.HasField("n") and request.n > 0 else 1
    return limit * n


def response_with_cap(request: responses_pb2.CreateResponseRequest, limit: int) -> responses_pb2.CreateResponseRequest:
    """The request as sent upstream: with the model's cap as `max_output_tokens` when it names none
    (one it names was checked against the model's by the gateway)."""
    if request.HasField("max_output_tokens") or limit <= 0:
        return request
    out = responses_pb2.CreateResponseRequest()
    out.CopyFrom(request)
    out.max_output_tokens = limit
    return out


def tokens_in(chunk: chat_pb2.ChatCompletionChunk | completions_pb2.Completion) -> int:
    """Output tokens a chunk carries, from above: one per non-empty piece, or about 4 characters a
    token when the upstream packs several into one."""
    if isinstance(chunk, chat_pb2.ChatCompletionChunk):
        pieces = [c.delta.content + "".join(t.function.arguments for t in c.delta.tool_calls) for c in chunk.choices]
    else:
        pieces = [c.text for c in chunk.choices]
    return sum(max(1, estimate_tokens(len(p))) for p in pieces if p)


def _ending(first: Chunk, indexes: list[int], prompt_tokens: int, completion_tokens: int) -> list[Chunk]:
    """The chunks that end a cut answer: each choice's finish_reason "length", then the usage."""
    usage = common_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                             total_tokens=prompt_tokens + completion_tokens)  # fmt: skip
    if isinstance(first, chat_pb2.ChatCompletionChunk):
        done: Chunk = chat_pb2.ChatCompletionChunk(choices=[
            chat_pb2.ChatCompletionChunkChoice(index=i, delta=chat_pb2.ChatCompletionDelta(), finish_reason="length")
            for i in indexes
        ])  # fmt: skip
        return [done, chat_pb2.ChatCompletionChunk(usage=usage)]
    choices = [completions_pb2.CompletionChoice(index=i, text="", finish_reason="length") for i in indexes]
    return [completions_pb2.Completion(choices=choices), completions_pb2.Completion(usage=usage)]


async def capped(chunks: AsyncIterator[Chunk], cap: int, prompt_tokens: int) -> AsyncIterator[Chunk]:
    """`chunks` until they carry `cap` output tokens; then the answer ends there, cut ("length"), and
    the backend's stream is closed (a remote upstream's connection with it)."""
    used = 0
    ending = False  # the upstream has begun to end the answer itself: nothing left to cut
    indexes: list[int] = []
    try:
        async for chunk in chunks:
            used += tokens_in(chunk)
            for c in chunk.choices:
                if c.index not in indexes:
                    indexes.append(c.index)
                ending = ending or c.HasField("finish_reason")
            yield chunk
            if used >= cap and not ending:
                for last in _ending(chunk, indexes or [0], prompt_tokens, used):
                    yield last
                return
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
