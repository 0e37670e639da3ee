"""The bytes REST clients see through the real edge (Envoy, the gateway, Pulsar, echo workers), read
raw: server-sent events end with `data: [DONE]`, every answer has the key set of the shape recorded
from OpenAI's API reference, unknown request members are refused by name, and every response has
an x-request-id and no gRPC header."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.openai.shapes import assert_chunk_shape, assert_same_shape, load
from uplion.edge.filters import MAX_BODY_BYTES
from uplion.v1 import admin_pb2

from .conftest import Edge

MESSAGES = [{"role": "user", "content": "one two three"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def _no_grpc_headers(r: httpx.Response) -> None:
    assert r.headers.get("x-request-id")
    assert not [h for h in r.headers if h.startswith("grpc-")], dict(r.headers)


def sse(base_url: str, auth: dict[str, str], path: str, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
    """A raw SSE reader: every event's data, in order, exactly as sent."""
    events: list[str] = []
    with httpx.stream("POST", f"{base_url}{path}", json=body, headers=auth, timeout=30) as r:
        buffer = ""
        for text in r.iter_text():
            buffer += text
            while "\n\n" in buffer:
                event, buffer = buffer.split("\n\n", 1)
                lines = event.split("\n")
                assert all(line.startswith("data: ") for line in lines), event
                events.append("\n".join(line[len("data: ") :] for line in lines))
        assert buffer == "", f"bytes after the last event: {buffer!r}"
    return r, events


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_ends_with_done_and_every_chunk_has_openai_shape(
    base_url: str, auth: dict[str, str], include_usage: bool
) -> None:
    body: dict[str, Any] = {"model": "edge-echo", "messages": MESSAGES, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    r, events = sse(base_url, auth, "/v1/chat/completions", body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    _no_grpc_headers(r)
    assert events[-1] == "[DONE]"
    assert "[DONE]" not in events[:-1]
    chunks = [json.loads(e) for e in events[:-1]]
    recorded = load("chat_completion_chunks_with_usage" if include_usage else "chat_completion_chunks")
    for chunk in chunks:
        assert_chunk_shape(chunk, recorded)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "one two three"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    if include_usage:
        assert [c["usage"] is None for c in chunks] == [True] * (len(chunks) - 1) + [False]
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] == 3
    else:
        assert not [c for c in chunks if "usage" in c]


def test_streamed_tool_call_deltas_have_openai_shape(base_url: str, auth: dict[str, str]) -> None:
    body = {"model": "edge-echo", "messages": MESSAGES, "stream": True, "tools": TOOLS, "tool_choice": "required"}
    _, events = sse(base_url, auth, "/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        assert_chunk_shape(chunk, load("chat_completion_chunks"))
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert calls
    assert calls[0][0]["function"]["name"] == "get_weather"
    assert not [c for c in chunks if c["choices"][0]["delta"].get("tool_calls") == []]


def test_completions_stream_ends_with_done(base_url: str, auth: dict[str, str]) -> None:
    _, events = sse(base_url, auth, "/v1/completions", {"model": "edge-echo", "prompt": "x y z", "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        assert_same_shape(chunk, load("completion_chunk"))
    assert "".join(c["choices"][0]["text"] for c in chunks) == "x y z"


def test_failure_after_the_first_chunk_is_an_in_band_error_event(base_url: str, auth: dict[str, str]) -> None:
    body = {"model": "edge-broken", "messages": [{"role": "user", "content": "a b c [[fail-after:2]]"}], "stream": True}
    r, events = sse(base_url, auth, "/v1/chat/completions", body)
    assert r.status_code == 200
    last = json.loads(events[-1])
    assert_same_shape(last, load("error"))
    assert "after 2 tokens" in last["error"]["message"]
    assert "[DONE]" not in events  # the answer is not complete
    assert [json.loads(e)["choices"][0]["delta"].get("content") for e in events[1:-1]] == ["a ", "b "]


def test_non_streamed_answers_have_openai_shapes(base_url: str, auth: dict[str, str]) -> None:
    def post(path: str, body: dict[str, Any]) -> Any:
        r = httpx.post(f"{base_url}{path}", json=body, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        _no_grpc_headers(r)
        return r.json()

    chat = post("/v1/chat/completions", {"model": "edge-echo", "messages": MESSAGES})
    assert_same_shape(chat, load("chat_completion"))
    assert "tool_calls" not in chat["choices"][0]["message"]
    tools = post("/v1/chat/completions", {"model": "edge-echo", "messages": MESSAGES, "tools": TOOLS,
                                          "tool_choice": "required"})  # fmt: skip
    assert_same_shape(tools, load("chat_completion_tool_calls"))
    assert_same_shape(post("/v1/completions", {"model": "edge-echo", "prompt": "x y"}), load("completion"))
    embeddings = post("/v1/embeddings", {"model": "edge-echo", "input": ["a", "b"], "encoding_format": "float"})
    assert_same_shape(embeddings, load("embedding_list"))
    for path, recorded in (("/v1/models", "model_list"), ("/v1/models/edge-echo", "model")):
        r = httpx.get(f"{base_url}{path}", headers=auth, timeout=30)
        _no_grpc_headers(r)
        assert_same_shape(r.json(), load(recorded))


def test_errors_have_openai_shape_and_a_request_id(base_url: str, auth: dict[str, str]) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "nope", "messages": MESSAGES, "stream": True},
                   headers=auth, timeout=30)  # fmt: skip
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    _no_grpc_headers(r)
    assert_same_shape(r.json(), load("error"))


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "edge-echo", "messages": MESSAGES, "prompt_cache_key": "k"},
         "prompt_cache_key"),
        ("/v1/chat/completions", {"model": "edge-echo", "messages": MESSAGES, "stream": True,
                                  "web_search_options": {}}, "web_search_options"),
        ("/v1/chat/completions", {"model": "edge-echo", "messages": [{**MESSAGES[0], "function_call": {"name": "f"}}]},
         "messages[0].function_call"),
        ("/v1/completions", {"model": "edge-echo", "prompt": "x", "stream": True, "stream_options": {"x": 1}},
         "stream_options.x"),
        ("/v1/embeddings", {"model": "edge-echo", "input": "x", "stream": True}, "stream"),
    ],
)  # fmt: skip
def test_members_the_contract_does_not_name_are_refused_by_name(
    base_url: str, auth: dict[str, str], path: str, body: dict[str, Any], param: str
) -> None:
    r = httpx.post(f"{base_url}{path}?api-version=2024-10-21", json=body, headers=auth, timeout=30)
    assert r.status_code == 400, r.text
    _no_grpc_headers(r)
    error = r.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert param in error["message"]
    assert r.headers.get("x-should-retry") == "false"


