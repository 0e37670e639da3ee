"""Members the contract does not name (issue #15, item 3), as pure functions: the gateway splits them
off a remote model's request and lays the upstream's back over its answers; the worker puts the
request's back where the client sent them, splits the upstream's off its chunks and folds a stream's
into the non-streamed answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from uplion.core import json_members
from uplion.core.errors import ApiError
from uplion.gateway import openai_json
from uplion.gateway.registry import ModelRegistry
from uplion.v1 import chat_pb2, common_pb2, completions_pb2
from uplion.worker.aggregate import aggregate_extra
from uplion.worker.backends import extra
from uplion.worker.backends.openai_wire import chat_chunk, chat_chunks_from_answer, completion_chunk
from uplion.worker.backends.remote import _body, _streamed

UNKNOWN: dict[str, Any] = {
    "prediction": {"type": "content", "content": "x"},
    "verbosity": "low",
    "web_search_options": {"user_location": {"type": "approximate", "approximate": {"city": "Zürich"}}},
    "prompt_cache_key": "k",
    "functions": [{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}],
    "function_call": "auto",
    "x_vendor": {"deep": [1, 2.5, {"k": None}], "big": 12345678901234567890},
}
BODY: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "system", "content": "s"},
                 {"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}}],
    "maxTokens": 5,
    "stream_options": {"include_usage": False, "include_obfuscation": False},
    "metadata": {"k": "v"},
    "reasoning_effort": "low",
    **UNKNOWN,
}  # fmt: skip


def test_split_keeps_unknown_members_as_sent_at_their_paths() -> None:
    known, more = openai_json.split_unknown(BODY, chat_pb2.ChatCompletionRequest.DESCRIPTOR)
    assert more == {**UNKNOWN, "messages": [{}, {"cache_control": {"type": "ephemeral"}}],
                    "stream_options": {"include_obfuscation": False}}  # fmt: skip
    assert known["maxTokens"] == 5
    assert known["metadata"] == {"k": "v"}
    assert known["messages"][1] == {"role": "user", "content": "hi"}
    # the whole body comes back from the two halves
    assert json_members.overlay(known, more) == BODY


def test_a_remote_model_takes_them_in_extra_json_any_other_refuses_them_by_path() -> None:
    raw = json.dumps(BODY).encode()
    request = openai_json.parse_request(raw, chat_pb2.ChatCompletionRequest, lambda model: model == "m")
    assert request.max_tokens == 5
    assert request.reasoning_effort == "low"
    assert json.loads(request.extra_json)["x_vendor"] == UNKNOWN["x_vendor"]
    with pytest.raises(ApiError) as refused:
        openai_json.parse_request(raw, chat_pb2.ChatCompletionRequest, lambda model: False)
    assert refused.value.param == "messages[1].cache_control"
    # the echo path: no unknown member, no extra_json, nothing split
    plain = openai_json.parse_request(b'{"model": "m", "messages": []}', chat_pb2.ChatCompletionRequest,
                                      lambda model: True)  # fmt: skip
    assert plain.extra_json == ""
    # a REST client cannot set the contract's extra_json itself: it is one more unknown member
    with pytest.raises(ApiError) as named:
        openai_json.parse_request(b'{"model": "e", "extra_json": "{}"}', chat_pb2.ChatCompletionRequest)
    assert named.value.param == "extra_json"
    assert openai_json.extra_members('{"a": 1, "b": 2}') == ["a", "b"]
    assert openai_json.extra_members("[1]") is None
    assert openai_json.extra_members("{") is None


def test_the_worker_sends_the_upstream_the_clients_members_where_they_were() -> None:
    request = openai_json.parse_request(json.dumps(BODY).encode(), chat_pb2.ChatCompletionRequest, lambda m: True)
    sent = json.loads(_body(request, "upstream-m", **_streamed()))
    for key, value in UNKNOWN.items():
        assert sent[key] == value
    assert sent["messages"][1] == {"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}}
    assert sent["stream_options"] == {"include_usage": True, "include_obfuscation": False}
    assert (sent["model"], sent["stream"], sent["max_tokens"]) == ("upstream-m", True, 5)
    assert _streamed() == {"stream": True, "stream_options": {"include_usage": True}}  # never shared


def test_registry_knows_which_models_forward_unknown_members() -> None:
    registry = ModelRegistry.static(("static-remote", "static-echo"), remote=("static-remote",))
    assert registry.forwards_unknown("static-remote")
    assert not registry.forwards_unknown("static-echo")
    registry.declare("ns/a", "declared", None, "remote")
    assert registry.forwards_unknown("declared")
    registry.declare("ns/b", "declared", None, "echo")  # another backend may take its tasks
    assert not registry.forwards_unknown("declared")
    registry.declare("ns/b", None)
    assert registry.forwards_unknown("declared")
    registry.declare("ns/a", "other", None, "local")
    assert not registry.forwards_unknown("other")
    assert not registry.forwards_unknown("declared")


def test_overlay_typed_members_win_placeholders_do_not() -> None:
    out: dict[str, Any] = {"a": 1, "logprobs": None, "annotations": [], "usage": {"t": 3}, "choices": [{"i": 0}]}
    more = {"a": 2, "logprobs": {"content": []}, "annotations": [{"x": 1}], "usage": {"t": 9, "d": {"c": 1}},
            "choices": [{"i": 5, "lp": 1}, {"ignored": True}], "tier": "default"}  # fmt: skip
    assert json_members.overlay(out, more) == {
        "a": 1, "logprobs": {"content": []}, "annotations": [{"x": 1}], "usage": {"t": 3, "d": {"c": 1}},
        "choices": [{"i": 0, "lp": 1}], "tier": "default",
    }  # fmt: skip
    assert extra.overlay({"a": None}, {"a": 1}) == {"a": 1}
    assert openai_json.with_extra({"a": 1}, "") == {"a": 1}


RICH_CHUNK = {
    "id": "u", "object": "chat.completion.chunk", "created": 1, "model": "gpt", "system_fingerprint": "fp",
    "service_tier": "default", "obfuscation": "zz",
    "choices": [{"index": 0, "delta": {"content": "a", "reasoning_content": "r1"}, "finish_reason": None,
                 "logprobs": {"content": [{"token": "a", "logprob": -0.1}], "refusal": None}}],
    "usage": None,
}  # fmt: skip


def test_upstream_chunks_keep_what_the_contract_lacks_in_extra_json() -> None:
    chunk = chat_chunk(RICH_CHUNK)
    assert chunk.choices[0].delta.content == "a"
    assert chunk.system_fingerprint == "fp"
    assert json.loads(chunk.extra_json) == {
        "service_tier": "default", "obfuscation": "zz",
        "choices": [{"delta": {"reasoning_content": "r1"},
                     "logprobs": {"content": [{"token": "a", "logprob": -0.1}], "refusal": None}}],
    }  # fmt: skip
    plain = chat_chunk({"id": "u", "choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": None}]})
    assert plain.extra_json == ""  # nulls say nothing: no extra_json on OpenAI's plain chunks
    usage = chat_chunk({"choices": [], "usage": {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 1}}})
    assert json.loads(usage.extra_json) == {"usage": {"prompt_tokens_details": {"cached_tokens": 1}}}
    # the gateway writes them where the upstream put them
    written = openai_json.chat_chunk(chunk, include_usage=False)
    assert written["service_tier"] == "default"
    assert written["choices"][0]["logprobs"]["content"][0]["token"] == "a"
    assert written["choices"][0]["delta"] == {"content": "a", "reasoning_content": "r1"}


def test_a_streams_members_fold_into_the_non_streamed_answer() -> None:
    second = {**RICH_CHUNK, "choices": [{"index": 0, "delta": {"content": "b", "reasoning_content": "r2",
              "annotations": [{"type": "url_citation"}]}, "finish_reason": "stop",
              "logprobs": {"content": [{"token": "b", "logprob": -0.2}], "refusal": None}}]}  # fmt: skip
    last = {
        "id": "u",
        "choices": [],
        "service_tier": "flex",
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "completion_tokens_details": {"reasoning_tokens": 2}},
    }
    chunks = [chat_chunk(RICH_CHUNK), chat_chunk(second), chat_chunk(last)]
    folded = json.loads(aggregate_extra(chunks))
    assert folded == {
        "service_tier": "flex", "obfuscation": "zz",
        "usage": {"completion_tokens_details": {"reasoning_tokens": 2}},
        "choices": [{"logprobs": {"content": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -0.2}],
                                  "refusal": None},
                     "message": {"reasoning_content": "r1r2", "annotations": [{"type": "url_citation"}]}}],
    }  # fmt: skip
    answer = chat_pb2.ChatCompletion(
        id="x", usage=common_pb2.Usage(prompt_tokens=1), extra_json=aggregate_extra(chunks)
    )
    answer.choices.add(index=0, message=chat_pb2.ChatCompletionMessage(role="assistant", content="ab"))
    written = openai_json.chat_completion(answer)
    assert written["choices"][0]["message"]["annotations"] == [{"type": "url_citation"}]
    assert written["choices"][0]["message"]["content"] == "ab"  # typed wins
    assert written["usage"]["prompt_tokens"] == 1
    assert written["usage"]["completion_tokens_details"]
    assert aggregate_extra([chat_chunk({"choices": [{"index": 0, "delta": {"content": "x"}}]})]) == ""


def test_a_whole_upstream_answer_keeps_its_members_too() -> None:
    answer = {"id": "u", "object": "chat.completion", "model": "gpt", "service_tier": "default",
              "choices": [{"index": 0, "finish_reason": "stop", "logprobs": {"content": [{"token": "a"}]},
                           "message": {"role": "assistant", "content": "a", "refusal": None, "annotations": [1]}}],
              "usage": {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 1}}}  # fmt: skip
    folded = json.loads(aggregate_extra(list(chat_chunks_from_answer(answer))))
    choice = {"logprobs": {"content": [{"token": "a"}]}, "message": {"annotations": [1]}}
    assert folded == {"service_tier": "default", "usage": {"prompt_tokens_details": {"cached_tokens": 1}},
                      "choices": [choice]}  # fmt: skip


def test_completion_logprobs_are_joined_and_written_in_place() -> None:
    def piece(text: str) -> completions_pb2.Completion:
        lp = {"tokens": [text], "token_logprobs": [-0.5], "top_logprobs": [{text: -0.5}], "text_offset": [0]}
        return completion_chunk({"id": "c", "choices": [{"text": text, "index": 0, "logprobs": lp}]})

    folded = aggregate_extra([piece("a"), piece("b")])
    assert json.loads(folded)["choices"][0]["logprobs"]["tokens"] == ["a", "b"]
    answer = completions_pb2.Completion(id="c", extra_json=folded)
    answer.choices.add(index=0, text="ab")
    assert openai_json.completion(answer)["choices"][0]["logprobs"]["top_logprobs"] == [{"a": -0.5}, {"b": -0.5}]


def test_fold_joins_lists_and_delta_text_and_replaces_scalars() -> None:
    assert extra.fold({"a": [1], "s": "x", "n": 1}, {"a": [2], "s": "y", "n": None}) == {"a": [1, 2], "s": "y", "n": 1}
    assert extra.fold({"s": "x"}, {"s": "y"}, join_strings=True) == {"s": "xy"}
    assert extra.split({"id": "x", "choices": [{"index": 0}], "extra_json": 1},
                       chat_pb2.ChatCompletionChunk.DESCRIPTOR) == {"extra_json": 1}  # fmt: skip
