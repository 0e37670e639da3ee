"""The Responses API's input side, as pure functions: a request's `input` as OpenAI's input items
(normalized, each with its id), and a conversation of items as the chat task every model serves.

Item ids are derived from the response they belong to (`msg_<task id>i0`, `fc_<task id>o1`, ...),
so an `item_reference` names its response without an index of items: `response_of_item`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from uplion.v1 import chat_pb2, responses_pb2

from .errors import invalid
from .validation import TOOL_NAME

JsonObject = dict[str, Any]

MESSAGE_ROLES = {"user", "assistant", "system", "developer"}
_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}
_ITEM_ID = re.compile(r"^(?:msg|fc|fco)_([0-9a-f]{32})[io]\d+$")
SKIPPED_TYPES = {"reasoning"}  # items a client echoes back that a chat model has no use for


def response_id(task_id: str) -> str:
    return f"resp_{task_id}"


def task_of_response(rid: str) -> str | None:
    """The task id a response id was made from, or None for an id uplion never made."""
    tid = rid.removeprefix("resp_")
    return tid if rid.startswith("resp_") and re.fullmatch(r"[0-9a-f]{32}", tid) else None


def item_id(kind: str, task_id: str, side: str, index: int) -> str:
    """The id of item `index` of a response's input (`side` "i") or output ("o")."""
    return f"{_PREFIX[kind]}_{task_id}{side}{index}"


def response_of_item(iid: str) -> str | None:
    """The response an item id uplion made belongs to, or None."""
    m = _ITEM_ID.match(iid)
    return response_id(m.group(1)) if m else None


# ---- input: validation and normalization ---------------------------------------------------------


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{where} must be a string", where)
    return value


def _part(part: Any, where: str, role: str) -> JsonObject:
    if not isinstance(part, dict):
        raise invalid(f"{where} must be an object", where)
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        out: JsonObject = {"type": kind, "text": _text(part.get("text"), f"{where}.text")}
        if kind == "output_text":
            out["annotations"] = []
        return out
    if kind == "refusal" and role == "assistant":
        return {"type": "refusal", "refusal": _text(part.get("refusal"), f"{where}.refusal")}
    if kind == "input_image" and role != "assistant":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise invalid(f"{where}.image_url must be a URL or a data URL (file ids are not supported)", where)
        return {"type": "input_image", "image_url": url, "detail": part.get("detail") or "auto"}
    raise invalid(
        f"{where}.type must be input_text or input_image (output_text or refusal for assistant messages), got {kind!r}",
        f"{where}.type",
    )


