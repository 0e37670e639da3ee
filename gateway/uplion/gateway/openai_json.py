"""OpenAI's JSON, both ways, as pure functions: request bodies into the contract's messages, answers
out of them with OpenAI's presence rules.

Requests: the body of an HTTP inference call arrives as raw bytes (a `google.api.HttpBody`). A field
the contract does not name is never dropped: for a model whose backend forwards such fields (type
`remote`) it travels in the request's `extra_json` (`split_unknown`: the members at their paths) and
reaches the upstream unchanged; for any other model it is refused with a 400 whose `param` is its
path (`messages[0].audio`); a null counts as absent there, as OpenAI treats it. Both the proto names
and the JSON (lowerCamel) names of the contract's fields are accepted, as the transcoder accepted them.

Answers: OpenAI's presence rules, not protobuf's. A field OpenAI always sends is sent, as null when
there is nothing to say (`finish_reason`, `logprobs`, `content`, `refusal`); a field OpenAI sends
only when it has something is omitted otherwise (`tool_calls`, `system_fingerprint`, a delta's
`role`/`content`); `usage` on streamed chunks is present (null until the last chunk) exactly when
the request asked for `stream_options.include_usage`. tests/fixtures/openai/ holds the shapes
recorded from OpenAI's API reference these functions are checked against (tests/unit/test_openai_json.py).
A remote model's answer also carries the upstream's members the contract lacks (`extra_json`:
`logprobs`, `usage.prompt_tokens_details`, `service_tier`, ...); `overlay` lays them over the object
written here at the same paths, the typed fields winning (a null or empty placeholder is not a value).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.protobuf import json_format, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from uplion.core.errors import ApiError
from uplion.core.json_members import loads, overlay
from uplion.v1 import chat_pb2, common_pb2, completions_pb2, embeddings_pb2

from .errors import invalid

M = TypeVar("M", bound=Message)
JsonObject = dict[str, Any]

# messages whose JSON is free-form: anything inside them is the client's, kept as it is
_FREE_FORM = {"google.protobuf.Value", "google.protobuf.Struct", "google.protobuf.ListValue"}
DONE = b"data: [DONE]\n\n"
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"


# ---- requests ---------------------------------------------------------------------------------


def load_object(data: bytes) -> JsonObject:
    """The request body as a JSON object (an empty body is an empty object: the checks that follow
    name the first missing field)."""
    if not data.strip():
        return {}
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise invalid(
            "We could not parse the JSON body of your request. The API expects a JSON payload, but what "
            "was sent was not valid JSON."
        ) from None
    if not isinstance(obj, dict):
        raise invalid("The request body must be a JSON object.")
    return obj


EXTRA = "extra_json"  # the contract's field for members it does not name: never a member of the JSON itself


def _field(descriptor: Any, key: str) -> FieldDescriptor | None:
    found: FieldDescriptor | None = descriptor.fields_by_name.get(key)
    if found is None:
        found = next((f for f in descriptor.fields if f.json_name == key), None)
    return None if found is not None and found.name == EXTRA else found


def unknown_field(obj: Mapping[str, Any], descriptor: Any, where: str = "") -> str | None:
    """The path of the first non-null member of `obj` (recursively, through the contract's nested
    messages, lists and maps) that `descriptor` does not name, or None. Values of the wrong type are
    left to the parser, which refuses them."""
    for key, value in obj.items():
        path = f"{where}.{key}" if where else key
        field = _field(descriptor, key)
        if field is None:
            if value is None:
                continue
            return path
        nested = field.message_type
        if nested is None or nested.full_name in _FREE_FORM:
            continue
        if nested.GetOptions().map_entry:
            target = nested.fields_by_name["value"].message_type
            if target is not None and target.full_name not in _FREE_FORM and isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(v, dict) and (found := unknown_field(v, target, f"{path}.{k}")):
                        return found
            continue
        items = value if field.is_repeated and isinstance(value, list) else None
        if items is not None:
            for i, item in enumerate(items):
                if isinstance(item, dict) and (found := unknown_field(item, nested, f"{path}[{i}]")):
                    return found
        elif isinstance(value, dict) and (found := unknown_field(value, nested, path)):
            return found
    return None


def split_unknown(obj: Mapping[str, Any], descriptor: Any) -> tuple[JsonObject, JsonObject]:
    """`obj` as (the members `descriptor` names, the members it does not). The second is laid out as
    the request is: an unknown member of a known nested object sits under that object's (proto) name,
    one of a list element in a list of the same length (`{}` for elements without any), so that
    `overlay` puts every member back where the client sent it. Unknown members are kept as sent,
    nulls included."""
    known: JsonObject = {}
    extra: JsonObject = {}
    for key, value in obj.items():
        field = _field(descriptor, key)
        if field is None:
            extra[key] = value
            continue
        known[key] = value
        nested = field.message_type
        if nested is None or nested.full_name in _FREE_FORM:
            continue
        if nested.GetOptions().map_entry:
            target = nested.fields_by_name["value"].message_type
            if target is not None and target.full_name not in _FREE_FORM and isinstance(value, dict):
                parts = {k: split_unknown(v, target) if isinstance(v, dict) else (v, {}) for k, v in value.items()}
                known[key] = {k: kept for k, (kept, _) in parts.items()}
                if inner := {k: more for k, (_, more) in parts.items() if more}:
                    extra[field.name] = inner
        elif field.is_repeated and isinstance(value, list):
            items = [split_unknown(v, nested) if isinstance(v, dict) else (v, {}) for v in value]
            known[key] = [kept for kept, _ in items]
            if any(more for _, more in items):
                extra[field.name] = [more for _, more in items]
        elif isinstance(value, dict):
            known[key], more = split_unknown(value, nested)
            if more:
                extra[field.name] = more
    return known, extra


def with_extra(out: JsonObject, extra_json: str) -> JsonObject:
    """`out` with an answer's `extra_json` laid over it; nothing to do (no parsing) when it is empty."""
    return overlay(out, loads(extra_json)) if extra_json else out