def test_sdk_extra_body_members_are_refused_and_known_ones_keep_working(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="edge-echo", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"verbosity": "low"})  # fmt: skip
    assert refused.value.param == "verbosity"
    assert refused.value.request_id
    ok = client.chat.completions.create(
        model="edge-echo", messages=[{"role": "user", "content": "known fields"}], metadata={"k": "v"}, store=False,
        reasoning_effort="low", service_tier="auto", seed=1, parallel_tool_calls=True, logit_bias={"1": 1},
        response_format={"type": "text"}, user="u", presence_penalty=0, frequency_penalty=0, top_p=1,
        temperature=1, max_completion_tokens=100, extra_body={"stream_options": None},
    )  # fmt: skip
    assert ok.choices[0].message.content == "known fields"
    assert ok._request_id
    stream = client.completions.create(model="edge-echo", prompt="a b", stream=True)
    assert "".join(c.choices[0].text for c in stream) == "a b"
    assert stream.response.headers.get("x-request-id")
    embedding = client.embeddings.with_raw_response.create(model="edge-echo", input="a")
    assert embedding.headers.get("x-request-id")


# Node.js (a prerequisite of the suite) is the HTTP/2 client at hand: its http2 module reports trailers.
H2_CLIENT = """
const http2 = require('node:http2');
const session = http2.connect(process.env.EDGE_URL);
const req = session.request({':method': 'POST', ':path': process.env.EDGE_PATH, 'content-type': 'application/json',
                             'authorization': process.env.EDGE_AUTH});
const out = {headers: {}, trailers: {}, body: ''};
req.setEncoding('utf8');
req.on('response', (h) => { out.headers = h; });
req.on('trailers', (t) => { out.trailers = t; });
req.on('data', (d) => { out.body += d; });
req.on('end', () => { console.log(JSON.stringify(out)); session.close(); });
req.end(process.env.EDGE_BODY);
"""


def h2_post(base_url: str, auth: dict[str, str], path: str, body: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "EDGE_URL": base_url, "EDGE_PATH": path, "EDGE_AUTH": auth["authorization"],
           "EDGE_BODY": json.dumps(body)}  # fmt: skip
    out = subprocess.run(["node", "-e", H2_CLIENT], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_http2_clients_get_no_grpc_headers_or_trailers(base_url: str, auth: dict[str, str]) -> None:
    body: dict[str, Any] = {"model": "edge-echo", "messages": MESSAGES}
    streamed = h2_post(base_url, auth, "/v1/chat/completions", {**body, "stream": True})
    whole = h2_post(base_url, auth, "/v1/chat/completions?api-version=1", body)
    refused = h2_post(base_url, auth, "/v1/chat/completions", {**body, "model": "nope"})
    assert [r["headers"][":status"] for r in (streamed, whole, refused)] == [200, 200, 404]
    assert streamed["body"].endswith("data: [DONE]\n\n")
    assert json.loads(whole["body"])["choices"][0]["message"]["content"] == "one two three"
    for r in (streamed, whole, refused):
        assert r["headers"].get("x-request-id")
        assert not [h for h in [*r["headers"], *r["trailers"]] if h.startswith("grpc-")], r


def test_a_body_of_the_largest_size_the_edge_passes_reaches_the_gateway_whole(base_url: str, edge: Edge) -> None:
    # the gateway's gRPC bound leaves room for the HttpBody envelope: a 429 (which the SDKs retry) here
    # would mean the body was cut off there; the gateway reads it all and names the unknown member.
    # A key of its own whose limits admit the body's token estimate (bytes / 4)
    user_id, token_id, secret = edge.new_key()
    limits = admin_pb2.RateLimits(tokens_per_minute=10_000_000, tokens_per_day=100_000_000)
    edge.admin.call("UpdateUser", admin_pb2.UpdateUserRequest(user_id=user_id, rate_limits=limits))
    edge.admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=token_id, rate_limits=limits))
    auth = {"authorization": f"Bearer {secret}"}
    head = json.dumps({"model": "edge-echo", "messages": MESSAGES, "padding": ""}).encode()[:-2]
    raw = head + b"x" * (MAX_BODY_BYTES - len(head) - 2) + b'"}'
    assert len(raw) == MAX_BODY_BYTES
    r = httpx.post(f"{base_url}/v1/chat/completions", content=raw, timeout=60,
                   headers={"content-type": "application/json", **auth})  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "padding"
