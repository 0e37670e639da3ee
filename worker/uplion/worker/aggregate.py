"""Folding streamed chunks into the non-streamed result (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from uplion.v1 import chat_pb2, common_pb2, completions_pb2

from .backends import extra


@dataclass
class _ChoiceAcc:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    has_content: bool = False
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, chat_pb2.ToolCall] = field(default_factory=dict)
    finish_reason: str = ""


def aggregate_chat(
    chunks: list[chat_pb2.ChatCompletionChunk],
) -> tuple[list[chat_pb2.ChatCompletionChoice], common_pb2.Usage]:
    acc: dict[int, _ChoiceAcc] = {}
    usage = common_pb2.Usage()
    for chunk in chunks:
        if chunk.HasField("usage"):
            usage.CopyFrom(chunk.usage)
        for choice in chunk.choices:
            a = acc.setdefault(choice.index, _ChoiceAcc())
            d = choice.delta
            if d.HasField("role"):
                a.role = d.role
            if d.HasField("content"):
                a.content.append(d.content)
                a.has_content = True
            if d.HasField("refusal"):
                a.refusal.append(d.refusal)
            for tc in d.tool_calls:
                call = a.tool_calls.setdefault(tc.index, chat_pb2.ToolCall(type="function"))
                if tc.HasField("id"):
                    call.id = tc.id
                if tc.HasField("type"):
                    call.type = tc.type
                if tc.function.HasField("name"):
                    call.function.name += tc.function.name
                if tc.function.HasField("arguments"):
                    call.function.arguments += tc.function.arguments
            if choice.HasField("finish_reason"):
                a.finish_reason = choice.finish_reason
    out = []
    for index in sorted(acc):
        a = acc[index]
        msg = chat_pb2.ChatCompletionMessage(role=a.role)
        if a.has_content:
            msg.content = "".join(a.content)
        if a.refusal:
            msg.refusal = "".join(a.refusal)
        msg.tool_calls.extend(a.tool_calls[i] for i in sorted(a.tool_calls))
        out.append(chat_pb2.ChatCompletionChoice(index=index, message=msg, finish_reason=a.finish_reason or "stop"))
    return out, usage


def aggregate_completion(
    chunks: list[completions_pb2.Completion],
) -> tuple[list[completions_pb2.CompletionChoice], common_pb2.Usage]:
    texts: dict[int, list[str]] = {}
    finish: dict[int, str] = {}
    usage = common_pb2.Usage()
    for chunk in chunks:
        if chunk.HasField("usage"):
            usage.CopyFrom(chunk.usage)
        for choice in chunk.choices:
            texts.setdefault(choice.index, []).append(choice.text)
            if choice.HasField("finish_reason"):
                finish[choice.index] = choice.finish_reason
    choices = [
        completions_pb2.CompletionChoice(index=i, text="".join(texts[i]), finish_reason=finish.get(i, "stop"))
        for i in sorted(texts)
    ]
    return choices, usage


def aggregate_extra(chunks: Sequence[chat_pb2.ChatCompletionChunk] | Sequence[completions_pb2.Completion]) -> str:
    """The non-streamed answer's `extra_json` from its chunks' (a remote upstream's members the
    contract lacks): top-level and `usage` members as the last chunk that had them said; a choice's
    members folded over its chunks (`logprobs.content` joined); a chat delta's members folded into
    the choice's `message` (`annotations` joined, `reasoning_content` text joined). Empty, and no
    JSON parsed, when no chunk has any."""
    top: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    messages: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        if not chunk.extra_json:
            continue
        more = extra.loads(chunk.extra_json)
        for position, piece in enumerate(more.pop("choices", None) or ()):
            if position >= len(chunk.choices) or not isinstance(piece, dict):
                continue
            index = chunk.choices[position].index
            delta = piece.pop("delta", None)
            if isinstance(delta, dict) and delta:
                extra.fold(messages.setdefault(index, {}), delta, join_strings=True)
            if piece:
                extra.fold(choices.setdefault(index, {}), piece)
        if isinstance(u := more.pop("usage", None), dict):
            extra.fold(usage, u)
        extra.fold(top, more)
    if usage:
        top["usage"] = usage
    if choices or messages:
        indexes = sorted({c.index for chunk in chunks for c in chunk.choices})  # the answer's choices, in order
        top["choices"] = [{**choices.get(i, {}), **({"message": messages[i]} if i in messages else {})}
                          for i in indexes]  # fmt: skip
    return extra.dumps(top)
