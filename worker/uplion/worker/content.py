"""Pure helpers over request content: text of messages and prompts, stop sequences, and the token
estimate used wherever an upstream gives no count (about 4 characters a token)."""

from __future__ import annotations

from google.protobuf import struct_pb2

from uplion.core.content import prompt_texts, value_text
from uplion.v1 import chat_pb2, common_pb2

__all__ = ["estimate_tokens", "estimate_usage", "last_user_text", "prompt_texts", "stop_sequences", "value_text"]


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


def estimate_tokens(chars: int) -> int:
    """About 4 characters a token (OpenAI's rule of thumb for English)."""
    return (chars + 3) // 4


def estimate_usage(prompt_tokens: int, generated_chars: int) -> common_pb2.Usage:
    completion = estimate_tokens(generated_chars)
    return common_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                            total_tokens=prompt_tokens + completion)  # fmt: skip
