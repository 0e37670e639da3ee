"""Running one task on a backend and emitting its events (chunks, then one final result)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from uplion.core.aimodels import DEFAULT_MAX_OUTPUT_TOKENS
from uplion.v1 import chat_pb2, common_pb2, completions_pb2, responses_pb2, task_pb2

from .aggregate import aggregate_chat, aggregate_completion, aggregate_extra
from .attempt import Attempt
from .backends import extra
from .backends.base import Backend, invalid, unavailable
from .backends.responses_wire import FINAL_EVENTS, billed, output_chars, typed_event, typed_response
from .content import estimate_usage
from .output_cap import cap_for, capped, response_with_cap


def _created(task: task_pb2.Task) -> int:
    return task.created_at.seconds or int(time.time())


Stamped = chat_pb2.ChatCompletion | chat_pb2.ChatCompletionChunk | completions_pb2.Completion


def _stamp(msg: Stamped, prefix: str, task: task_pb2.Task, obj: str) -> None:
    """The id, object, created and model every attempt of the task gives its output."""
    msg.id = f"{prefix}-{task.task_id}"
    msg.object = obj
    msg.created = _created(task)
    msg.model = task.model


def _tokens_in(chunk: chat_pb2.ChatCompletionChunk | completions_pb2.Completion) -> int:
    """Approximate tokens a streamed chunk carries (one per non-empty choice delta); usage is exact."""
    if isinstance(chunk, chat_pb2.ChatCompletionChunk):
        return sum(1 for c in chunk.choices if c.delta.content or c.delta.tool_calls or c.delta.refusal)
    return sum(1 for c in chunk.choices if c.text)


def _refuse_unknown(task: task_pb2.Task, backend: Backend) -> None:
    """Members the contract does not name reach only a backend that forwards them (remote); the
    gateway refuses them for any other, and so does the worker, should a task carry them anyway."""
    which = task.WhichOneof("request")
    extra_json = getattr(task, which).extra_json if which else ""
    if extra_json and not getattr(backend, "forwards_unknown", False):
        name = next(iter(extra.loads(extra_json)), extra.EXTRA)
        raise invalid(f"Unrecognized request argument supplied: {name}. This model's backend cannot pass it on.")


def _output(task: task_pb2.Task, backend: Backend, limit: int) -> AsyncIterator[Any]:
    """The backend's chunks for a chat or completion task, cut at the model's output cap when the
    request names no cap of its own (output_cap.py)."""
    request: chat_pb2.ChatCompletionRequest | completions_pb2.CompletionRequest
    chunks: AsyncIterator[Any]
    if task.WhichOneof("request") == "chat":
        request, chunks = task.chat, backend.chat(task.chat)
    else:
        request, chunks = task.completion, backend.completion(task.completion)
    cap = cap_for(request, limit)
    return chunks if cap is None else capped(chunks, cap, backend.prompt_tokens(task))


async def execute(
    task: task_pb2.Task, attempt: Attempt, backend: Backend, output_limit: int = DEFAULT_MAX_OUTPUT_TOKENS
) -> None:
    _refuse_unknown(task, backend)
    which = task.WhichOneof("request")
    if which == "chat":
        await _chat(task, attempt, _output(task, backend, output_limit))
    elif which == "completion":
        await _completion(task, attempt, _output(task, backend, output_limit))
    elif which == "embedding":
        resp = await backend.embed(task.embedding)
        resp.model = task.model
        attempt.usage = common_pb2.Usage(prompt_tokens=resp.usage.prompt_tokens, total_tokens=resp.usage.total_tokens)
        await attempt.emit(task_pb2.TaskEvent(result=task_pb2.TaskResult(embedding=resp, usage=attempt.usage)))
    elif which == "response":
        await _response(task, attempt, backend, output_limit)
    else:
        raise invalid("task carries no request")


async def _chat(task: task_pb2.Task, attempt: Attempt, output: AsyncIterator[chat_pb2.ChatCompletionChunk]) -> None:
    if task.stream:
        await _forward(output, task, attempt, "chatcmpl", "chat.completion.chunk")
        return
    chunks = [c async for c in output]
    choices, attempt.usage = aggregate_chat(chunks)
    result = chat_pb2.ChatCompletion(choices=choices, usage=attempt.usage, extra_json=aggregate_extra(chunks))
    _fingerprint(result, chunks)
    _stamp(result, "chatcmpl", task, "chat.completion")
    await attempt.emit(task_pb2.TaskEvent(result=task_pb2.TaskResult(chat=result, usage=attempt.usage)))


async def _response(task: task_pb2.Task, attempt: Attempt, backend: Backend, output_limit: int) -> None:
    """A Responses API request passed to an upstream that serves it: each event as the upstream sent
    it (streamed), then the final response, billed by its usage (or an estimate when it has none)."""
    serve = getattr(backend, "responses", None)
    if serve is None:
        raise invalid("this model's backend does not serve the Responses API itself (the gateway bridges it to chat)")
    final: responses_pb2.Response | None = None
    generated = 0
    async for raw, obj in serve(response_with_cap(task.response, output_limit), task.stream):
        if not task.stream:
            final = typed_response(obj, raw.decode())
            continue
        event = typed_event(obj, raw.decode())
        generated += output_chars(obj)
        attempt.completion_tokens += 1 if event.type.endswith(".delta") else 0
        if event.type in FINAL_EVENTS and isinstance(obj.get("response"), dict):
            final = typed_response(obj["response"], json.dumps(obj["response"], ensure_ascii=False))
        await attempt.emit(task_pb2.TaskEvent(response_event=event))
    if final is None:
        raise unavailable("the upstream's Responses stream ended without a final response")
    if final.HasField("usage"):
        attempt.usage = billed(final.usage)
    else:  # an upstream that reports no usage is billed by estimate, never as nothing
        attempt.usage = estimate_usage(backend.prompt_tokens(task), generated)
    await attempt.emit(task_pb2.TaskEvent(result=task_pb2.TaskResult(response=final, usage=attempt.usage)))


async def _completion(task: task_pb2.Task, attempt: Attempt, output: AsyncIterator[completions_pb2.Completion]) -> None:
    if task.stream:
        await _forward(output, task, attempt, "cmpl", "text_completion")
        return
    chunks = [c async for c in output]
    choices, attempt.usage = aggregate_completion(chunks)
    result = completions_pb2.Completion(choices=choices, usage=attempt.usage, extra_json=aggregate_extra(chunks))
    _fingerprint(result, chunks)
    _stamp(result, "cmpl", task, "text_completion")
    await attempt.emit(task_pb2.TaskEvent(result=task_pb2.TaskResult(completion=result, usage=attempt.usage)))


def _fingerprint(
    result: chat_pb2.ChatCompletion | completions_pb2.Completion,
    chunks: Sequence[chat_pb2.ChatCompletionChunk | completions_pb2.Completion],
) -> None:
    """The answer's system_fingerprint: the last one its chunks reported (OpenAI sends it on each)."""
    for chunk in reversed(chunks):
        if chunk.HasField("system_fingerprint"):
            result.system_fingerprint = chunk.system_fingerprint
            return


