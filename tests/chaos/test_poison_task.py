"""A poison task: a request that kills every worker process that takes it (here the echo backend's
fault injection, UPLION_ECHO_CRASH_ON, ends the process with os._exit, as a segfault or an
out-of-memory kill would). The broker does not count a redelivery after its consumer died, so uplion
counts the crashes itself (worker/uplion/worker/journal.py; the gateway's cursor): after
UPLION_MAX_WORKER_CRASHES (3) the client gets a clear error instead of waiting for its deadline, the
task is parked on the model's dead-letter topic, the workers (restarted by their supervisors) serve
the other requests, and every request has exactly one usage event.

Two worker pods of two processes each (UPLION_WORKER_PROCESSES=2: the supervisor restarts a dead
process, which then reports the attempt its predecessor died in)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pulsar
import pulsar.asyncio as pa
import pytest
from google.protobuf import struct_pb2

from tests.kube_api import eventually
from uplion.core import pulsar_auth
from uplion.core.topics import Topics
from uplion.devstack.platform import Service, start_gateway, start_worker
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import chat_pb2, inference_pb2_grpc, task_pb2, usage_pb2

MODEL = "poison-echo"
MARKER = "[[poison-test-crash]]"
AUDIT = "poison-usage-audit"
PODS = ("poison-pod-a", "poison-pod-b")
CLIENT_TIMEOUT_S = 120  # the task's deadline: the poison request must end well before it, with its own error


@pytest.fixture(scope="module")
def stack(broker: Pulsar, run_dir: Path) -> Iterator[tuple[Service, list[Service]]]:
    work = run_dir / "poison"
    work.mkdir()
    # a durable subscription of the test's own keeps the usage events for it to read
    client = pulsar.Client(broker.service_url, authentication=broker.authentication(),
                           logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))  # fmt: skip
    client.subscribe(Topics().usage(), AUDIT, initial_position=pulsar.InitialPosition.Latest).close()
    client.close()
    gateway = start_gateway(work, broker.service_url, [MODEL])
    pods = [
        start_worker(work, broker.service_url, MODEL, UPLION_WORKER_ID=pod, UPLION_WORKER_PROCESSES="2",
                     UPLION_MAX_PROCESS_NUM="2", UPLION_ECHO_CRASH_ON=MARKER, UPLION_ECHO_TOKEN_DELAY_MS="5")
        for pod in PODS
    ]  # fmt: skip
    yield gateway, pods
    for svc in [*pods, gateway]:
        svc.stop()


@pytest.fixture
async def stub(stack: tuple[Service, list[Service]]) -> AsyncIterator[inference_pb2_grpc.InferenceServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack[0].port}") as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def chat(content: str) -> chat_pb2.ChatCompletionRequest:
    message = chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value=content))
    return chat_pb2.ChatCompletionRequest(model=MODEL, messages=[message])


def error_of(err: grpc.aio.AioRpcError) -> dict[str, Any]:
    raw: Any = err.trailing_metadata() or ()
    return dict(json.loads({str(k): str(v) for k, v in raw}["x-uplion-error"])["error"])


async def poisoned(stub: inference_pb2_grpc.InferenceServiceAsyncStub, stream: bool) -> grpc.aio.AioRpcError:
    request = chat(f"this request kills its worker {MARKER} (streamed: {stream})")

    async def call() -> None:
        if stream:
            async for _ in stub.StreamChatCompletion(request, timeout=CLIENT_TIMEOUT_S):
                pass
        else:
            await stub.CreateChatCompletion(request, timeout=CLIENT_TIMEOUT_S)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call()
    return err.value


async def served(
    stub: inference_pb2_grpc.InferenceServiceAsyncStub, tag: str, at_least: int, meanwhile: list[asyncio.Task[Any]]
) -> list[str]:
    """Ordinary requests, three at a time, until `meanwhile` is done and at least `at_least` were sent;
    the answer of each (its own words)."""
    answers: list[str] = []
    while len(answers) < at_least or not all(t.done() for t in meanwhile):
        requests = [chat(f"{tag} request {len(answers) + k} is fine") for k in range(3)]
        replies = await asyncio.gather(*(stub.CreateChatCompletion(r, timeout=CLIENT_TIMEOUT_S) for r in requests))
        answers += [r.choices[0].message.content for r in replies]
    return answers


def expected(tag: str, answers: list[str]) -> list[str]:
    return [f"{tag} request {i} is fine" for i in range(len(answers))]


def consumers(broker: Pulsar) -> list[str]:
    stats: Any = broker.admin_get(f"/admin/v2/persistent/public/default/model-{MODEL}/stats")
    return sorted(c["consumerName"] for c in stats["subscriptions"][f"model-{MODEL}-subscription"]["consumers"])


ALL_PROCESSES = sorted(f"{pod}-{i}" for pod in PODS for i in (0, 1))


def all_back(broker: Pulsar, pods: list[Service]) -> bool:
    """Every pod alive with both its processes, each subscribed."""
    alive = all(pod.proc.alive() and len(psutil.Process(pod.proc.pid).children()) == 2 for pod in pods)
    return alive and consumers(broker) == ALL_PROCESSES


async def read_all(broker: Pulsar, topic: str, subscription: str | None, settle_s: float = 3.0) -> list[pulsar.Message]:
    """Every message on `topic` (from a durable subscription's position, or the topic's start), until
    none has come for `settle_s`: a duplicate would be seen too."""
    client = pa.Client(broker.service_url, authentication=broker.authentication(),
                       logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))  # fmt: skip
    messages: list[pulsar.Message] = []
    try:
        if subscription is None:
            reader = await client.create_reader(topic, pulsar.MessageId.earliest)
            while True:
                try:
                    messages.append(await asyncio.wait_for(reader.read_next(), settle_s))
                except TimeoutError:
                    return messages
        consumer = await client.subscribe(topic, subscription)
        while True:
            try:
                msg = await asyncio.wait_for(consumer.receive(), settle_s)
            except TimeoutError:
                return messages
            messages.append(msg)
            await consumer.acknowledge(msg)
        await consumer.unsubscribe()
    finally:
        await client.close()


async def test_a_task_that_kills_every_worker_is_set_aside_after_three_crashes_and_the_rest_is_served(
    stub: inference_pb2_grpc.InferenceServiceAsyncStub, stack: tuple[Service, list[Service]], broker: Pulsar
) -> None:
    _, pods = stack
    assert await asyncio.to_thread(consumers, broker) == ALL_PROCESSES

    # two poison requests (one streamed) while ordinary requests keep coming
    poison = [asyncio.create_task(poisoned(stub, stream)) for stream in (False, True)]
    answers = await served(stub, "during", 12, poison)
    errors = [t.result() for t in poison]

    for err in errors:
        assert err.code() == grpc.StatusCode.INTERNAL  # an HTTP 500 at the edge; not the deadline
        assert error_of(err) == {
            "message": "The request crashed 3 workers; it was set aside and will not be retried.",
            "type": "api_error", "param": None, "code": "task_crashed_workers",
        }  # fmt: skip
    assert answers == expected("during", answers)

    # both tasks sit on the dead-letter topic, once each, with the reason
    parked = await read_all(broker, Topics().dead_letters(MODEL), None)
    tasks = [task_pb2.Task.FromString(m.data()) for m in parked]
    assert len(parked) == 2, [m.properties() for m in parked]
    assert sorted(t.chat.messages[0].content.string_value for t in tasks) == [
        f"this request kills its worker {MARKER} (streamed: False)",
        f"this request kills its worker {MARKER} (streamed: True)",
    ]
    for msg, task in zip(parked, tasks, strict=True):
        props = msg.properties()
        assert props["reason"] == "poison: the request crashed 3 workers"
        assert props["task_id"] == task.task_id

    # the workers are back: every process restarted and subscribed, and they serve
    assert await asyncio.to_thread(eventually, lambda: all_back(broker, pods), 60)
    after = await served(stub, "after", 6, [])
    assert after == expected("after", after)

    # one usage event per request: the answered ones completed, the two poison requests failed and
    # billed nothing
    events = [usage_pb2.UsageEvent.FromString(m.data()) for m in await read_all(broker, Topics().usage(), AUDIT)]
    mine = [e for e in events if e.model == MODEL]
    assert len({e.event_id for e in mine}) == len(mine) == len(answers) + len(after) + 2
    failed = [e for e in mine if e.outcome == usage_pb2.REQUEST_OUTCOME_FAILED]
    assert sorted(e.event_id for e in failed) == sorted(t.task_id for t in tasks)
    assert all((e.prompt_tokens, e.completion_tokens) == (0, 0) and e.attempts >= 3 for e in failed)
    assert sum(e.outcome == usage_pb2.REQUEST_OUTCOME_COMPLETED for e in mine) == len(answers) + len(after)


async def test_a_worker_that_starts_after_the_poison_mark_parks_the_task_without_running_it(
    broker: Pulsar, run_dir: Path
) -> None:
    """The mark was published while no worker of the model ran (they were all down, crashed by the
    task): the worker that starts reads the recent cancels first (UPLION_CANCEL_LOOKBACK_S), so the
    task it is then delivered is parked, not run (it would end this worker too)."""
    model = "poison-late"
    work = run_dir / "poison-late"
    work.mkdir()
    topics = Topics(reply_namespace=pulsar_auth.reply_namespace("default"))
    message = chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value=f"late {MARKER}"))
    task = task_pb2.Task(task_id="late-poison-1", model=model, reply_topic=topics.replies("poison-late-test"),
                         chat=chat_pb2.ChatCompletionRequest(model=model, messages=[message]))  # fmt: skip
    task.deadline.FromSeconds(int(time.time()) + 120)
    client = pa.Client(broker.service_url, authentication=broker.authentication(),
                       logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))  # fmt: skip
    try:
        marks = await client.create_producer(topics.cancels(model))
        mark = task_pb2.CancelTask(task_id=task.task_id, reason="the request crashed 3 workers", poison=True)
        await marks.send(mark.SerializeToString())
        worker = await asyncio.to_thread(start_worker, work, broker.service_url, model, UPLION_ECHO_CRASH_ON=MARKER)
        try:
            replies = await client.create_reader(task.reply_topic, pulsar.MessageId.latest)
            tasks = await client.create_producer(topics.tasks(model), batching_enabled=False)
            await tasks.send(task.SerializeToString())
            event = task_pb2.TaskEvent.FromString((await asyncio.wait_for(replies.read_next(), 60)).data())
            assert (event.task_id, event.error.kind, event.error.retryable) == (
                task.task_id, task_pb2.TASK_ERROR_KIND_DEAD_LETTERED, False
            )  # fmt: skip
            assert worker.proc.alive()  # it never ran the task
        finally:
            worker.stop()
    finally:
        await client.close()
    [parked] = await read_all(broker, topics.dead_letters(model), None)
    assert task_pb2.Task.FromString(parked.data()) == task
    assert parked.properties()["reason"] == "poison: the request crashed 3 workers"
