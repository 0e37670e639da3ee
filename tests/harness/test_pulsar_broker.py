"""The broker under test is real Apache Pulsar: admin API, Shared dispatch, redelivery on crash."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import uuid
from pathlib import Path

import pulsar
import pulsar.asyncio as pa
import pytest

from uplion.core.pulsar_auth import SUPERUSER
from uplion.devstack.procs import spawn
from uplion.devstack.pulsar import PULSAR_VERSION, Pulsar, check_free_space

QUIET = pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)


def _topic(prefix: str) -> str:
    return f"persistent://public/default/{prefix}-{uuid.uuid4().hex[:8]}"


def test_broker_reports_apache_pulsar(broker: Pulsar) -> None:
    # Only a real broker serves the admin REST API (pulsar-lite has none) and reports its version.
    assert broker.admin_text("/admin/v2/brokers/version") == PULSAR_VERSION
    assert broker.admin_get("/admin/v2/clusters") == ["standalone"]
    assert "public/default" in broker.admin_get("/admin/v2/namespaces/public")  # type: ignore[operator]


def test_bookie_is_writable_and_low_disk_is_refused_with_the_reason(broker: Pulsar, tmp_path: Path) -> None:
    # A read-only bookie (its default once 95 % of the disk is used) lets the broker start, but every
    # new topic or cursor then times out; the devstack raises that threshold and refuses a full disk.
    client = pulsar.Client(broker.service_url, logger=QUIET, operation_timeout_seconds=10,
                           authentication=broker.authentication())  # fmt: skip
    try:
        topic = _topic("writable")
        client.subscribe(topic, "writable-sub").close()
        client.create_producer(topic).send(b"x")
    finally:
        client.close()
    with pytest.raises(RuntimeError, match="MiB free under"):
        check_free_space(tmp_path, minimum=1 << 62)


async def test_shared_subscription_spreads_300_messages_over_3_consumers(broker: Pulsar) -> None:
    client = pa.Client(broker.service_url, logger=QUIET, authentication=broker.authentication())
    topic = _topic("spread")
    consumers = [
        await client.subscribe(
            topic, "spread-sub", consumer_type=pulsar_shared(), receiver_queue_size=0, consumer_name=f"c{i}"
        )
        for i in range(3)
    ]
    producer = await client.create_producer(topic, batching_enabled=False)
    await asyncio.gather(*(producer.send(f"m{i}".encode()) for i in range(300)))

    received: list[list[str]] = [[], [], []]

    async def drain(i: int) -> None:
        while sum(map(len, received)) < 300:
            try:
                msg = await asyncio.wait_for(consumers[i].receive(), 5)
            except TimeoutError:
                return
            received[i].append(msg.data().decode())
            await asyncio.sleep(0.002)  # a little work, so dispatch has to share
            await consumers[i].acknowledge(msg)

    await asyncio.gather(*(drain(i) for i in range(3)))
    await client.close()
    everything = [m for r in received for m in r]
    assert sorted(everything) == sorted(f"m{i}" for i in range(300))  # each exactly once
    assert all(len(r) > 0 for r in received), [len(r) for r in received]


CONSUMER_SCRIPT = textwrap.dedent(
    """
    import os, sys, pulsar
    client = pulsar.Client(sys.argv[1], logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
                           authentication=pulsar.AuthenticationToken(os.environ["UPLION_PULSAR_TOKEN"]))
    consumer = client.subscribe(sys.argv[2], "crash-sub", consumer_type=pulsar.ConsumerType.Shared,
                                receiver_queue_size=0)
    msg = consumer.receive()
    print("GOT", msg.data().decode(), msg.message_id(), flush=True)
    import time
    time.sleep(600)  # holds the message unacknowledged until killed
    """
)


async def test_unacked_message_of_sigkilled_consumer_is_redelivered(broker: Pulsar, tmp_path: Path) -> None:
    topic = _topic("crash")
    client = pa.Client(broker.service_url, logger=QUIET, authentication=broker.authentication())
    # create the subscription first so the message is retained for it
    survivor = await client.subscribe(topic, "crash-sub", consumer_type=pulsar_shared(), receiver_queue_size=0)
    await survivor.close()

    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER_SCRIPT)
    env = {**os.environ, "UPLION_PULSAR_TOKEN": broker.token(SUPERUSER)}
    victim = spawn("victim", [sys.executable, str(script), broker.service_url, topic], tmp_path / "victim.log", env=env)
    try:
        producer = await client.create_producer(topic, batching_enabled=False)
        await producer.send(b"the-task")
        for _ in range(300):
            if "GOT the-task" in victim.log_path.read_text():
                break
            await asyncio.sleep(0.1)
        assert "GOT the-task" in victim.log_path.read_text(), victim.log_tail()

        survivor = await client.subscribe(topic, "crash-sub", consumer_type=pulsar_shared(), receiver_queue_size=0)
        victim.kill()  # SIGKILL: no close, no ack, no nack
        msg = await asyncio.wait_for(survivor.receive(), 30)
        assert msg.data() == b"the-task"
        # the very message the victim held (a crash does not bump redelivery_count: only nacks and
        # ack timeouts do, which is why the worker also bounds attempts itself)
        assert f"GOT the-task {msg.message_id()}" in victim.log_path.read_text()
        await survivor.acknowledge(msg)
    finally:
        victim.kill()
        await client.close()


def pulsar_shared() -> pulsar.ConsumerType:
    return pulsar.ConsumerType.Shared
