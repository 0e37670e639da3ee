"""The text of OpenAI request content (pure): what the gateway estimates a prompt's size from and
what the worker's backends read. One reading of `content` and `prompt` for both."""

from __future__ import annotations

from google.protobuf import struct_pb2


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
