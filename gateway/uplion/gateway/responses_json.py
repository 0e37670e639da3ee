"""The Responses API's JSON, from the contract's messages, with OpenAI's presence rules: every member
OpenAI always sends is sent (null when there is nothing to say), so the key sets equal the shapes
recorded in tests/fixtures/openai/ (tests/unit/test_responses_json.py). Streamed events are
server-sent events with an `event:` line naming their type and no `[DONE]` at the end."""

from __future__ import annotations

from google.protobuf import json_format

from uplion.v1 import responses_pb2

from .openai_json import JsonObject, _opt, json_bytes

R = responses_pb2


def content(c: R.ResponseContent) -> JsonObject:
    if c.type == "output_text":
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": c.text}
    if c.type == "refusal":
        return {"type": "refusal", "refusal": c.refusal}
    if c.type == "input_image":
        return {"type": "input_image", "detail": c.detail or "auto", "image_url": _opt(c, "image_url")}
    return {"type": c.type, "text": c.text}


def item(i: R.ResponseItem) -> JsonObject:
    if i.type == "message":
        return {"id": i.id, "type": "message", "status": _opt(i, "status", "completed"),
                "content": [content(c) for c in i.content], "role": i.role}  # fmt: skip
    if i.type == "function_call":
        return {"id": i.id, "type": "function_call", "status": _opt(i, "status", "completed"),
                "arguments": i.arguments, "call_id": i.call_id, "name": i.name}  # fmt: skip
    return {"id": i.id, "type": i.type, "status": _opt(i, "status", "completed"), "call_id": i.call_id,
            "output": i.output}  # fmt: skip


def item_from_json(obj: JsonObject) -> R.ResponseItem:
    """A stored input item as the contract's message (a passed-through item the contract cannot hold
    keeps its type and id)."""
    out = R.ResponseItem()
    try:
        json_format.ParseDict(obj, out, ignore_unknown_fields=True)
    except json_format.ParseError:
        out = R.ResponseItem(type=str(obj.get("type", "")), id=str(obj.get("id", "")))
    return out


def tool(t: R.ResponseTool) -> JsonObject:
    return {"type": t.type, "name": t.name, "description": _opt(t, "description"),
            "parameters": json_format.MessageToDict(t.parameters) if t.HasField("parameters") else None,
            "strict": _opt(t, "strict", True)}  # fmt: skip


def text_format(f: R.ResponseTextFormat) -> JsonObject:
    if f.type != "json_schema":
        return {"type": f.type or "text"}
    out: JsonObject = {"type": "json_schema", "name": f.name, "schema": json_format.MessageToDict(f.schema),
                       "strict": _opt(f, "strict", False)}  # fmt: skip
    if f.HasField("description"):
        out["description"] = f.description
    return out


def usage(u: R.ResponseUsage) -> JsonObject:
    return {"input_tokens": u.input_tokens,
            "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": u.cached_tokens},
            "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.total_tokens}  # fmt: skip


def response(r: R.Response) -> JsonObject:
    """An OpenAI `response` object."""
    return {
        "id": r.id, "object": "response", "created_at": r.created_at, "status": r.status, "background": False,
        "error": {"code": r.error.code, "message": r.error.message} if r.HasField("error") else None,
        "incomplete_details": {"reason": r.incomplete_details.reason} if r.HasField("incomplete_details") else None,
        "instructions": _opt(r, "instructions"), "max_output_tokens": _opt(r, "max_output_tokens"),
        "max_tool_calls": None, "model": r.model, "output": [item(i) for i in r.output],
        "parallel_tool_calls": r.parallel_tool_calls, "previous_response_id": _opt(r, "previous_response_id"),
        "prompt_cache_key": None,
        "reasoning": {"effort": _opt(r.reasoning, "effort"), "summary": _opt(r.reasoning, "summary")},
        "safety_identifier": None, "service_tier": _opt(r, "service_tier", "default"), "store": r.store,
        "temperature": _opt(r, "temperature", 1.0),
        "text": {"format": text_format(r.text.format), "verbosity": _opt(r.text, "verbosity", "medium")},
        "tool_choice": json_format.MessageToDict(r.tool_choice) if r.HasField("tool_choice") else "auto",
        "tools": [tool(t) for t in r.tools], "top_logprobs": 0, "top_p": _opt(r, "top_p", 1.0),
        "truncation": r.truncation or "disabled", "usage": usage(r.usage) if r.HasField("usage") else None,
        "user": _opt(r, "user"), "metadata": dict(r.metadata),
    }  # fmt: skip


def event(e: R.ResponseStreamEvent) -> JsonObject:
    """One streamed event, with the members its type has."""
    t = e.type
    out: JsonObject = {"type": t, "sequence_number": e.sequence_number}
    if t.startswith("response.output_item."):
        out.update(output_index=e.output_index, item=item(e.item))
    elif t.startswith("response.content_part."):
        out.update(item_id=e.item_id, output_index=e.output_index, content_index=e.content_index,
                   part=content(e.part))  # fmt: skip
    elif t == "response.output_text.delta":
        out.update(item_id=e.item_id, output_index=e.output_index, content_index=e.content_index, delta=e.delta,
                   logprobs=[])  # fmt: skip
    elif t == "response.output_text.done":
        out.update(item_id=e.item_id, output_index=e.output_index, content_index=e.content_index, text=e.text,
                   logprobs=[])  # fmt: skip
    elif t == "response.function_call_arguments.delta":
        out.update(item_id=e.item_id, output_index=e.output_index, delta=e.delta)
    elif t == "response.function_call_arguments.done":
        out.update(item_id=e.item_id, output_index=e.output_index, name=e.name, arguments=e.arguments)
    elif t == "error":
        out.update(code=_opt(e, "code"), message=e.message, param=_opt(e, "param"))
    else:  # response.created, .in_progress, .completed, .incomplete, .failed
        out["response"] = response(e.response)
    return out


def sse(e: R.ResponseStreamEvent) -> bytes:
    """One server-sent event: the upstream's own JSON when it was passed through."""
    data = e.upstream_json.encode() if e.upstream_json else json_bytes(event(e))
    return b"event: " + e.type.encode() + b"\ndata: " + data + b"\n\n"


def response_bytes(r: R.Response) -> bytes:
    """A response's JSON: the upstream's own when it was passed through."""
    return r.upstream_json.encode() if r.upstream_json else json_bytes(response(r))


def deleted(rid: str) -> JsonObject:
    return {"id": rid, "object": "response", "deleted": True}


def item_list(items: list[JsonObject], has_more: bool) -> JsonObject:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": has_more}  # fmt: skip
