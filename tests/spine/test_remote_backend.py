"""The remote backend (official openai SDK) over a pool of accounts, against a wire-true fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import struct_pb2

from uplion.v1 import chat_pb2, embeddings_pb2

from ..fakes.openai_server import FakeOpenAI
from .conftest import WorkerFactory
from .test_request_path import chat, error_json

if TYPE_CHECKING:
    from uplion.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


async def test_pool_fails_over_from_a_bad_key_and_a_rate_limited_account(
    stub: Stub, workers: WorkerFactory, fake: FakeOpenAI
) -> None:
    workers("remote", "remote", UPLION_BASE_URL=fake.base_url, UPLION_API_KEYS="bad-1,limited-1,good-1",
            UPLION_MAX_PROCESS_NUM="4")  # fmt: skip
    replies = await asyncio.gather(
        *(stub.CreateChatCompletion(chat("remote", f"hello number {i}"), timeout=30) for i in range(20))
    )
    assert [r.choices[0].message.content for r in replies] == [f"hello number {i} " for i in range(20)]
    assert all(r.usage.completion_tokens == 3 for r in replies)
    # rejected, then set aside: only slots that raced to it before its first 401 came back used it
    assert 1 <= fake.calls["bad-1"] <= 4
    assert fake.calls["limited-1"] >= 1
    assert fake.calls["good-1"] >= 10


async def test_streaming_through_the_remote_backend(stub: Stub, workers: WorkerFactory, fake: FakeOpenAI) -> None:
    workers("remote", "remote", UPLION_BASE_URL=fake.base_url, UPLION_API_KEYS="good-1")
    request = chat("remote", "one two three four", stream_options=chat_pb2.StreamOptions(include_usage=True))
    chunks = [c async for c in stub.StreamChatCompletion(request, timeout=30)]
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "one two three four "
    assert chunks[-1].usage.prompt_tokens == 4
    embed_in = struct_pb2.Value(string_value="a b")
    emb = await stub.CreateEmbedding(embeddings_pb2.EmbeddingRequest(model="remote", input=embed_in), timeout=30)
    assert [v.number_value for v in emb.data[0].embedding.list_value.values] == [0.5, -0.5, 3.0]


async def test_every_key_rejected_is_a_permanent_error(stub: Stub, workers: WorkerFactory, fake: FakeOpenAI) -> None:
    workers("remote-down", "remote", UPLION_BASE_URL=fake.base_url, UPLION_API_KEYS="bad-1,bad-2")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(chat("remote-down", "hi"), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_json(err.value)["code"] == "upstream_authentication"
    assert fake.calls["bad-1"] == fake.calls["bad-2"] == 1  # not retried: a bad key will not heal by itself


async def test_upstreams_that_bend_the_stream_protocol_are_read_or_failed_over_never_empty(
    stub: Stub, workers: WorkerFactory, fake: FakeOpenAI
) -> None:
    # a whole JSON answer to a streamed request is that answer, with its exact usage
    workers("remote-plain", "remote", UPLION_BASE_URL=fake.base_url, UPLION_API_KEYS="plain-1")
    reply = await stub.CreateChatCompletion(chat("remote-plain", "one two three"), timeout=30)
    assert reply.choices[0].message.content == "one two three "
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 3)
    streamed = [c async for c in stub.StreamChatCompletion(chat("remote-plain", "a b"), timeout=30)]
    assert "".join(c.choices[0].delta.content for c in streamed if c.choices) == "a b "
    # a stream without a usage chunk is billed by the estimate (4 characters a token), not as zero
    workers("remote-nousage", "remote", UPLION_BASE_URL=fake.base_url, UPLION_API_KEYS="nousage-1")
    reply = await stub.CreateChatCompletion(chat("remote-nousage", "twelve chars"), timeout=30)
    assert reply.choices[0].message.content == "twelve chars "
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 4)
    # an in-band error before any content moves the request to the next account
    workers("remote-inband", "remote", UPLION_BASE_URL=fake.base_url, UPLION_API_KEYS="inband-1,good-1")
    replies = await asyncio.gather(*(stub.CreateChatCompletion(chat("remote-inband", f"n {i}"), timeout=30)
                                     for i in range(4)))  # fmt: skip
    assert [r.choices[0].message.content for r in replies] == [f"n {i} " for i in range(4)]
    assert fake.calls["inband-1"] >= 1
    # an upstream whose only account errs in-band is a clear unavailable error, not an empty success
    workers("remote-down-inband", "remote", UPLION_BASE_URL=fake.base_url, UPLION_API_KEYS="inband-2")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(chat("remote-down-inband", "hi"), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "overloaded" in error_json(err.value)["message"]


async def test_grpc_clients_pass_members_the_contract_lacks_both_ways(
    stub: Stub, workers: WorkerFactory, fake: FakeOpenAI
) -> None:
    """A typed request's extra_json reaches a remote upstream as members of the body; the upstream's
    members the contract lacks come back in the answer's extra_json, streamed and not."""
    workers("remote-rich", "remote", UPLION_BASE_URL=fake.base_url, UPLION_API_KEYS="rich-1")
    sent = {"verbosity": "low", "x_vendor": {"deep": [1, {"k": None}]}}
    reply = await stub.CreateChatCompletion(chat("remote-rich", "a b", extra_json=json.dumps(sent)), timeout=30)
    assert {k: fake.received[-1][k] for k in sent} == sent
    assert reply.choices[0].message.content == "a b "
    answer = json.loads(reply.extra_json)
    assert answer["service_tier"] == "default"
    assert answer["usage"]["prompt_tokens_details"] == {"cached_tokens": 1, "audio_tokens": 0}
    assert [t["token"] for t in answer["choices"][0]["logprobs"]["content"]] == ["a ", "b "]
    assert reply.system_fingerprint == "fp_fake"
    request = chat("remote-rich", "a b", stream_options=chat_pb2.StreamOptions(include_usage=True))
    chunks = [c async for c in stub.StreamChatCompletion(request, timeout=30)]
    assert all(json.loads(c.extra_json)["service_tier"] == "default" for c in chunks)
    assert json.loads(chunks[-1].extra_json)["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2


async def test_members_a_backend_cannot_pass_on_are_refused_by_name(stub: Stub, workers: WorkerFactory) -> None:
    # the gateway knows echo cannot pass them on
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(chat("echo", "hi", extra_json='{"verbosity": "low"}'), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_json(err.value)["param"] == "verbosity"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(chat("remote-rich", "hi", extra_json="[1]"), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_json(err.value)["param"] == "extra_json"
    # a gateway configured to think a model remote: the echo worker that takes its task refuses it
    workers("remote-misnamed", "echo")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(chat("remote-misnamed", "hi", extra_json='{"verbosity": "low"}'), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "verbosity" in error_json(err.value)["message"]


async def test_a_request_naming_no_cap_is_cut_at_the_models_output_cap(
    stub: Stub, workers: WorkerFactory, fake: FakeOpenAI
) -> None:
    workers("remote-capped", "remote", UPLION_BASE_URL=fake.base_url, UPLION_API_KEYS="good-1",
            UPLION_MAX_OUTPUT_TOKENS="5")  # fmt: skip
    words = " ".join(f"w{i}" for i in range(12))
    reply = await stub.CreateChatCompletion(chat("remote-capped", words), timeout=30)
    assert reply.choices[0].message.content == "w0 w1 w2 w3 w4 "
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5  # billed what it counted: the upstream's usage never came
    assert "max_tokens" not in fake.received[-1]
    assert "max_completion_tokens" not in fake.received[-1]  # never sent upstream: small contexts would refuse it
    request = chat("remote-capped", words, stream_options=chat_pb2.StreamOptions(include_usage=True))
    chunks = [c async for c in stub.StreamChatCompletion(request, timeout=30)]
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "w0 w1 w2 w3 w4 "
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 5
    named = await stub.CreateChatCompletion(chat("remote-capped", words, max_tokens=50), timeout=30)
    assert named.choices[0].message.content == words + " "  # a cap the client named is the upstream's to apply