def _message(item: Mapping[str, Any], where: str) -> JsonObject:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise invalid(f"{where}.role must be one of {', '.join(sorted(MESSAGE_ROLES))}, got {role!r}", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        kind = "output_text" if role == "assistant" else "input_text"
        parts = [{"type": kind, "text": content, **({"annotations": []} if role == "assistant" else {})}]
    elif isinstance(content, list):
        parts = [_part(p, f"{where}.content[{i}]", role) for i, p in enumerate(content)]
    else:
        raise invalid(f"{where}.content must be a string or an array of content parts", f"{where}.content")
    return {"type": "message", "role": role, "content": parts}


def _function_call(item: Mapping[str, Any], where: str) -> JsonObject:
    return {"type": "function_call", "call_id": _text(item.get("call_id"), f"{where}.call_id"),
            "name": _text(item.get("name"), f"{where}.name"),
            "arguments": _text(item.get("arguments"), f"{where}.arguments")}  # fmt: skip


def _call_output(item: Mapping[str, Any], where: str) -> JsonObject:
    output = item.get("output")
    if isinstance(output, list):  # content parts: their text
        output = "".join(_part(p, f"{where}.output[{i}]", "user").get("text", "") for i, p in enumerate(output))
    return {"type": "function_call_output", "call_id": _text(item.get("call_id"), f"{where}.call_id"),
            "output": _text(output, f"{where}.output")}  # fmt: skip


def normalize_input(value: struct_pb2.Value, task_id: str) -> list[JsonObject]:
    """`input` as OpenAI's input items, each with its id and status, or a 400 naming the first bad
    member. `item_reference` items are kept as they are (the caller resolves them from storage) and
    reasoning items are dropped."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        items: list[Any] = [{"role": "user", "content": value.string_value}]
    elif kind == "list_value":
        items = list(json_format.MessageToDict(value.list_value))
    elif kind is None or kind == "null_value":
        raise invalid("Missing required parameter: 'input'.", "input")
    else:
        raise invalid("'input' must be a string or an array of input items", "input")
    out: list[JsonObject] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"{where} must be an object", where)
        t = item.get("type", "message")
        if t == "message":
            norm = _message(item, where)
        elif t == "function_call":
            norm = _function_call(item, where)
        elif t == "function_call_output":
            norm = _call_output(item, where)
        elif t == "item_reference":
            out.append({"type": "item_reference", "id": _text(item.get("id"), f"{where}.id")})
            continue
        elif t in SKIPPED_TYPES:
            continue
        else:
            raise invalid(
                f"{where}.type {t!r} is not supported: use message, function_call, function_call_output or "
                "item_reference",
                f"{where}.type",
            )
        client_id = item.get("id")
        norm["id"] = client_id if isinstance(client_id, str) and client_id else item_id(t, task_id, "i", i)
        norm["status"] = "completed"
        out.append(norm)
    if not out:
        raise invalid("'input' must contain at least one item", "input")
    return out


def raw_input_items(value: struct_pb2.Value, task_id: str) -> list[JsonObject]:
    """A passed-through request's input as items to store, unchecked (its upstream judges them):
    a string is one user message; each item without an id gets one."""
    if value.WhichOneof("kind") == "string_value":
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value.string_value}],
                 "id": item_id("message", task_id, "i", 0), "status": "completed"}]  # fmt: skip
    if value.WhichOneof("kind") != "list_value":
        return []
    out: list[JsonObject] = []
    for i, item in enumerate(json_format.MessageToDict(value.list_value)):
        if isinstance(item, dict):
            kind = item.get("type", "message")
            prefix = kind if kind in _PREFIX else "message"
            out.append({"type": kind, **item, "id": item.get("id") or item_id(prefix, task_id, "i", i)})
    return out


def resolve_references(items: list[JsonObject], known: Mapping[str, JsonObject]) -> list[JsonObject]:
    """`items` with each item_reference replaced by the item it names (from `known`, the items of the
    caller's stored responses), or a 404-style 400 naming it."""
    out = []
    for i, item in enumerate(items):
        if item["type"] == "item_reference":
            found = known.get(item["id"])
            if found is None:
                raise invalid(f"Item with id '{item['id']}' not found.", f"input[{i}].id")
            out.append(found)
        else:
            out.append(item)
    return out


def references(items: Iterable[JsonObject]) -> set[str]:
    """The response ids the item_references among `items` point into."""
    out = set()
    for item in items:
        if item["type"] == "item_reference" and (rid := response_of_item(item["id"])):
            out.add(rid)
    return out


# ---- the chat task -------------------------------------------------------------------------------


def _value(obj: Any) -> struct_pb2.Value:
    v = struct_pb2.Value()
    if isinstance(obj, str):
        v.string_value = obj
    else:
        json_format.ParseDict(obj, v)
    return v


def _chat_content(parts: list[JsonObject]) -> struct_pb2.Value:
    if len(parts) == 1 and parts[0]["type"] in ("input_text", "output_text"):
        return _value(parts[0]["text"])
    chat_parts: list[JsonObject] = []
    for p in parts:
        if p["type"] == "input_image":
            chat_parts.append({"type": "image_url", "image_url": {"url": p["image_url"], "detail": p["detail"]}})
        elif p["type"] != "refusal":
            chat_parts.append({"type": "text", "text": p["text"]})
    return _value(chat_parts)


def chat_messages(items: Iterable[JsonObject], instructions: str | None) -> list[chat_pb2.ChatMessage]:
    """A conversation of (resolved) items as chat messages: function calls join the assistant message
    before them, their outputs become tool messages."""
    out: list[chat_pb2.ChatMessage] = []
    if instructions:
        out.append(chat_pb2.ChatMessage(role="system", content=_value(instructions)))
    for item in items:
        t = item["type"]
        if t == "message":
            role = item["role"]
            if role == "assistant":
                text = "".join(p.get("text", "") for p in item["content"])
                refusal = "".join(p.get("refusal", "") for p in item["content"])
                msg = chat_pb2.ChatMessage(role="assistant", content=_value(text))
                if refusal:
                    msg.refusal = refusal
                out.append(msg)
            else:
                out.append(chat_pb2.ChatMessage(role=role, content=_chat_content(item["content"])))
        elif t == "function_call":
            fn = chat_pb2.FunctionCall(name=item["name"], arguments=item["arguments"])
            call = chat_pb2.ToolCall(id=item["call_id"], type="function", function=fn)
            if not (out and out[-1].role == "assistant" and (out[-1].tool_calls or _empty(out[-1]))):
                empty = struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
                out.append(chat_pb2.ChatMessage(role="assistant", content=empty))
            out[-1].tool_calls.append(call)
        elif t == "function_call_output":
            out.append(chat_pb2.ChatMessage(role="tool", tool_call_id=item["call_id"], content=_value(item["output"])))
    return out


def _empty(msg: chat_pb2.ChatMessage) -> bool:
    kind = msg.content.WhichOneof("kind")
    return kind in (None, "null_value") or (kind == "string_value" and not msg.content.string_value)


def _tool(t: responses_pb2.ResponseTool, i: int) -> chat_pb2.Tool:
    if t.type != "function":
        raise invalid(f"tools[{i}].type {t.type!r} is not supported: only function tools are", f"tools[{i}].type")
    if not TOOL_NAME.match(t.name):
        raise invalid(f"tools[{i}].name must match ^[a-zA-Z0-9_-]{{1,64}}$", f"tools[{i}].name")
    fn = chat_pb2.FunctionDefinition(name=t.name, parameters=t.parameters)
    if t.HasField("description"):
        fn.description = t.description
    if t.HasField("strict"):
        fn.strict = t.strict
    return chat_pb2.Tool(type="function", function=fn)


def _tool_choice(choice: struct_pb2.Value) -> struct_pb2.Value:
    """Responses' {"type": "function", "name": n} is chat's {"type": "function", "function": {"name": n}}."""
    if choice.WhichOneof("kind") != "struct_value":
        return choice
    fields = choice.struct_value.fields
    if fields["type"].string_value != "function" or "name" not in fields:
        raise invalid("'tool_choice' must be none, auto, required or {\"type\": \"function\", \"name\": ...}",
                      "tool_choice")  # fmt: skip
    return _value({"type": "function", "function": {"name": fields["name"].string_value}})


def _response_format(fmt: responses_pb2.ResponseTextFormat) -> chat_pb2.ResponseFormat:
    if fmt.type not in ("text", "json_object", "json_schema"):
        raise invalid("'text.format.type' must be text, json_object or json_schema", "text.format.type")
    out = chat_pb2.ResponseFormat(type=fmt.type)
    if fmt.type == "json_schema":
        if not fmt.HasField("name"):
            raise invalid("Missing required parameter: 'text.format.name'.", "text.format.name")
        schema: dict[str, Any] = {"name": fmt.name, "schema": json_format.MessageToDict(fmt.schema)}
        if fmt.HasField("description"):
            schema["description"] = fmt.description
        if fmt.HasField("strict"):
            schema["strict"] = fmt.strict
        out.json_schema.update(schema)
    return out


def chat_request(req: responses_pb2.CreateResponseRequest, conversation: list[JsonObject],
                 stream: bool) -> chat_pb2.ChatCompletionRequest:  # fmt: skip
    """The chat task a response is bridged to: the conversation (history and input, resolved) after
    the request's instructions, and the request's sampling, output cap, tools and text format."""
    if req.background:
        raise invalid("'background': true is not supported; run the request in the foreground", "background")
    messages = chat_messages(conversation, req.instructions or None)
    chat = chat_pb2.ChatCompletionRequest(model=req.model, messages=messages)
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "service_tier"):
        if req.HasField(name):
            setattr(chat, name, getattr(req, name))
    if req.HasField("max_output_tokens"):
        chat.max_completion_tokens = req.max_output_tokens
    if req.reasoning.HasField("effort"):
        chat.reasoning_effort = req.reasoning.effort
    chat.tools.extend(_tool(t, i) for i, t in enumerate(req.tools))
    if req.HasField("tool_choice"):
        chat.tool_choice.CopyFrom(_tool_choice(req.tool_choice))
    if req.text.HasField("format"):
        chat.response_format.CopyFrom(_response_format(req.text.format))
    if stream:
        chat.stream = True
        chat.stream_options.include_usage = True
    return chat
