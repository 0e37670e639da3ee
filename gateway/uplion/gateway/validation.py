"""Request validation: pure functions that raise ApiError(INVALID_ARGUMENT) naming the bad field."""

from __future__ import annotations

import re

import grpc
from google.protobuf import struct_pb2

from uplion.core.aimodels import ModelLimits
from uplion.core.content import value_text
from uplion.v1 import chat_pb2, completions_pb2, embeddings_pb2, responses_pb2

from .errors import ApiError, invalid

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
PART_TYPES = {"text", "image_url", "input_audio", "file", "refusal"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_N = 128
MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_DIMENSIONS = 16384


def _kind(v: struct_pb2.Value) -> str | None:
    return v.WhichOneof("kind")


def _range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise invalid(f"'{name}' must be between {low:g} and {high:g}, got {value:g}", name)


def _common_sampling(req: chat_pb2.ChatCompletionRequest | completions_pb2.CompletionRequest) -> None:
    if req.HasField("temperature"):
        _range("temperature", req.temperature, 0, 2)
    if req.HasField("top_p"):
        _range("top_p", req.top_p, 0, 1)
    if req.HasField("presence_penalty"):
        _range("presence_penalty", req.presence_penalty, -2, 2)
    if req.HasField("frequency_penalty"):
        _range("frequency_penalty", req.frequency_penalty, -2, 2)
    if req.HasField("n") and not 1 <= req.n <= MAX_N:
        raise invalid(f"'n' must be between 1 and {MAX_N}, got {req.n}", "n")
    if req.HasField("max_tokens") and req.max_tokens < 1:
        raise invalid("'max_tokens' must be at least 1", "max_tokens")
    _stop(req.stop)
    for token, bias in req.logit_bias.items():
        if not token.lstrip("-").isdigit():
            raise invalid(f"'logit_bias' keys must be token ids, got {token!r}", "logit_bias")
        _range("logit_bias", bias, -100, 100)


def _stop(stop: struct_pb2.Value) -> None:
    kind = _kind(stop)
    if kind in (None, "null_value", "string_value"):
        return
    if kind == "list_value":
        values = stop.list_value.values
        if len(values) > 4:
            raise invalid("'stop' may hold at most 4 sequences", "stop")
        if all(_kind(v) == "string_value" for v in values):
            return
    raise invalid("'stop' must be a string or an array of strings", "stop")


def _content(content: struct_pb2.Value, where: str, role: str) -> None:
    kind = _kind(content)
    if kind == "string_value":
        return
    if kind in (None, "null_value"):
        if role == "assistant":  # content may be null when the message carries tool_calls
            return
        raise invalid(f"{where}.content is required for role '{role}'", f"{where}.content")
    if kind == "list_value":
        for j, part in enumerate(content.list_value.values):
            pwhere = f"{where}.content[{j}]"
            if _kind(part) != "struct_value":
                raise invalid(f"{pwhere} must be an object", pwhere)
            fields = part.struct_value.fields
            ptype = fields["type"].string_value if "type" in fields else ""
            if ptype not in PART_TYPES:
                raise invalid(f"{pwhere}.type must be one of {', '.join(sorted(PART_TYPES))}", f"{pwhere}.type")
            if ptype == "text" and ("text" not in fields or _kind(fields["text"]) != "string_value"):
                raise invalid(f"{pwhere}.text must be a string", f"{pwhere}.text")
        return
    raise invalid(f"{where}.content must be a string or an array of content parts", f"{where}.content")


def validate_chat(req: chat_pb2.ChatCompletionRequest) -> None:
    if not req.model:
        raise invalid("you must provide a model parameter", "model")
    if not req.messages:
        raise invalid("'messages' must contain at least one message", "messages")
    for i, m in enumerate(req.messages):
        where = f"messages[{i}]"
        if m.role not in ROLES:
            raise invalid(f"{where}.role must be one of {', '.join(sorted(ROLES))}, got {m.role!r}", f"{where}.role")
        _content(m.content, where, m.role)
        if m.role == "tool" and not m.HasField("tool_call_id"):
            raise invalid(f"{where}.tool_call_id is required for tool messages", f"{where}.tool_call_id")
    _common_sampling(req)
    if req.HasField("max_completion_tokens") and req.max_completion_tokens < 1:
        raise invalid("'max_completion_tokens' must be at least 1", "max_completion_tokens")
    if req.HasField("top_logprobs"):
        _range("top_logprobs", req.top_logprobs, 0, 20)
        if not req.logprobs:
            raise invalid("'top_logprobs' requires 'logprobs' to be true", "top_logprobs")
    for i, tool in enumerate(req.tools):
        if tool.type != "function":
            raise invalid(f"tools[{i}].type must be 'function'", f"tools[{i}].type")
        if not TOOL_NAME.match(tool.function.name):
            raise invalid(f"tools[{i}].function.name must match ^[a-zA-Z0-9_-]{{1,64}}$", f"tools[{i}].function.name")
    _tool_choice(req)
    if req.HasField("response_format") and req.response_format.type not in ("text", "json_object", "json_schema"):
        raise invalid("'response_format.type' must be text, json_object or json_schema", "response_format.type")


def _tool_choice(req: chat_pb2.ChatCompletionRequest) -> None:
    choice = req.tool_choice
    kind = _kind(choice)
    if kind in (None, "null_value"):
        return
    if kind == "string_value":
        if choice.string_value not in ("none", "auto", "required"):
            raise invalid("'tool_choice' must be none, auto, required or a function", "tool_choice")
        if choice.string_value == "required" and not req.tools:
            raise invalid("'tool_choice' is 'required' but no tools were given", "tool_choice")
        return
    if kind == "struct_value":
        fn = choice.struct_value.fields.get("function")
        name = fn.struct_value.fields["name"].string_value if fn and "name" in fn.struct_value.fields else ""
        if name not in {t.function.name for t in req.tools}:
            raise invalid(f"'tool_choice' names function {name!r}, which is not in 'tools'", "tool_choice")
        return
    raise invalid("'tool_choice' must be a string or an object", "tool_choice")


def _token_array(v: struct_pb2.Value) -> bool:
    return _kind(v) == "list_value" and all(
        _kind(x) == "number_value" and x.number_value >= 0 and x.number_value == int(x.number_value)
        for x in v.list_value.values
    )


def _texts_or_tokens(value: struct_pb2.Value, name: str, limit: int) -> None:
    kind = _kind(value)
    if kind == "string_value":
        if not value.string_value:
            raise invalid(f"'{name}' must not be empty", name)
        return
    if kind == "list_value":
        items = value.list_value.values
        if not items:
            raise invalid(f"'{name}' must not be empty", name)
        if len(items) > limit:
            raise invalid(f"'{name}' may hold at most {limit} items", name)
        if _token_array(value):
            return
        for i, item in enumerate(items):
            if _kind(item) == "string_value":
                if not item.string_value:
                    raise invalid(f"'{name}[{i}]' must not be empty", name)
            elif not (_token_array(item) and item.list_value.values):
                raise invalid(f"'{name}[{i}]' must be a string or an array of token ids", name)
        return
    raise invalid(f"'{name}' must be a string, an array of strings or an array of token ids", name)


def validate_completion(req: completions_pb2.CompletionRequest) -> None:
    if not req.model:
        raise invalid("you must provide a model parameter", "model")
    _texts_or_tokens(req.prompt, "prompt", MAX_EMBEDDING_INPUTS)
    _common_sampling(req)
    if req.HasField("best_of") and req.best_of < (req.n if req.HasField("n") else 1):
        raise invalid("'best_of' must be greater than or equal to 'n'", "best_of")
    if req.HasField("logprobs"):
        _range("logprobs", req.logprobs, 0, 5)


def validate_embedding(req: embeddings_pb2.EmbeddingRequest) -> None:
    if not req.model:
        raise invalid("you must provide a model parameter", "model")
    _texts_or_tokens(req.input, "input", MAX_EMBEDDING_INPUTS)
    if req.HasField("encoding_format") and req.encoding_format not in ("float", "base64"):
        raise invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    if req.HasField("dimensions") and not 1 <= req.dimensions <= MAX_EMBEDDING_DIMENSIONS:
        raise invalid(f"'dimensions' must be between 1 and {MAX_EMBEDDING_DIMENSIONS}", "dimensions")


__all__ = ["ApiError", "validate_chat", "validate_completion", "validate_embedding"]


def bound_output(
    req: chat_pb2.ChatCompletionRequest | completions_pb2.CompletionRequest | responses_pb2.CreateResponseRequest,
    limits: ModelLimits,
) -> None:
    """A request may not ask for more output than its model allows, nor for a prompt and output that
    do not fit its context window: a 400 naming the field."""
    asked: list[tuple[str, int]] = []
    if isinstance(req, responses_pb2.CreateResponseRequest):
        if req.HasField("max_output_tokens"):
            asked.append(("max_output_tokens", req.max_output_tokens))
    elif isinstance(req, chat_pb2.ChatCompletionRequest) and req.HasField("max_completion_tokens"):
        asked.append(("max_completion_tokens", req.max_completion_tokens))
    if not isinstance(req, responses_pb2.CreateResponseRequest) and req.HasField("max_tokens"):
        asked.append(("max_tokens", req.max_tokens))
    for name, n in asked:
        if n > limits.max_output_tokens:
            raise invalid(f"'{name}' is {n}, more than model '{req.model}' allows ({limits.max_output_tokens})", name)
        if n > limits.max_context_tokens:
            raise invalid(
                f"'{name}' is {n}, more than the context window of model '{req.model}' ({limits.max_context_tokens})",
                name,
            )
    if isinstance(req, responses_pb2.CreateResponseRequest):
        return  # bridged: checked as the chat request it becomes; passed through: the upstream's own check
    prompt = prompt_tokens_estimate(req)
    output = max((n for _, n in asked), default=0)
    if prompt + output > limits.max_context_tokens:
        param = "messages" if isinstance(req, chat_pb2.ChatCompletionRequest) else "prompt"
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"This model's maximum context length is {limits.max_context_tokens} tokens. However, your {param}"
            f" resulted in about {prompt} tokens"
            + (f" (and {output} in the completion)" if output else "")
            + f". Please reduce the length of the {param}.",
            "invalid_request_error",
            param,
            "context_length_exceeded",
        )


def _prompt_bytes(v: struct_pb2.Value) -> int:
    """A completion prompt's size: UTF-8 bytes of its strings, 4 for each token id (one token)."""
    if _token_array(v):
        return 4 * len(v.list_value.values)
    if _kind(v) == "list_value":
        return sum(_prompt_bytes(item) for item in v.list_value.values)
    return len(v.string_value.encode()) if _kind(v) == "string_value" else 0


def prompt_tokens_estimate(req: chat_pb2.ChatCompletionRequest | completions_pb2.CompletionRequest) -> int:
    """A low estimate of the prompt's tokens: its text's UTF-8 bytes / 4 (about a token per 4 bytes
    of English, fewer tokens than real for most other scripts; a token id counts one). Images,
    audio and files are not counted: an estimate must never refuse a prompt the model would take."""
    if isinstance(req, chat_pb2.ChatCompletionRequest):
        return sum(len(value_text(m.content).encode()) for m in req.messages) // 4
    return _prompt_bytes(req.prompt) // 4