async def _forward(
    chunks: AsyncIterator[chat_pb2.ChatCompletionChunk] | AsyncIterator[completions_pb2.Completion],
    task: task_pb2.Task,
    attempt: Attempt,
    prefix: str,
    obj: str,
) -> None:
    """Stream a backend's chunks to the reply topic, keeping its final usage for the result event
    (with the usage chunk's members the contract lacks: the gateway writes that chunk)."""
    usage_extra = ""
    async for chunk in chunks:
        if chunk.HasField("usage"):
            attempt.usage.CopyFrom(chunk.usage)
            if not chunk.choices:  # the gateway writes this chunk (if asked to): it gets what it said
                usage_extra = chunk.extra_json
                if chunk.HasField("system_fingerprint"):
                    more = {**extra.loads(usage_extra), "system_fingerprint": chunk.system_fingerprint}
                    usage_extra = extra.dumps(more)
                continue
            chunk.ClearField("usage")
            if chunk.extra_json:  # the usage's own members go with the usage, the rest stays here
                more = extra.loads(chunk.extra_json)
                usage_extra = extra.dumps({"usage": more.pop("usage")} if "usage" in more else {})
                chunk.extra_json = extra.dumps(more)
        _stamp(chunk, prefix, task, obj)
        attempt.completion_tokens += _tokens_in(chunk)
        if isinstance(chunk, chat_pb2.ChatCompletionChunk):
            await attempt.emit(task_pb2.TaskEvent(chat_chunk=chunk))
        else:
            await attempt.emit(task_pb2.TaskEvent(completion_chunk=chunk))
    await attempt.emit(task_pb2.TaskEvent(result=task_pb2.TaskResult(usage=attempt.usage, extra_json=usage_extra)))
