"""The official openai Python SDK, pointed at Envoy, works unchanged; errors keep OpenAI's shape."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def test_chat_completion(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="edge-echo", messages=user("hello edge"), n=2, stop=["zzz"], seed=7)
    assert r.object == "chat.completion"
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content == "hello edge" and c.finish_reason == "stop" for c in r.choices)
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (2, 4, 6)


def test_content_parts_and_tools(client: openai.OpenAI) -> None:
    parts: Any = [
        {"role": "user", "content": [{"type": "text", "text": "weather in "}, {"type": "text", "text": "Oslo"}]}
    ]
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = client.chat.completions.create(model="edge-echo", messages=parts, tools=tools, tool_choice="required")
    assert r.choices[0].finish_reason == "tool_calls"
    calls: Any = r.choices[0].message.tool_calls
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"text": "weather in Oslo"}


def test_streaming_chat_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="edge-echo", messages=user("one two three"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


def test_legacy_completions(client: openai.OpenAI) -> None:
    r = client.completions.create(model="edge-echo", prompt="alpha beta gamma", max_tokens=2)
    assert r.choices[0].text == "alpha beta "
    assert r.choices[0].finish_reason == "length"
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(model="edge-echo", prompt="x y", stream=True) if c.choices
    )
    assert streamed == "x y"


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    default = client.embeddings.create(model="edge-echo", input=["a", "b c"])  # the SDK asks for base64 and decodes it
    floats = client.embeddings.create(model="edge-echo", input=["a", "b c"], encoding_format="float")
    assert len(default.data) == 2
    assert len(floats.data[0].embedding) == 16
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    raw = client.embeddings.create(model="edge-echo", input="a", encoding_format="base64")
    decoded = struct.unpack("<16f", base64.b64decode(raw.data[0].embedding))  # type: ignore[arg-type]
    assert list(decoded) == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert floats.usage.prompt_tokens == 3


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    assert "edge-echo" in [m.id for m in client.models.list()]
    assert client.models.retrieve("edge-echo").owned_by == "uplion"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_json_numbers_stay_numbers(base_url: str, auth: dict[str, str]) -> None:
    body = {"model": "edge-echo", "messages": user("x")}
    r = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=30, headers=auth)
    data = r.json()
    assert isinstance(data["created"], int)
    assert data["choices"][0]["index"] == 0
    assert isinstance(data["usage"]["total_tokens"], int)
    assert "grpc-status" not in r.headers


@pytest.mark.parametrize(
    ("raw", "status", "param"),
    [
        (b'{"model": "edge-echo", "messages": [', 400, None),  # malformed JSON
        (b'{"model": "edge-echo", "messages": "hi"}', 400, None),  # wrong type
        (b'{"model": "edge-echo", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400, None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),  # missing required
        (b'{"model": "edge-echo"}', 400, "messages"),
        (b"", 400, "model"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
    ],
)
def test_bad_requests_get_openai_errors(
    base_url: str, auth: dict[str, str], raw: bytes, status: int, param: str | None
) -> None:
    headers = {"content-type": "application/json", **auth}
    r = httpx.post(f"{base_url}/v1/chat/completions", content=raw, headers=headers)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert error["param"] == param
    assert r.headers.get("x-should-retry") == "false"


def test_sdk_exception_classes(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="edge-echo", messages=[])
    assert bad.value.code is None
    assert bad.value.param == "messages"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=user("x"))
    assert missing.value.code == "model_not_found"


def test_oversized_body_is_413(base_url: str, auth: dict[str, str]) -> None:
    huge = {"model": "edge-echo", "messages": user("x" * (9 * 1024 * 1024))}
    r = httpx.post(f"{base_url}/v1/chat/completions", json=huge, timeout=60, headers=auth)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_backend_failure_is_503(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="edge-broken", messages=user("[[fail:unavailable]]"))
    assert err.value.status_code == 503
    assert err.value.code == "retries_exhausted"


def test_deadline_is_504(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model="edge-slow", messages=user("a b c d e f g h i j"), extra_headers={"x-uplion-timeout": "1"}
        )
    assert err.value.status_code == 504
    assert err.value.code == "timeout"


def test_failure_after_the_first_chunk_is_raised_in_band(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="edge-broken", messages=user("a b c [[fail-after:2]]"), stream=True)
    seen: list[str] = []

    def consume() -> None:
        seen.extend(c.choices[0].delta.content or "" for c in stream if c.choices)

    with pytest.raises(openai.APIError) as err:
        consume()
    assert [s for s in seen if s] == ["a ", "b "]
    assert "after 2 tokens" in err.value.message


def test_long_streams_are_not_cut(client: openai.OpenAI) -> None:
    # 6 s of chunks 300 ms apart: the route has no timeout of its own (the gateway bounds requests)
    stream = client.chat.completions.create(
        model="edge-slow", messages=user(" ".join(["w"] * 20)), stream=True, timeout=60
    )
    words = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(words) == 20


def test_unknown_query_parameters_are_ignored_as_openai_does(base_url: str, auth: dict[str, str]) -> None:
    # Azure-style clients add ?api-version=...; the request is still served, not reset (was a 503)
    body = {"model": "edge-echo", "messages": user("with a query")}
    r = httpx.post(f"{base_url}/v1/chat/completions?api-version=2024-10-21", json=body, timeout=30, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "with a query"
    models = httpx.get(f"{base_url}/v1/models?limit=5", timeout=30, headers=auth)
    assert models.status_code == 200, models.text


def test_every_response_carries_a_request_id_and_no_grpc_headers(
    client: openai.OpenAI, base_url: str, auth: dict[str, str]
) -> None:
    ok = client.chat.completions.create(model="edge-echo", messages=user("id please"))
    assert ok._request_id  # the SDK reads x-request-id
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=user("x"))
    assert missing.value.request_id
    body = {"model": "edge-echo", "messages": user("x")}
    unknown_key = {"authorization": "Bearer upl-not-a-real-key-0000000000000000000000"}
    responses = [
        httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=30, headers=auth),
        httpx.post(f"{base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=30, headers=auth),
        httpx.post(f"{base_url}/v1/chat/completions", json={**body, "model": "nope"}, timeout=30, headers=auth),
        httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=30, headers=unknown_key),
        httpx.get(f"{base_url}/v1/models", timeout=30, headers=auth),
    ]
    assert [r.status_code for r in responses] == [200, 200, 404, 401, 200]
    for r in responses:
        assert r.headers.get("x-request-id"), r.request.url
        assert not [h for h in r.headers if h.startswith("grpc-")], dict(r.headers)
