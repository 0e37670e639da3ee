"""The remote backend's pure parts: SSE framing, OpenAI JSON to protobuf, upstream error verdicts."""

from __future__ import annotations

import json

import pytest

from uplion.worker.backends.openai_wire import (
    Verdict,
    chat_chunk,
    chat_chunks_from_answer,
    classify,
    completion_chunk,
    embedding_response,
    stream_error,
)
from uplion.worker.backends.sse import SSEDecoder
from uplion.worker.content import estimate_usage


def test_sse_events_split_across_reads_and_line_endings() -> None:
    d = SSEDecoder()
    wire = b'data: {"a":1}\n\n: keep-alive\n\nevent: x\r\ndata: {"b":\r\ndata: 2}\r\n\r\ndata: [DONE]\n\n'
    out: list[bytes] = []
    for i in range(len(wire)):  # one byte at a time: every split point
        out += d.feed(wire[i : i + 1])
    assert out == [b'{"a":1}', b'{"b":\n2}', b"[DONE]"]
    assert d.close() == []
    d2 = SSEDecoder()
    assert d2.feed(b"data:x") == []
    assert d2.close() == [b"x"]  # an event cut off by the end of the stream still counts


def test_chat_chunks_keep_text_tool_calls_usage_and_presence() -> None:
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt"}
    first = chat_chunk({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "finish_reason": None, "logprobs": None}]})  # fmt: skip
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.HasField("content")
    assert not first.choices[0].HasField("finish_reason")
    tool = chat_chunk({**head, "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\""}}],
        "content": None}, "finish_reason": None}]})  # fmt: skip
    assert tool.choices[0].delta.tool_calls[0].function.arguments == '{"x"'
    assert not tool.choices[0].delta.HasField("content")
    last = chat_chunk({**head, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
                       "system_fingerprint": "fp"})  # fmt: skip
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (5, 7, 12)
    assert last.system_fingerprint == "fp"
    assert last.created == 1700000000
    empty_delta = chat_chunk({**head, "choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]})
    assert empty_delta.choices[0].HasField("delta")
    assert empty_delta.choices[0].finish_reason == "stop"


def test_a_whole_answer_becomes_the_chunks_it_would_have_streamed() -> None:
    answer = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}  # fmt: skip
    chunks = list(chat_chunks_from_answer(answer))
    assert [c.choices[0].delta.content for c in chunks[:1]] == ["hi"]
    assert chunks[0].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == 3
    assert not chunks[-1].choices


def test_completion_chunks_and_embeddings() -> None:
    c = completion_chunk({"id": "x", "choices": [{"index": 0, "text": "abc", "finish_reason": None}]})
    assert c.choices[0].text == "abc"
    emb = embedding_response({"object": "list", "model": "e", "data": [{"index": 0, "embedding": [0.5, -1]},
                              {"index": 1, "embedding": "AAAA"}], "usage": {"prompt_tokens": 3}})  # fmt: skip
    assert [v.number_value for v in emb.data[0].embedding.list_value.values] == [0.5, -1.0]
    assert emb.data[1].embedding.string_value == "AAAA"
    assert (emb.usage.prompt_tokens, emb.usage.total_tokens) == (3, 3)


def _err(message: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": "x", "param": None, "code": code}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "headers", "verdict", "retry_after"),
    [
        (429, _err("slow down", "rate_limit_exceeded"), {"retry-after": "2"}, Verdict.RATE_LIMITED, 2.0),
        (429, _err("no money", "insufficient_quota"), {}, Verdict.QUOTA, None),
        (401, _err("bad key", "invalid_api_key"), {}, Verdict.AUTHENTICATION, None),
        (403, b"forbidden", {}, Verdict.AUTHENTICATION, None),
        (404, _err("no such model", "model_not_found"), {}, Verdict.NOT_FOUND, None),
        (400, _err("bad request"), {}, Verdict.INVALID, None),
        (503, b"<html>upstream down</html>", {}, Verdict.TRY_NEXT, None),
        (500, b"", {}, Verdict.TRY_NEXT, None),
    ],
)
def test_upstream_errors_decide_what_the_pool_does(
    status: int, body: bytes, headers: dict[str, str], verdict: Verdict, retry_after: float | None
) -> None:
    problem = classify(status, body, headers)
    assert problem.verdict is verdict
    assert problem.retry_after == retry_after
    assert problem.message


def test_in_band_errors_and_the_usage_estimate() -> None:
    assert stream_error({"error": {"message": "overloaded"}}) == "overloaded"
    assert stream_error({"choices": []}) is None
    usage = estimate_usage(prompt_tokens=3, generated_chars=13)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 4, 7)
