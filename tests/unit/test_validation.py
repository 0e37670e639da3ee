"""Request validation names the offending field, like OpenAI does."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from uplion.core.aimodels import ModelLimits
from uplion.gateway.errors import ApiError
from uplion.gateway.validation import (
    bound_output,
    prompt_tokens_estimate,
    validate_chat,
    validate_completion,
    validate_embedding,
)
from uplion.v1 import chat_pb2, completions_pb2, embeddings_pb2

OK_MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**body: object) -> chat_pb2.ChatCompletionRequest:
    return json_format.ParseDict({"model": "m", "messages": OK_MESSAGES, **body}, chat_pb2.ChatCompletionRequest())


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "pdf"}]}]}, "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": 3}, "stop"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ],
)
def test_bad_chat_requests_name_the_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(ApiError) as err:
        validate_chat(chat(**body))
    assert err.value.param == param


def test_good_chat_requests_pass() -> None:
    validate_chat(chat(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]))
    validate_chat(chat(messages=[{"role": "assistant", "content": None, "tool_calls": []}, *OK_MESSAGES]))
    validate_chat(
        chat(tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
             tool_choice={"type": "function", "function": {"name": "get_weather"}}, stop=["x"], n=2, seed=7)
    )  # fmt: skip


def test_completion_and_embedding_inputs() -> None:
    validate_completion(json_format.ParseDict({"model": "m", "prompt": [1, 2, 3]}, completions_pb2.CompletionRequest()))
    with pytest.raises(ApiError):
        validate_completion(json_format.ParseDict({"model": "m", "prompt": ""}, completions_pb2.CompletionRequest()))
    validate_embedding(json_format.ParseDict({"model": "m", "input": ["a", "b"]}, embeddings_pb2.EmbeddingRequest()))
    bads: list[dict[str, Any]] = [
        {"input": []},
        {"input": [""]},
        {"input": "x", "encoding_format": "hex"},
        {"input": "x", "dimensions": 278606156},
        {"input": [[1], "a", {}]},
    ]
    for bad in bads:
        with pytest.raises(ApiError):
            validate_embedding(json_format.ParseDict({"model": "m", **bad}, embeddings_pb2.EmbeddingRequest()))


def test_request_metadata_is_read_in_one_pass() -> None:
    from uplion.gateway.metadata import RequestMeta

    meta = RequestMeta.parse(
        [("x-uplion-user-id", "u"), ("x-uplion-allowed-models", "a, b"), ("x-request-id", "r1"),
         ("x-stainless-timeout", "30"), ("x-uplion-timeout", "bad"), ("x-uplion-tier", "gold")],
        time_remaining=12.0,
    )  # fmt: skip
    assert (meta.caller.user_id, meta.caller.tier, meta.edge_request_id, meta.timeout_s) == ("u", "gold", "r1", 12.0)
    assert meta.allows("b")
    assert not meta.allows("c")
    assert RequestMeta.parse([("x-uplion-allowed-models", "*")], None).allows("c")
    assert RequestMeta.parse([], None).timeout_s is None


def _chat(body: dict[str, Any]) -> chat_pb2.ChatCompletionRequest:
    return json_format.ParseDict({"model": "m", **body}, chat_pb2.ChatCompletionRequest())


def test_the_prompt_estimate_counts_text_only_low() -> None:
    parts = [{"type": "text", "text": "abcd" * 10}, {"type": "image_url", "image_url": {"url": "data:" + "A" * 9999}}]
    req = _chat({"messages": [{"role": "system", "content": "ab" * 4}, {"role": "user", "content": parts}]})
    assert prompt_tokens_estimate(req) == (8 + 40) // 4  # the image is not counted
    assert prompt_tokens_estimate(_chat({"messages": [{"role": "user", "content": "é" * 8}]})) == 4  # 16 bytes
    prompt = json_format.ParseDict({"model": "m", "prompt": [1, 2, 3]}, completions_pb2.CompletionRequest())
    assert prompt_tokens_estimate(prompt) == 3  # token ids count one each


def test_output_and_context_bounds_name_the_field() -> None:
    limits = ModelLimits(max_output_tokens=100, max_context_tokens=120)
    fits = _chat({"messages": [{"role": "user", "content": "x" * 80}], "max_tokens": 100})  # 20 + 100
    bound_output(fits, limits)
    with pytest.raises(ApiError) as e:
        bound_output(_chat({"messages": [{"role": "user", "content": "x" * 84}], "max_tokens": 100}), limits)
    assert (e.value.code, e.value.param) == ("context_length_exceeded", "messages")
    with pytest.raises(ApiError) as e:
        bound_output(_chat({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 101}), limits)
    assert e.value.param == "max_completion_tokens"
    narrow = ModelLimits(max_output_tokens=100, max_context_tokens=50)  # a static configuration's odd pair
    with pytest.raises(ApiError) as e:
        bound_output(_chat({"messages": [{"role": "user", "content": "x"}], "max_tokens": 60}), narrow)
    assert e.value.param == "max_tokens"
    assert "context window" in e.value.message
    prompt = json_format.ParseDict({"model": "m", "prompt": "y" * 600}, completions_pb2.CompletionRequest())
    with pytest.raises(ApiError) as e:
        bound_output(prompt, limits)  # 150 tokens of prompt alone
    assert e.value.param == "prompt"
