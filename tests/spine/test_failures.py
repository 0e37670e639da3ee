"""Deadlines, cancellation, retries and the dead-letter path, on real Pulsar."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import grpc
import pulsar
import pulsar.asyncio as pa
import pytest

from uplion.core.topics import Topics
from uplion.devstack.platform import wait_metric
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import task_pb2, usage_pb2

from .conftest import WorkerFactory, pulsar_logger, usage_events
from .test_request_path import chat, error_json

if TYPE_CHECKING:
    from uplion.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub

TASKS = "uplion_worker_tasks_total"


async def test_deadline_expiry_stops_the_worker(stub: Stub, workers: WorkerFactory, broker: Pulsar) -> None:
    w = workers("deadline", UPLION_ECHO_TOKEN_DELAY_MS="200")
    # warm up: the worker's first task, with time to spare
    await stub.CreateChatCompletion(chat("deadline", "warm"), timeout=30)
    for i in range(3):  # the task's own deadline and the gateway's cancel race each time
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateChatCompletion(chat("deadline", " ".join(["word"] * 50)), timeout=1.0)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # the worker stops generating: by the cancel the gateway publishes, or by the task's deadline
        await asyncio.to_thread(wait_metric, w, TASKS, 2 + i, 15)
    assert w.metric(TASKS, outcome="cancelled") + w.metric(TASKS, outcome="expired") == 3
    assert w.metric(TASKS, outcome="ok") == 1  # only the warm-up

    # ... and loses nothing doing so: every slot still asks for work, nothing is left unacknowledged
    # (the client sends its acknowledgements in groups every 100 ms: the broker hears the last soon after)
    def permits_and_unacked() -> tuple[int, int]:
        stats: Any = broker.admin_get("/admin/v2/persistent/public/default/model-deadline/stats")
        [consumer] = stats["subscriptions"]["model-deadline-subscription"]["consumers"]
        return consumer["availablePermits"], consumer["unackedMessages"]

    def settled(timeout: float = 10) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while (now := permits_and_unacked()) != (4, 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        return now

    assert await asyncio.to_thread(settled) == (4, 0)
    events = await usage_events(broker, "deadline", 4)
    assert [e.outcome for e in events].count(usage_pb2.REQUEST_OUTCOME_COMPLETED) == 1
    for event in (e for e in events if e.outcome != usage_pb2.REQUEST_OUTCOME_COMPLETED):
        assert event.outcome in (
            usage_pb2.REQUEST_OUTCOME_DEADLINE_EXCEEDED,
            usage_pb2.REQUEST_OUTCOME_CLIENT_CANCELLED,
        )
        assert (event.prompt_tokens, event.completion_tokens) == (0, 0)  # nothing reached the client


async def test_worker_drops_a_task_whose_deadline_passed_in_the_queue(stub: Stub, workers: WorkerFactory) -> None:
    # no worker: both time out in the queue (the first, with more time, also warms the producer)
    for timeout in (5.0, 1.0):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateChatCompletion(chat("expired", "too late"), timeout=timeout)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    w = workers("expired")
    await asyncio.to_thread(wait_metric, w, TASKS, 1, 15, outcome="skipped")
    assert w.metric(TASKS, outcome="ok") == 0


async def test_client_cancel_stops_generation(stub: Stub, workers: WorkerFactory, broker: Pulsar) -> None:
    w = workers("cancel", UPLION_ECHO_TOKEN_DELAY_MS="100")
    call = stub.StreamChatCompletion(chat("cancel", " ".join(f"t{i}" for i in range(100))), timeout=60)
    got = 0
    async for chunk in call:
        if chunk.choices and chunk.choices[0].delta.content:
            got += 1
            if got == 3:
                break
    call.cancel()
    await asyncio.to_thread(wait_metric, w, TASKS, 1, 15, outcome="cancelled")
    [event] = await usage_events(broker, "cancel", 1)
    assert event.outcome == usage_pb2.REQUEST_OUTCOME_CLIENT_CANCELLED
    assert 3 <= event.completion_tokens < 100  # billed for what was delivered, not the rest
    assert event.prompt_tokens == 100


async def test_retryable_failures_end_on_the_dead_letter_topic(
    stub: Stub, workers: WorkerFactory, broker: Pulsar
) -> None:
    w = workers("dlq", UPLION_MAX_ATTEMPTS="3", UPLION_RETRY_BACKOFF_MS="200")
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(chat("dlq", "[[fail:unavailable]] please"), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "gave up after 3 attempts" in (err.value.details() or "")
    assert time.monotonic() - started >= 0.6  # backed off 200 ms, then 400 ms
    assert error_json(err.value)["code"] == "retries_exhausted"
    assert w.metric(TASKS, outcome="retry") == 2
    assert w.metric(TASKS, outcome="dead_letter") == 1
    client = pa.Client(broker.service_url, logger=pulsar_logger(), authentication=broker.authentication())
    reader = await client.create_reader(Topics().dead_letters("dlq"), pulsar.MessageId.earliest)
    msg = await asyncio.wait_for(reader.read_next(), 10)
    parked = task_pb2.Task.FromString(msg.data())
    assert parked.chat.messages[0].content.string_value == "[[fail:unavailable]] please"
    assert "unavailable" in msg.properties()["reason"]
    await client.close()
    [event] = await usage_events(broker, "dlq", 1)
    assert event.outcome == usage_pb2.REQUEST_OUTCOME_FAILED
    assert event.attempts == 3
    assert (event.prompt_tokens, event.completion_tokens) == (0, 0)


async def test_permanent_error_is_reported_and_does_not_poison_the_worker(stub: Stub, workers: WorkerFactory) -> None:
    w = workers("fatal")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(chat("fatal", "[[fail:auth]]"), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_json(err.value)["code"] == "upstream_authentication"
    assert w.metric(TASKS, outcome="retry") == 0
    reply = await stub.CreateChatCompletion(chat("fatal", "still fine"), timeout=30)
    assert reply.choices[0].message.content == "still fine"


async def test_failure_after_first_chunk_arrives_in_band(stub: Stub, workers: WorkerFactory, broker: Pulsar) -> None:
    workers("midstream")
    chunks = [c async for c in stub.StreamChatCompletion(chat("midstream", "a b c d e [[fail-after:3]]"), timeout=30)]
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == ["a ", "b ", "c "]
    assert chunks[-1].HasField("error")
    assert chunks[-1].error.type == "api_error"
    assert "after 3 tokens" in chunks[-1].error.message
    [event] = await usage_events(broker, "midstream", 1)
    assert event.outcome == usage_pb2.REQUEST_OUTCOME_FAILED
    assert event.completion_tokens == 3


async def test_request_waits_for_a_worker_that_starts_later(stub: Stub, workers: WorkerFactory) -> None:
    pending = asyncio.ensure_future(stub.CreateChatCompletion(chat("late", "worth the wait"), timeout=60))
    await asyncio.sleep(2)
    assert not pending.done()  # no worker yet: held, not failed
    await asyncio.to_thread(workers, "late")
    reply = await asyncio.wait_for(pending, 60)
    assert reply.choices[0].message.content == "worth the wait"


async def test_stream_request_is_rejected_on_the_unary_rpc(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateChatCompletion(chat("echo", "x", stream=True), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_sigterm_lets_the_running_task_finish(stub: Stub, workers: WorkerFactory) -> None:
    w = workers("drain", UPLION_ECHO_TOKEN_DELAY_MS="100")
    pending = asyncio.ensure_future(stub.CreateChatCompletion(chat("drain", "a b c d e f g h i j"), timeout=30))
    await asyncio.to_thread(wait_metric, w, "uplion_worker_inflight", 1, 15)
    os.killpg(w.proc.pid, signal.SIGTERM)
    reply = await pending
    assert reply.choices[0].message.content == "a b c d e f g h i j"
    assert await asyncio.to_thread(w.proc.popen.wait, 30) == 0
