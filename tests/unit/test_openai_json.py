"""The gateway's OpenAI JSON codec: request bodies in (unknown members refused by path), answers out
with OpenAI's presence rules, compared by key sets with the shapes recorded from OpenAI's reference."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from openai.types import Completion, CompletionUsage, CreateEmbeddingResponse, Embedding, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.completion_choice import CompletionChoice
from pydantic import BaseModel

from tests.fixtures.openai.shapes import assert_chunk_shape, assert_same_shape, differences, key_paths, load
from uplion.core.errors import ApiError
from uplion.gateway import openai_json as oj
from uplion.v1 import chat_pb2, common_pb2, completions_pb2, embeddings_pb2

HEAD: dict[str, Any] = {"id": "chatcmpl-t1", "object": "ignored", "created": 1700000000, "model": "echo"}
USAGE = common_pb2.Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5)


def _members(obj: dict[str, Any], model: type[BaseModel]) -> set[str]:
    return set(obj) - set(model.model_fields)


def test_recorded_shapes_use_only_members_the_official_sdk_types_know() -> None:
    # the fixtures are OpenAI's reference examples; the SDK's types are generated from its OpenAPI spec
    chat = load("chat_completion_tool_calls")
    assert not _members(chat, ChatCompletion)
    assert not _members(chat["choices"][0], Choice)
    assert not _members(chat["choices"][0]["message"], ChatCompletionMessage)
    assert not _members(chat["usage"], CompletionUsage)
    for chunk in [*load("chat_completion_chunks_with_usage"), load("chat_completion_chunk_tool_call")]:
        assert not _members(chunk, ChatCompletionChunk)
        for choice in chunk["choices"]:
            assert not _members(choice, ChunkChoice)
            assert not _members(choice["delta"], ChoiceDelta)
    for name in ("completion", "completion_chunk"):
        c = load(name)
        assert not _members(c, Completion)
        assert not _members(c["choices"][0], CompletionChoice)
    embeddings = load("embedding_list")
    assert not _members(embeddings, CreateEmbeddingResponse)
    assert not _members(embeddings["data"][0], Embedding)
    assert not _members(load("model"), Model)


def test_key_paths_merge_list_items_and_differences_allow_only_what_is_not_carried() -> None:
    assert key_paths({"a": [{"b": 1}, {"c": None}], "d": {}}) == {"a", "a[].b", "a[].c", "d"}
    extra, missing = differences({"x": 1, "usage": {"t": 1}}, {"usage": {"t": 1, "prompt_tokens_details": {}}})
    assert (extra, missing) == ({"x"}, set())  # token details are not carried yet; `x` is invented


def test_chat_completion_text_answer_has_openai_shape_without_empty_tool_calls() -> None:
    answer = chat_pb2.ChatCompletion(
        **HEAD, usage=USAGE,
        choices=[chat_pb2.ChatCompletionChoice(index=0, finish_reason="stop",
                                               message=chat_pb2.ChatCompletionMessage(role="assistant", content="hi"))],
    )  # fmt: skip
    out = oj.chat_completion(answer)
    assert_same_shape(out, load("chat_completion"))
    assert out["object"] == "chat.completion"
    message = out["choices"][0]["message"]
    assert "tool_calls" not in message
    assert (message["content"], message["refusal"], out["choices"][0]["logprobs"]) == ("hi", None, None)
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_chat_completion_tool_calls_answer() -> None:
    call = chat_pb2.ToolCall(id="call_1", type="function", function=chat_pb2.FunctionCall(name="f", arguments="{}"))
    answer = chat_pb2.ChatCompletion(
        **HEAD, usage=USAGE,
        choices=[chat_pb2.ChatCompletionChoice(index=0, finish_reason="tool_calls",
                                               message=chat_pb2.ChatCompletionMessage(role="assistant",
                                                                                      tool_calls=[call]))],
    )  # fmt: skip
    out = oj.chat_completion(answer)
    assert_same_shape(out, load("chat_completion_tool_calls"))
    assert out["choices"][0]["message"]["content"] is None
    assert out["choices"][0]["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]


def _chunk(**choice: Any) -> chat_pb2.ChatCompletionChunk:
    return chat_pb2.ChatCompletionChunk(**HEAD, choices=[chat_pb2.ChatCompletionChunkChoice(index=0, **choice)])


STREAM = [
    _chunk(delta=chat_pb2.ChatCompletionDelta(role="assistant", content="")),
    _chunk(delta=chat_pb2.ChatCompletionDelta(content="Hello")),
    _chunk(delta=chat_pb2.ChatCompletionDelta(), finish_reason="stop"),
]


def test_chat_chunks_without_include_usage_carry_no_usage_member() -> None:
    out = [oj.chat_chunk(c, include_usage=False) for c in STREAM]
    for chunk in out:
        assert_chunk_shape(chunk, load("chat_completion_chunks"))
        assert "usage" not in chunk
    assert [c["choices"][0]["delta"] for c in out] == [{"role": "assistant", "content": ""}, {"content": "Hello"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in out] == [None, None, "stop"]
    assert out[0]["object"] == "chat.completion.chunk"


def test_chat_chunks_with_include_usage_carry_null_usage_until_the_last() -> None:
    last = chat_pb2.ChatCompletionChunk(**HEAD, usage=USAGE)
    out = [oj.chat_chunk(c, include_usage=True) for c in [*STREAM, last]]
    for chunk in out:
        assert_chunk_shape(chunk, load("chat_completion_chunks_with_usage"))
    assert [c["usage"] for c in out[:-1]] == [None, None, None]
    assert out[-1]["choices"] == []
    assert out[-1]["usage"]["total_tokens"] == 5
    with pytest.raises(AssertionError):  # the comparison bites: a usage member where none was asked for
        assert_chunk_shape(out[0], load("chat_completion_chunks"))


def test_tool_call_deltas_carry_only_what_they_have() -> None:
    first = chat_pb2.ToolCallDelta(index=0, id="call_1", type="function",
                                   function=chat_pb2.FunctionCallDelta(name="f", arguments=""))  # fmt: skip
    later = chat_pb2.ToolCallDelta(index=0, function=chat_pb2.FunctionCallDelta(arguments='{"x'))
    out = [oj.chat_chunk(_chunk(delta=chat_pb2.ChatCompletionDelta(tool_calls=[t])), False) for t in (first, later)]
    for chunk in out:
        assert_chunk_shape(chunk, load("chat_completion_chunks"))
    assert_same_shape(out[0], load("chat_completion_chunk_tool_call"))
    assert out[1]["choices"][0]["delta"] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"x'}}]}


def test_completion_answer_and_chunk() -> None:
    choice = completions_pb2.CompletionChoice(text="abc", index=0, finish_reason="length")
    answer = completions_pb2.Completion(**{**HEAD, "id": "cmpl-1"}, choices=[choice], usage=USAGE,
                                        system_fingerprint="fp_1")  # fmt: skip
    out = oj.completion(answer)
    assert_same_shape(out, load("completion"))
    assert out["system_fingerprint"] == "fp_1"  # carried when the model reports one
    piece = completions_pb2.Completion(**HEAD, choices=[completions_pb2.CompletionChoice(text="ab", index=0)])
    chunk = oj.completion(piece, chunk=True)
    assert_same_shape(chunk, load("completion_chunk"))
    assert chunk["choices"][0]["finish_reason"] is None
    assert oj.completion(piece, chunk=True, include_usage=True)["usage"] is None


def test_embedding_list_floats_and_base64() -> None:
    floats = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value(number_value=0.5)]))
    b64 = struct_pb2.Value(string_value="AAAAPw==")
    response = embeddings_pb2.EmbeddingResponse(
        object="list", model="e",
        data=[embeddings_pb2.Embedding(object="embedding", index=i, embedding=v) for i, v in enumerate([floats, b64])],
        usage=embeddings_pb2.EmbeddingUsage(prompt_tokens=3, total_tokens=3),
    )  # fmt: skip
    out = oj.embedding_list(response)
    assert_same_shape(out, load("embedding_list"))
    assert [d["embedding"] for d in out["data"]] == [[0.5], "AAAAPw=="]


def test_error_envelope() -> None:
    e = ApiError(grpc.StatusCode.NOT_FOUND, "no such model", "invalid_request_error", "model", "model_not_found")
    assert_same_shape(oj.error(e), load("error"))
    assert oj.error(ApiError(grpc.StatusCode.INTERNAL, "x", "api_error"))["error"]["param"] is None


def _refusal(body: Any) -> ApiError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ApiError) as err:
        oj.parse_request(raw, chat_pb2.ChatCompletionRequest)
    assert err.value.status == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.type == "invalid_request_error"
    return err.value


MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": MESSAGES, "prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"model": "m", "messages": MESSAGES, "verbosity": "low"}, "verbosity"),
        ({"model": "m", "messages": MESSAGES, "functions": [{"name": "f"}]}, "functions"),
        ({"model": "m", "messages": [*MESSAGES, {"role": "assistant", "content": "x", "audio": {"id": "a"}}]},
         "messages[1].audio"),
        ({"model": "m", "messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}, "x": 1}]},
         "tools[0].x"),
        ({"model": "m", "messages": MESSAGES, "stream_options": {"include_obfuscation": False}},
         "stream_options.include_obfuscation"),
    ],
)  # fmt: skip
def test_members_the_contract_does_not_name_are_refused_by_path(body: dict[str, Any], param: str) -> None:
    e = _refusal(body)
    assert e.param == param
    assert param in e.message


def test_known_members_free_form_values_camel_case_and_nulls_pass() -> None:
    body = {
        "model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "anything": 1}]}],
        "maxTokens": 5, "metadata": {"k": "v"}, "reasoning_effort": "low", "store": False, "service_tier": "auto",
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}],
        "logit_bias": {"42": 1}, "seed": 7, "stream_options": {"include_usage": True},
        "web_search_options": None,  # null: as good as absent, as OpenAI reads it
    }  # fmt: skip
    req = oj.parse_request(json.dumps(body).encode(), chat_pb2.ChatCompletionRequest)
    assert (req.model, req.max_tokens, req.metadata["k"], req.reasoning_effort) == ("m", 5, "v", "low")
    assert req.messages[0].content.list_value.values[0].struct_value.fields["anything"].number_value == 1
    assert req.tools[0].function.strict is True
    assert req.response_format.json_schema["name"] == "s"
    assert req.stream_options.include_usage


@pytest.mark.parametrize("raw", [b'{"model": "m", "messages": [', b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_bodies_that_are_not_a_json_object_are_400_without_param(raw: bytes) -> None:
    assert _refusal(raw).param is None


def test_wrongly_typed_member_is_400_and_empty_body_is_an_empty_request() -> None:
    e = _refusal({"model": "m", "messages": MESSAGES, "temperature": "hot"})
    assert "temperature" in e.message
    assert oj.parse_request(b"", chat_pb2.ChatCompletionRequest) == chat_pb2.ChatCompletionRequest()
    assert oj.model_of(b'{"model": "m", "x": 1}') == "m"
    assert oj.model_of(b"{not json") == ""
    assert oj.model_of(b'{"model": 3}') == ""


def test_sse_events_are_one_data_line_and_done_ends_the_stream() -> None:
    event = oj.sse_event({"text": "two\nlines", "é": "ü"})
    assert event.count(b"\n") == 2
    assert event.startswith(b"data: {")
    assert event.endswith(b"}\n\n")
    assert json.loads(event[len(b"data: ") :]) == {"text": "two\nlines", "é": "ü"}
    assert oj.DONE == b"data: [DONE]\n\n"
