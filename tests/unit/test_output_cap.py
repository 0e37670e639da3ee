"""The worker's output cap for requests that name none (worker/uplion/worker/output_cap.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from uplion.v1 import chat_pb2, completions_pb2, responses_pb2
from uplion.worker.output_cap import cap_for, capped, response_with_cap, tokens_in


def _chunk(text: str, finish: str | None = None) -> chat_pb2.ChatCompletionChunk:
    choice = chat_pb2.ChatCompletionChunkChoice(index=0, delta=chat_pb2.ChatCompletionDelta(content=text))
    if finish:
        choice.finish_reason = finish
    return chat_pb2.ChatCompletionChunk(choices=[choice])


def test_only_requests_naming_no_cap_are_capped_per_choice() -> None:
    assert cap_for(chat_pb2.ChatCompletionRequest(), 100) == 100
    assert cap_for(chat_pb2.ChatCompletionRequest(n=3), 100) == 300
    assert cap_for(chat_pb2.ChatCompletionRequest(max_tokens=7), 100) is None
    assert cap_for(chat_pb2.ChatCompletionRequest(max_completion_tokens=7), 100) is None
    assert cap_for(completions_pb2.CompletionRequest(), 50) == 50
    assert cap_for(completions_pb2.CompletionRequest(max_tokens=1), 50) is None


def test_tokens_are_counted_from_above() -> None:
    assert tokens_in(_chunk("a")) == 1
    assert tokens_in(_chunk("sixteen chars ok")) == 4  # an upstream that packs several tokens in one chunk
    assert tokens_in(_chunk("")) == 0
    assert tokens_in(completions_pb2.Completion(choices=[completions_pb2.CompletionChoice(text="abcdefgh")])) == 2


def test_a_stream_is_cut_at_the_cap_and_closed() -> None:
    closed: list[bool] = []

    async def upstream() -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        try:
            for i in range(100):
                yield _chunk(f"w{i} ")
        finally:
            closed.append(True)

    async def run() -> list[chat_pb2.ChatCompletionChunk]:
        return [c async for c in capped(upstream(), 3, prompt_tokens=9)]

    out = asyncio.run(run())
    assert [c.choices[0].delta.content for c in out[:3]] == ["w0 ", "w1 ", "w2 "]
    assert out[3].choices[0].finish_reason == "length"
    assert (out[4].usage.prompt_tokens, out[4].usage.completion_tokens, out[4].usage.total_tokens) == (9, 3, 12)
    assert len(out) == 5
    assert closed == [True]


def test_an_answer_that_ends_at_the_cap_is_not_cut() -> None:
    async def upstream() -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        yield _chunk("a ")
        yield _chunk("b ", finish="stop")
        yield chat_pb2.ChatCompletionChunk()

    async def run() -> list[chat_pb2.ChatCompletionChunk]:
        return [c async for c in capped(upstream(), 2, prompt_tokens=1)]

    out = asyncio.run(run())
    assert [c.choices[0].finish_reason for c in out if c.choices and c.choices[0].HasField("finish_reason")] == ["stop"]
    assert len(out) == 3


def test_a_passed_through_response_request_asks_for_the_cap_unless_it_names_one() -> None:
    bare = responses_pb2.CreateResponseRequest(model="m")
    sent = response_with_cap(bare, 4096)
    assert sent.max_output_tokens == 4096
    assert not bare.HasField("max_output_tokens")  # the task's own request is left as it was
    own = responses_pb2.CreateResponseRequest(model="m", max_output_tokens=64)
    assert response_with_cap(own, 4096) is own
