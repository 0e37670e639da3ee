"""Running one task on a backend and emitting its events (chunks, then one final result)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

from uplion.v1 import chat_pb2, common_pb2, completions_pb2, task_pb2

from .aggregate import aggregate_chat, aggregate_completion, aggregate_extra
from .attempt import Attempt
from .backends import extra
from .backends.base import Backend, invalid


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


async def execute(task: task_pb2.Task, attempt: Attempt, backend: Backend) -> None:
    _refuse_unknown(task, backend)
    which = task.WhichOneof("request")
    if which == "chat":
        await _chat(task, attempt, backend)
    elif which == "completion":
        await _completion(task, attempt, backend)
    elif which == "embedding":
        resp = await backend.embed(task.embedding)
        resp.model = task.model
        attempt.usage = common_pb2.Usage(prompt_tokens=resp.usage.prompt_tokens, total_tokens=resp.usage.total_tokens)
        await attempt.emit(task_pb2.TaskEvent(result=task_pb2.TaskResult(embedding=resp, usage=attempt.usage)))
    else:
        raise invalid("task carries no request")


async def _chat(task: task_pb2.Task, attempt: Attempt, backend: Backend) -> None:
    if task.stream:
        await _forward(backend.chat(task.chat), task, attempt, "chatcmpl", "chat.completion.chunk")
        return
    chunks = [c async for c in backend.chat(task.chat)]
    choices, attempt.usage = aggregate_chat(chunks)
    result = chat_pb2.ChatCompletion(choices=choices, usage=attempt.usage, extra_json=aggregate_extra(chunks))
    _fingerprint(result, chunks)
    _stamp(result, "chatcmpl", task, "chat.completion")
    await attempt.emit(task_pb2.TaskEvent(result=task_pb2.TaskResult(chat=result, usage=attempt.usage)))


async def _completion(task: task_pb2.Task, attempt: Attempt, backend: Backend) -> None:
    if task.stream:
        await _forward(backend.completion(task.completion), task, attempt, "cmpl", "text_completion")
        return
    chunks = [c async for c in backend.completion(task.completion)]
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
