"""Gateway → Pulsar → worker → gateway: answers, streams, embeddings, usage, unknown models."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import struct_pb2

from uplion.devstack.pulsar import Pulsar
from uplion.v1 import chat_pb2, completions_pb2, embeddings_pb2, models_pb2, responses_pb2, usage_pb2

from .conftest import WorkerFactory, usage_events

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    from uplion.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub


def error_json(err: grpc.aio.AioRpcError) -> dict[str, Any]:
    """OpenAI's error object, carried in the `x-uplion-error` trailing metadata."""
    metadata: Any = err.trailing_metadata() or ()
    raw = {str(k): v for k, v in metadata}["x-uplion-error"]
    return json.loads(str(raw))["error"]  # type: ignore[no-any-return]


def text(s: str) -> struct_pb2.Value:
    return struct_pb2.Value(string_value=s)


def chat(model: str, content: str, **kw: Any) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role="user", content=text(content))], **kw
    )


async def test_chat_completion_round_trip(stub: Stub, workers: WorkerFactory, broker: Pulsar) -> None:
    workers("echo")
    reply = await stub.CreateChatCompletion(chat("echo", "hello there, uplion"), timeout=30)
    assert reply.object == "chat.completion"
    assert reply.model == "echo"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "hello there, uplion"
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (3, 3, 6)
    events = await usage_events(broker, "echo", 1)
    assert len(events) == 1
    assert events[0].event_id == reply.id.removeprefix("chatcmpl-")
    assert events[0].outcome == usage_pb2.REQUEST_OUTCOME_COMPLETED
    assert (events[0].prompt_tokens, events[0].completion_tokens) == (3, 3)


async def test_stream_chunks_arrive_in_order_exactly_once(stub: Stub, workers: WorkerFactory) -> None:
    workers("stream", UPLION_ECHO_TOKEN_DELAY_MS="5")
    words = [f"w{i} " for i in range(40)]
    request = chat("stream", "".join(words), stream_options=chat_pb2.StreamOptions(include_usage=True))
    chunks = [c async for c in stub.StreamChatCompletion(request, timeout=30)]
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == words  # every word once, in order
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].HasField("finish_reason")]
    assert finishes == ["stop"]
    assert not chunks[-1].choices
    assert chunks[-1].usage.completion_tokens == 40
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)


async def test_legacy_completion_and_stream(stub: Stub, workers: WorkerFactory) -> None:
    workers("order")
    req = completions_pb2.CompletionRequest(model="order", prompt=text("one two three"), max_tokens=2)
    reply = await stub.CreateCompletion(req, timeout=30)
    assert reply.object == "text_completion"
    assert reply.choices[0].text == "one two "
    assert reply.choices[0].finish_reason == "length"
    req.max_tokens = 10
    chunks = [c async for c in stub.StreamCompletion(req, timeout=30)]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two three"


async def test_embeddings_float_and_base64(stub: Stub, workers: WorkerFactory) -> None:
    workers("embed")
    inputs = struct_pb2.Value()
    inputs.list_value.extend(["alpha", "beta gamma"])
    reply = await stub.CreateEmbedding(embeddings_pb2.EmbeddingRequest(model="embed", input=inputs), timeout=30)
    assert reply.object == "list"
    assert [d.index for d in reply.data] == [0, 1]
    vec = [v.number_value for v in reply.data[0].embedding.list_value.values]
    assert len(vec) == 16
    assert abs(sum(v * v for v in vec) - 1.0) < 1e-6
    assert reply.usage.prompt_tokens == 3
    b64 = await stub.CreateEmbedding(
        embeddings_pb2.EmbeddingRequest(model="embed", input=text("alpha"), encoding_format="base64"), timeout=30
    )
    assert b64.data[0].embedding.string_value


async def test_unknown_model_is_not_found_at_once(stub: Stub) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(chat("no-such-model", "hi"), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in (err.value.details() or "")
    assert time.monotonic() - started < 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetModel(models_pb2.GetModelRequest(id="no-such-model"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_refused_request_has_one_rejected_usage_event(stub: Stub, broker: Pulsar) -> None:
    # it releases what the edge's rate limiter reserved for the request (edge_request_id)
    model = f"no-such-model-{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CreateChatCompletion(chat(model, "hi"), metadata=(("x-request-id", "edge-req-1"),), timeout=10)
    [event] = await usage_events(broker, model, 1, refused=True)
    assert event.outcome == usage_pb2.REQUEST_OUTCOME_REJECTED
    assert (event.prompt_tokens, event.completion_tokens, event.attempts) == (0, 0, 0)
    assert event.edge_request_id == "edge-req-1"
    assert event.kind == usage_pb2.REQUEST_KIND_CHAT_COMPLETION


async def test_models_list_and_get(stub: Stub) -> None:
    listed = await stub.ListModels(models_pb2.ListModelsRequest(), timeout=5)
    assert listed.object == "list"
    assert "echo" in [m.id for m in listed.data]
    one = await stub.GetModel(models_pb2.GetModelRequest(id="echo"), timeout=5)
    assert (one.id, one.object, one.owned_by) == ("echo", "model", "uplion")


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (chat_pb2.ChatCompletionRequest(model="echo"), "messages"),
        (chat("", "hi"), "model"),
        (chat("echo", "hi", temperature=3.5), "temperature"),
        (chat("echo", "hi", n=0), "n"),
        (chat_pb2.ChatCompletionRequest(model="echo", messages=[chat_pb2.ChatMessage(role="wiz", content=text("x"))]),
         "messages[0].role"),
    ],
)  # fmt: skip
async def test_invalid_requests_are_rejected_before_any_worker(
    stub: Stub, request_: chat_pb2.ChatCompletionRequest, param: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(request_, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_json(err.value)["param"] == param


async def test_a_typed_create_response_asking_to_stream_is_refused_with_its_usage_event(
    stub: Stub, broker: Pulsar
) -> None:
    model = f"no-such-model-{uuid.uuid4().hex[:8]}"
    request = responses_pb2.CreateResponseRequest(model=model, stream=True)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateResponse(request, metadata=(("x-request-id", "edge-req-2"),), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [event] = await usage_events(broker, model, 1, refused=True)
    assert (event.edge_request_id, event.kind) == ("edge-req-2", usage_pb2.REQUEST_KIND_RESPONSE)
