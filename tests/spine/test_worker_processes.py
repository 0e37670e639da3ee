"""A worker pod on more than one core (UPLION_WORKER_PROCESSES): several processes, each with its
share of the slots and its own consumer on the model's Shared subscription."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import psutil

from uplion.devstack.pulsar import Pulsar

from .conftest import WorkerFactory
from .test_request_path import chat

if TYPE_CHECKING:
    from uplion.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub

POD = "multi-pod"


def _consumers(broker: Pulsar) -> list[dict[str, Any]]:
    stats: Any = broker.admin_get("/admin/v2/persistent/public/default/model-multi/stats")
    return list(stats["subscriptions"]["model-multi-subscription"]["consumers"])


def _wait_for_consumers(broker: Pulsar, names: list[str], timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        consumers = _consumers(broker)
        if sorted(c["consumerName"] for c in consumers) == names or time.monotonic() > deadline:
            return consumers
        time.sleep(0.2)


async def test_a_pod_serves_from_two_processes_restarts_a_dead_one_and_drains_on_sigterm(
    stub: Stub, workers: WorkerFactory, broker: Pulsar
) -> None:
    w = workers("multi", UPLION_WORKER_PROCESSES="2", UPLION_MAX_PROCESS_NUM="2", UPLION_ECHO_TOKEN_DELAY_MS="20",
                UPLION_WORKER_ID=POD)  # fmt: skip
    children = psutil.Process(w.proc.pid).children()
    assert len(children) == 2
    replies = await asyncio.gather(
        *(stub.CreateChatCompletion(chat("multi", f"a b c {i}"), timeout=30) for i in range(8))
    )
    assert [r.choices[0].message.content for r in replies] == [f"a b c {i}" for i in range(8)]
    consumers = _wait_for_consumers(broker, [f"{POD}-0", f"{POD}-1"])
    assert sorted(c["consumerName"] for c in consumers) == [f"{POD}-0", f"{POD}-1"]
    assert all(c["msgOutCounter"] >= 1 for c in consumers), consumers  # both processes took tasks

    # a process that dies is restarted; meanwhile the other serves
    children[0].kill()
    reply = await stub.CreateChatCompletion(chat("multi", "still here"), timeout=30)
    assert reply.choices[0].message.content == "still here"
    consumers = await asyncio.to_thread(_wait_for_consumers, broker, [f"{POD}-0", f"{POD}-1"])
    assert len(consumers) == 2
    assert len(psutil.Process(w.proc.pid).children()) == 2

    # SIGTERM to the pod's main process (as the kubelet sends it) drains the running tasks
    pending = asyncio.ensure_future(stub.CreateChatCompletion(chat("multi", "a b c d e f g h i j"), timeout=30))
    await asyncio.sleep(0.1)
    os.kill(w.proc.pid, signal.SIGTERM)
    reply = await pending
    assert reply.choices[0].message.content == "a b c d e f g h i j"
    assert await asyncio.to_thread(w.proc.popen.wait, 30) == 0
