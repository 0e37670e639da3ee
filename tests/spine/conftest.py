"""The request path under test: a real gateway and real workers (subprocesses) on real Pulsar."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pulsar
import pulsar as pulsar_module
import pulsar.asyncio as pa
import pytest

from uplion.core.topics import Topics
from uplion.devstack.platform import Service, start_gateway, start_worker
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import inference_pb2_grpc, usage_pb2

# Every model the spine tests use; each test owns its model so topics never mix.
MODELS = [
    "echo", "stream", "embed", "deadline", "expired", "cancel", "dlq", "fatal", "late", "load", "remote",
    "remote-down", "order", "midstream", "kill", "minilm", "tiny-lm", "drain", "remote-plain", "remote-nousage",
    "remote-inband", "remote-down-inband", "multi", "remote-rich", "remote-misnamed", "remote-capped",
]  # fmt: skip
# models the gateway's static configuration says a remote backend serves (remote-misnamed is served by
# an echo worker: the worker itself refuses what it cannot pass on)
REMOTE_MODELS = ["remote-rich", "remote-misnamed"]


@pytest.fixture(scope="session")
def spine_dir(run_dir: Path) -> Path:
    d = run_dir / "spine"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def gateway(broker: Pulsar, spine_dir: Path) -> Iterator[Service]:
    # a durable subscription (as billing will have) keeps usage events retained for the tests
    client = pulsar_module.Client(broker.service_url, logger=pulsar_logger(), authentication=broker.authentication())
    client.subscribe(Topics().usage(), "tests-usage-audit").close()
    client.close()
    gw = start_gateway(spine_dir, broker.service_url, MODELS, UPLION_DEFAULT_TIMEOUT_S="60",
                       UPLION_REMOTE_MODELS=",".join(REMOTE_MODELS))  # fmt: skip
    yield gw
    gw.stop()


@pytest.fixture
async def stub(gateway: Service) -> AsyncIterator[inference_pb2_grpc.InferenceServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


WorkerFactory = Callable[..., Service]


@pytest.fixture
def workers(broker: Pulsar, spine_dir: Path) -> Iterator[WorkerFactory]:
    started: list[Service] = []

    def start(model: str, model_type: str = "echo", **env: str) -> Service:
        svc = start_worker(spine_dir, broker.service_url, model, model_type, **env)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


async def usage_events(
    broker: Pulsar, model: str, expected: int, wait_s: float = 30.0, refused: bool | None = False
) -> list[usage_pb2.UsageEvent]:
    """Every usage event for `model` on the usage topic (of requests the gateway refused when
    `refused`, of the others when False, of all when None), waiting until at least `expected` arrived and then a little
    longer, so that an extra (duplicate) event would be seen too."""
    client = pa.Client(broker.service_url, logger=pulsar_logger(), authentication=broker.authentication())
    reader = await client.create_reader(Topics().usage(), pulsar.MessageId.earliest)
    events: list[usage_pb2.UsageEvent] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    settle_until: float | None = None
    try:
        while True:
            now = loop.time()
            limit = settle_until if settle_until is not None else deadline
            if now >= limit:
                break
            try:
                msg = await asyncio.wait_for(reader.read_next(), limit - now)
            except TimeoutError:
                break
            event = usage_pb2.UsageEvent.FromString(msg.data())
            rejected = event.outcome == usage_pb2.REQUEST_OUTCOME_REJECTED
            if event.model == model and (refused is None or rejected == refused):
                events.append(event)
                if len(events) >= expected and settle_until is None:
                    settle_until = loop.time() + 2.0
    finally:
        await client.close()
    return events


def pulsar_logger() -> pulsar.ConsoleLogger:
    return pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)
