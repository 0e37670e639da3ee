"""OpenAI's wire format to uplion's messages, without an intermediate object model: the remote
backend decodes each upstream JSON object once (`json.loads`) and these pure functions fill the
protobuf message directly. The common shapes (text deltas, usage) are set field by field; anything
else a chunk carries (tool calls, refusals, ...) goes through protobuf's JSON mapping.

Members of an upstream object the contract does not name travel in the message's `extra_json`
(`extra.split`), for the gateway to write where the upstream put them.

Also here: the decision what an upstream error means for the account pool (`classify`)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from google.protobuf import json_format, struct_pb2

from uplion.v1 import chat_pb2, common_pb2, completions_pb2, embeddings_pb2

from . import extra
from .accounts import parse_retry_after

_TEXT_DELTA_KEYS = frozenset({"role", "content"})


def _without_nulls(value: Any) -> Any:
    """JSON null means "absent" in OpenAI's objects; protobuf's JSON mapping wants it left out."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _usage(into: common_pb2.Usage, u: Mapping[str, Any]) -> None:
    into.prompt_tokens = int(u.get("prompt_tokens") or 0)
    into.completion_tokens = int(u.get("completion_tokens") or 0)
    into.total_tokens = int(u.get("total_tokens") or into.prompt_tokens + into.completion_tokens)


def _envelope(msg: Any, d: Mapping[str, Any]) -> None:
    """What every chunk carries besides its choices: id, object, created, model, fingerprint, usage."""
    msg.id = str(d.get("id") or "")
    msg.object = str(d.get("object") or "")
    msg.created = int(d.get("created") or 0)
    msg.model = str(d.get("model") or "")
    fingerprint = d.get("system_fingerprint")
    if fingerprint is not None:
        msg.system_fingerprint = str(fingerprint)
    usage = d.get("usage")
    if usage:
        _usage(msg.usage, usage)


def _extra(msg: Any, d: Mapping[str, Any]) -> None:
    more = extra.split(d, msg.DESCRIPTOR)
    if more:
        msg.extra_json = extra.dumps(more)


def _finish_reason(choice: Any, c: Mapping[str, Any]) -> None:
    reason = c.get("finish_reason")
    if reason is not None:
        choice.finish_reason = reason


def chat_chunk(d: Mapping[str, Any]) -> chat_pb2.ChatCompletionChunk:
    """One `chat.completion.chunk` object as uplion's chunk."""
    chunk = chat_pb2.ChatCompletionChunk()
    _envelope(chunk, d)
    for c in d.get("choices") or ():
        choice = chunk.choices.add(index=int(c.get("index") or 0))
        delta = c.get("delta") or {}
        out = choice.delta
        out.SetInParent()
        if delta.keys() <= _TEXT_DELTA_KEYS:
            role, content = delta.get("role"), delta.get("content")
            if role is not None:
                out.role = role
            if content is not None:
                out.content = content
        else:
            json_format.ParseDict(_without_nulls(delta), out, ignore_unknown_fields=True)
        _finish_reason(choice, c)
    _extra(chunk, d)
    return chunk


def completion_chunk(d: Mapping[str, Any]) -> completions_pb2.Completion:
    """One streamed `text_completion` object as uplion's chunk."""
    chunk = completions_pb2.Completion()
    _envelope(chunk, d)
    for c in d.get("choices") or ():
        choice = chunk.choices.add(index=int(c.get("index") or 0), text=str(c.get("text") or ""))
        _finish_reason(choice, c)
    _extra(chunk, d)
    return chunk