def unrecognized(path: str) -> ApiError:
    """OpenAI's answer to a request argument it does not know, naming it in `param`."""
    return invalid(
        f"Unrecognized request argument supplied: {path}. This model's backend cannot pass it on (only remote "
        "models take request fields uplion does not name); send the request without it.",
        path,
    )


def parse_request(data: bytes, cls: type[M], forwards: Callable[[str], bool] = lambda model: False) -> M:
    """The request body as the contract's message, or an ApiError (400) saying what is wrong. Members
    the contract does not name go into `extra_json` when `forwards(model)` says the body's model
    takes them, and are refused otherwise."""
    obj = load_object(data)
    extra: JsonObject = {}
    path = unknown_field(obj, cls.DESCRIPTOR)
    if path is not None:
        model = obj.get("model")
        if not (isinstance(model, str) and forwards(model)):
            raise unrecognized(path)
        obj, extra = split_unknown(obj, cls.DESCRIPTOR)
    message = cls()
    try:
        json_format.ParseDict(obj, message, ignore_unknown_fields=True)  # only nulls are left unknown
    except json_format.ParseError as e:
        raise invalid(f"Invalid request body: {e}") from None
    if extra:
        setattr(message, EXTRA, json_bytes(extra).decode())
    return message


def extra_members(extra_json: str) -> list[str] | None:
    """The member names of a request's `extra_json` (a typed gRPC client may set it, too), or None
    when it is not a JSON object."""
    try:
        extra = json.loads(extra_json)
    except ValueError:
        return None
    return list(extra) if isinstance(extra, dict) else None


def model_of(data: bytes) -> str:
    """The `model` a body names, if it names one (for refusing a body that does not parse)."""
    try:
        obj = json.loads(data) if data.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return ""
    model = obj.get("model") if isinstance(obj, dict) else None
    return model if isinstance(model, str) else ""


# ---- answers ----------------------------------------------------------------------------------


def _opt(msg: Message, name: str, default: Any = None) -> Any:
    """An optional scalar's value, or `default` (JSON null) when unset."""
    return getattr(msg, name) if msg.HasField(name) else default


def usage(u: common_pb2.Usage) -> JsonObject:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def error(e: ApiError) -> JsonObject:
    """OpenAI's error envelope; every member present, null when there is nothing to say."""
    return {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}}


def _tool_call(c: chat_pb2.ToolCall) -> JsonObject:
    return {"id": c.id, "type": c.type or "function",
            "function": {"name": c.function.name, "arguments": c.function.arguments}}  # fmt: skip


def _head(msg: chat_pb2.ChatCompletion | chat_pb2.ChatCompletionChunk | completions_pb2.Completion,
          obj: str) -> JsonObject:  # fmt: skip
    return {"id": msg.id, "object": obj, "created": msg.created, "model": msg.model}


