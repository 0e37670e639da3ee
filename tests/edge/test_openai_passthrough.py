"""Members the contract does not name, through the real edge (Envoy, the gateway, Pulsar, a remote
worker) to the wire-true fake OpenAI account and back (issue #15, item 3): a remote model's request
reaches its upstream with them exactly as the client sent them, where an echo model refuses each by
name; the members the upstream answers with that the contract lacks (`logprobs`, token details,
`system_fingerprint`, `service_tier`, annotations) reach the official SDK and a raw reader, streamed
and not."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.openai.shapes import load, missing_members

from ..fakes.openai_server import ANNOTATIONS, COMPLETION_DETAILS, PROMPT_DETAILS, RICH_TOP, FakeOpenAI, logprob
from .conftest import Edge
from .test_openai_wire import sse

REMOTE, ECHO = "edge-remote", "edge-echo"
# what clients send that uplion's contract does not name (a nested unknown among them: x_vendor)
UNKNOWN: dict[str, Any] = {
    "prediction": {"type": "content", "content": "one two three"},
    "verbosity": "low",
    "web_search_options": {"search_context_size": "low", "user_location": {
        "type": "approximate", "approximate": {"city": "Zürich", "country": "CH"}}},
    "functions": [{"name": "get_weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    "function_call": "auto",
    "x_vendor": {"deep": [1, 2.5, {"k": None, "s": "\u00e9\u4e2d"}], "big": 12345678901234567890, "t": True},
}  # fmt: skip
# members the contract names: they keep working (and reach the upstream) as before
KNOWN: dict[str, Any] = {"metadata": {"team": "a"}, "reasoning_effort": "low"}


def _received(upstream: FakeOpenAI, key: str) -> dict[str, Any]:
    """The body the upstream received with prompt_cache_key `key`."""
    found = [b for b in upstream.received if b.get("prompt_cache_key") == key]
    assert len(found) == 1, f"{len(found)} upstream requests with prompt_cache_key {key}"
    return found[0]


def _chat_body(**more: Any) -> tuple[str, dict[str, Any]]:
    key = uuid.uuid4().hex
    message = {"role": "user", "content": "one two three", "cache_control": {"type": "ephemeral"}}
    return key, {"model": REMOTE, "messages": [message], "prompt_cache_key": key, **UNKNOWN, **KNOWN, **more}


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_request_members_reach_the_remote_upstream_exactly(
    base_url: str, auth: dict[str, str], edge: Edge, stream: bool
) -> None:
    key, body = _chat_body(stream=stream, stream_options={"include_usage": True, "include_obfuscation": False})
    if stream:
        r, events = sse(base_url, auth, "/v1/chat/completions", body)
        assert events[-1] == "[DONE]"
    else:
        r = httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=auth, timeout=30)
    assert r.status_code == 200
    got = _received(edge.upstream, key)
    assert {k: got[k] for k in UNKNOWN} == UNKNOWN
    assert {k: got[k] for k in KNOWN} == KNOWN
    assert got["messages"] == body["messages"]  # the unknown member of a known message, in place
    assert got["stream_options"] == {"include_usage": True, "include_obfuscation": False}
    assert got["model"] == REMOTE


def test_the_official_sdks_extra_body_reaches_the_upstream_on_every_path(client: openai.OpenAI, edge: Edge) -> None:
    key = uuid.uuid4().hex
    answer = client.chat.completions.create(
        model=REMOTE, messages=[{"role": "user", "content": "a b"}], metadata={"team": "a"}, reasoning_effort="low",
        extra_body={**UNKNOWN, "prompt_cache_key": key},
    )  # fmt: skip
    assert answer.choices[0].message.content == "a b "
    got = _received(edge.upstream, key)
    assert {k: got[k] for k in UNKNOWN} == UNKNOWN
    assert got["metadata"] == {"team": "a"}
    key = uuid.uuid4().hex
    vendor = {"prompt_cache_key": key, "x_vendor": UNKNOWN["x_vendor"]}
    completion = client.completions.create(model=REMOTE, prompt="x y", extra_body=vendor)
    assert completion.choices[0].text == "x y "
    assert _received(edge.upstream, key)["x_vendor"] == UNKNOWN["x_vendor"]
    key = uuid.uuid4().hex
    embedding = client.embeddings.create(
        model=REMOTE, input="a b", extra_body={"prompt_cache_key": key, "input_type": "query"}
    )
    assert embedding.data[0].embedding == [0.5, -0.5, 3.0]
    assert _received(edge.upstream, key)["input_type"] == "query"


@pytest.mark.parametrize(
    ("member", "param"),
    [*((m, m) for m in [*UNKNOWN, "prompt_cache_key"]),
     ("cache_control", "messages[0].cache_control"), ("include_obfuscation", "stream_options.include_obfuscation")],
)  # fmt: skip
def test_the_same_members_to_an_echo_model_are_a_400_naming_them(
    base_url: str, auth: dict[str, str], member: str, param: str
) -> None:
    _, full = _chat_body(stream_options={"include_usage": True, "include_obfuscation": False})
    body: dict[str, Any] = {"model": ECHO, "messages": [{"role": "user", "content": "x"}], "stream": True, **KNOWN}
    if member == "cache_control":
        body["messages"] = full["messages"]
    elif member == "include_obfuscation":
        body["stream_options"] = full["stream_options"]
    else:
        body[member] = full[member]
    r = httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=auth, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert param in r.json()["error"]["message"]


WORDS = ["one ", "two ", "three "]


def test_upstream_members_reach_a_raw_reader_non_streamed(base_url: str, auth: dict[str, str]) -> None:
    body = {"model": REMOTE, "messages": [{"role": "user", "content": "one two three"}], "logprobs": True}
    answer = httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=auth, timeout=30).json()
    assert not missing_members(answer, load("chat_completion"))  # every member OpenAI sends, none left out
    assert {k: answer[k] for k in RICH_TOP} == RICH_TOP
    assert answer["usage"]["prompt_tokens_details"] == PROMPT_DETAILS
    assert answer["usage"]["completion_tokens_details"] == COMPLETION_DETAILS
    assert answer["usage"]["total_tokens"] == 6
    choice = answer["choices"][0]
    assert choice["logprobs"] == {"content": [logprob(w) for w in WORDS], "refusal": None}
    assert choice["message"] == {"role": "assistant", "content": "one two three ", "refusal": None,
                                 "annotations": ANNOTATIONS}  # fmt: skip
    completion = httpx.post(f"{base_url}/v1/completions", json={"model": REMOTE, "prompt": "one two three"},
                            headers=auth, timeout=30).json()  # fmt: skip
    assert not missing_members(completion, load("completion"))
    assert completion["choices"][0]["logprobs"]["tokens"] == WORDS
    assert completion["service_tier"] == "default"
    assert completion["usage"]["completion_tokens_details"] == COMPLETION_DETAILS


@pytest.mark.parametrize("include_usage", [True, False])
def test_upstream_members_reach_a_raw_reader_streamed(base_url: str, auth: dict[str, str], include_usage: bool) -> None:
    body = {"model": REMOTE, "messages": [{"role": "user", "content": "one two three"}], "stream": True,
            "stream_options": {"include_usage": include_usage}}  # fmt: skip
    _, events = sse(base_url, auth, "/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all({k: c[k] for k in RICH_TOP} == RICH_TOP for c in chunks)
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert [c["choices"][0]["logprobs"] for c in content] == [{"content": [logprob(w)], "refusal": None} for w in WORDS]
    assert chunks[-1 - include_usage]["choices"][0]["delta"] == {"annotations": ANNOTATIONS}
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["prompt_tokens_details"] == PROMPT_DETAILS
        assert chunks[-1]["usage"]["completion_tokens_details"] == COMPLETION_DETAILS
        assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    else:
        assert not [c for c in chunks if "usage" in c]
    completion = {"model": REMOTE, "prompt": "one two three", "stream": True, "stream_options": {"include_usage": True}}
    _, events = sse(base_url, auth, "/v1/completions", completion)
    pieces = [json.loads(e) for e in events[:-1]]
    assert [p["choices"][0]["logprobs"]["tokens"] for p in pieces if p["choices"] and p["choices"][0]["text"]] == [
        [w] for w in WORDS
    ]
    assert pieces[-1]["usage"]["prompt_tokens_details"] == PROMPT_DETAILS


def test_upstream_members_reach_the_official_sdk(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "one two three"}]
    answer = client.chat.completions.create(model=REMOTE, messages=messages, logprobs=True)
    assert answer.service_tier == "default"
    assert answer.system_fingerprint == "fp_fake"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 1
    assert answer.usage.completion_tokens_details is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens == 2
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None
    assert [t.token for t in logprobs.content or []] == WORDS
    annotations = answer.choices[0].message.annotations or []
    assert [a.url_citation.url for a in annotations] == ["https://example.com/"]
    stream = client.chat.completions.create(model=REMOTE, messages=messages, stream=True,
                                            stream_options={"include_usage": True})  # fmt: skip
    chunks = list(stream)
    assert {c.service_tier for c in chunks} == {"default"}
    tokens = [
        t.token for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []
    ]
    assert tokens == WORDS
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1
    completion = client.completions.create(model=REMOTE, prompt="one two three")
    assert completion.choices[0].logprobs is not None
    assert completion.choices[0].logprobs.tokens == WORDS
