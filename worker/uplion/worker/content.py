"""Pure helpers over request content: text of messages and prompts, stop sequences, and the token
estimate used wherever an upstream gives no count (about 4 characters a token)."""

from __future__ import annotations

from google.protobuf import struct_pb2

from uplion.v1 import chat_pb2, common_pb2


def value_text(value: struct_pb2.Value) -> str:
    """Text of an OpenAI `content`: a string, or the text parts of an array of parts."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "list_value":
        parts = []
        for item in value.list_value.values:
            if item.WhichOneof("kind") == "string_value":
                parts.append(item.string_value)
            elif item.WhichOneof("kind") == "struct_value":
                fields = item.struct_value.fields
                if fields.get("type") and fields["type"].string_value == "text" and "text" in fields:
                    parts.append(fields["text"].string_value)
        return "".join(parts)
    return ""


def last_user_text(messages: list[chat_pb2.ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return value_text(message.content)
    return value_text(messages[-1].content) if messages else ""


def stop_sequences(value: struct_pb2.Value) -> list[str]:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return [value.string_value] if value.string_value else []
    if kind == "list_value":
        return [v.string_value for v in value.list_value.values if v.string_value]
    return []


def prompt_texts(value: struct_pb2.Value) -> list[str]:
    """The prompts of a completion/embedding input: a string, strings, or token ids (as text)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return [value.string_value]
    if kind == "list_value":
        items = list(value.list_value.values)
        if items and all(i.WhichOneof("kind") == "number_value" for i in items):
            return [" ".join(str(int(i.number_value)) for i in items)]
        out = []
        for item in items:
            if item.WhichOneof("kind") == "string_value":
                out.append(item.string_value)
            elif item.WhichOneof("kind") == "list_value":
                out.append(" ".join(str(int(v.number_value)) for v in item.list_value.values))
        return out
    return []


def estimate_tokens(chars: int) -> int:
    """About 4 characters a token (OpenAI's rule of thumb for English)."""
    return (chars + 3) // 4


def estimate_usage(prompt_tokens: int, generated_chars: int) -> common_pb2.Usage:
    completion = estimate_tokens(generated_chars)
    return common_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                            total_tokens=prompt_tokens + completion)  # fmt: skip