def _tail(out: JsonObject, msg: Message) -> JsonObject:
    if msg.HasField("system_fingerprint"):
        out["system_fingerprint"] = msg.system_fingerprint  # type: ignore[attr-defined]
    return out


def chat_completion(c: chat_pb2.ChatCompletion) -> JsonObject:
    """A `chat.completion` object."""
    choices = []
    for choice in c.choices:
        m = choice.message
        message: JsonObject = {"role": m.role or "assistant", "content": _opt(m, "content"),
                               "refusal": _opt(m, "refusal"), "annotations": []}  # fmt: skip
        if m.tool_calls:
            message["tool_calls"] = [_tool_call(t) for t in m.tool_calls]
        choices.append({"index": choice.index, "message": message, "logprobs": None,
                        "finish_reason": choice.finish_reason or None})  # fmt: skip
    out = {**_head(c, "chat.completion"), "choices": choices}
    if c.HasField("usage"):
        out["usage"] = usage(c.usage)
    return with_extra(_tail(out, c), c.extra_json)


def _tool_call_delta(t: chat_pb2.ToolCallDelta) -> JsonObject:
    out: JsonObject = {"index": t.index}
    for name in ("id", "type"):
        if t.HasField(name):
            out[name] = getattr(t, name)
    if t.HasField("function"):
        out["function"] = {n: getattr(t.function, n) for n in ("name", "arguments") if t.function.HasField(n)}
    return out


def _delta(d: chat_pb2.ChatCompletionDelta) -> JsonObject:
    out: JsonObject = {n: getattr(d, n) for n in ("role", "content", "refusal") if d.HasField(n)}
    if d.tool_calls:
        out["tool_calls"] = [_tool_call_delta(t) for t in d.tool_calls]
    return out


def _stream_usage(out: JsonObject, msg: chat_pb2.ChatCompletionChunk | completions_pb2.Completion,
                  include_usage: bool) -> None:  # fmt: skip
    """With include_usage every chunk carries `usage`, null but on the last; without it, none does."""
    if msg.HasField("usage"):
        out["usage"] = usage(msg.usage)
    elif include_usage:
        out["usage"] = None


def chat_chunk(c: chat_pb2.ChatCompletionChunk, include_usage: bool) -> JsonObject:
    """A `chat.completion.chunk` object."""
    choices = [{"index": ch.index, "delta": _delta(ch.delta), "logprobs": None,
                "finish_reason": _opt(ch, "finish_reason")} for ch in c.choices]  # fmt: skip
    out = {**_head(c, "chat.completion.chunk"), "choices": choices}
    _stream_usage(out, c, include_usage)
    return with_extra(_tail(out, c), c.extra_json)


def completion(c: completions_pb2.Completion, *, chunk: bool = False, include_usage: bool = False) -> JsonObject:
    """A `text_completion` object: a whole answer, or (`chunk`) one streamed piece of one."""
    choices = [{"text": ch.text, "index": ch.index, "logprobs": None,
                "finish_reason": _opt(ch, "finish_reason")} for ch in c.choices]  # fmt: skip
    out = {**_head(c, "text_completion"), "choices": choices}
    if chunk:
        _stream_usage(out, c, include_usage)
    elif c.HasField("usage"):
        out["usage"] = usage(c.usage)
    return with_extra(_tail(out, c), c.extra_json)


def _embedding_value(v: struct_pb2.Value) -> Any:
    if v.WhichOneof("kind") == "list_value":
        return [x.number_value for x in v.list_value.values]
    return json_format.MessageToDict(v)


def embedding_list(r: embeddings_pb2.EmbeddingResponse) -> JsonObject:
    """A `list` of `embedding` objects."""
    data = [{"object": "embedding", "index": e.index, "embedding": _embedding_value(e.embedding)} for e in r.data]
    out = {"object": "list", "data": data, "model": r.model,
           "usage": {"prompt_tokens": r.usage.prompt_tokens, "total_tokens": r.usage.total_tokens}}  # fmt: skip
    return with_extra(out, r.extra_json)


# ---- bytes ------------------------------------------------------------------------------------


def json_bytes(obj: JsonObject) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def sse_event(obj: JsonObject) -> bytes:
    """One server-sent event; JSON has no raw newlines, so one `data:` line always suffices."""
    return b"data: " + json_bytes(obj) + b"\n\n"