def chat_chunks_from_answer(d: Mapping[str, Any]) -> Iterator[chat_pb2.ChatCompletionChunk]:
    """A whole `chat.completion` (an upstream that answered a streamed request without streaming)
    as the chunks it would have streamed: one delta per choice (the whole message, members the
    contract lacks included), then the usage."""
    head = {k: v for k, v in d.items() if k not in ("object", "choices", "usage")}
    choices = []
    for c in d.get("choices") or ():
        message = dict(c.get("message") or {})
        if isinstance(message.get("tool_calls"), list):
            message["tool_calls"] = [{"index": i, **t} if isinstance(t, dict) else t
                                     for i, t in enumerate(message["tool_calls"])]  # fmt: skip
        choices.append({**{k: v for k, v in c.items() if k != "message"}, "delta": message})
    yield chat_chunk({**head, "object": "chat.completion.chunk", "choices": choices})
    if d.get("usage"):
        yield chat_chunk({**head, "object": "chat.completion.chunk", "choices": [], "usage": d["usage"]})


def completion_chunks_from_answer(d: Mapping[str, Any]) -> Iterator[completions_pb2.Completion]:
    """A whole `text_completion` answer as its chunks (see chat_chunks_from_answer)."""
    yield completion_chunk({**d, "usage": None})
    if d.get("usage"):
        yield completion_chunk({**{k: d.get(k) for k in ("id", "created", "model")}, "usage": d["usage"]})


def embedding_response(d: Mapping[str, Any]) -> embeddings_pb2.EmbeddingResponse:
    out = embeddings_pb2.EmbeddingResponse(object=str(d.get("object") or "list"), model=str(d.get("model") or ""))
    for item in d.get("data") or ():
        e = out.data.add(object=str(item.get("object") or "embedding"), index=int(item.get("index") or 0))
        vector = item.get("embedding")
        if isinstance(vector, str):  # encoding_format=base64
            e.embedding.string_value = vector
        else:
            values = e.embedding.list_value.values
            values.extend(struct_pb2.Value(number_value=float(x)) for x in vector or ())
    usage = d.get("usage") or {}
    out.usage.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    out.usage.total_tokens = int(usage.get("total_tokens") or out.usage.prompt_tokens)
    _extra(out, d)
    return out


def stream_error(d: Mapping[str, Any]) -> str | None:
    """The message of an in-band error object (`{"error": {...}}`) in a stream, if this is one."""
    err = d.get("error")
    if not err:
        return None
    return str(err.get("message") if isinstance(err, dict) else err)[:500] or "upstream error"


class Verdict(Enum):
    """What an upstream failure means for the request and for the account that answered it."""

    QUOTA = "quota"  # the account is out of quota: set it aside for long, try the next
    RATE_LIMITED = "rate_limited"  # cool the account down (retry-after), try the next
    AUTHENTICATION = "authentication"  # the key was rejected: set it aside, try the next
    NOT_FOUND = "not_found"  # the model does not exist upstream: final for this request
    INVALID = "invalid"  # the request is wrong: final, no other account would take it
    TRY_NEXT = "try_next"  # connection error, 5xx, anything else: brief cool-down, next account


@dataclass(frozen=True)
class UpstreamProblem:
    verdict: Verdict
    message: str
    retry_after: float | None = None


def error_message(body: bytes, status: int) -> tuple[str, str | None]:
    """OpenAI's `{"error": {"message", "code", ...}}` (or whatever the upstream sent): message, code."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return (body.decode(errors="replace").strip()[:500] or f"HTTP {status}"), None
    err = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    if isinstance(err, dict):
        code = err.get("code")
        return str(err.get("message") or f"HTTP {status}")[:500], (str(code) if code else None)
    return str(err)[:500], None


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamProblem:
    message, code = error_message(body, status)
    if status == 429:
        if code == "insufficient_quota":
            return UpstreamProblem(Verdict.QUOTA, message)
        return UpstreamProblem(Verdict.RATE_LIMITED, message, parse_retry_after(headers))
    if status in (401, 403):
        return UpstreamProblem(Verdict.AUTHENTICATION, message)
    if status == 404:
        return UpstreamProblem(Verdict.NOT_FOUND, message)
    if status in (400, 422):
        return UpstreamProblem(Verdict.INVALID, message)
    return UpstreamProblem(Verdict.TRY_NEXT, f"HTTP {status}: {message}")
