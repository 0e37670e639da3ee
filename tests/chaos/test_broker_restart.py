"""The Pulsar broker stopped for 10 s and started again on its data, while usage events keep coming:
billing stays up, reconnects by itself and applies every event exactly once (events published
before, after, and again as duplicates across the restart). Its own broker: stopping the session's
would stall every other suite."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pulsar
import pytest

from uplion.core.migrations import migrate
from uplion.core.subscriptions import BILLING_SUBSCRIPTION
from uplion.devstack.postgres import Postgres
from uplion.devstack.pulsar import Pulsar, restart_pulsar, start_pulsar

from ..billing.conftest import BillingEnv, event
from ..billing.test_billing import set_price
from ..databases import new_database


@pytest.fixture(scope="module")
def restartable_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Pulsar]]:
    brokers = [start_pulsar(tmp_path_factory.mktemp("restarted-broker"))]
    yield brokers  # the test appends the restarted one
    for b in brokers:
        b.stop()


def publish_all(producer: pulsar.Producer, payloads: list[bytes], within_s: float = 120) -> None:
    """Send each payload, retrying one that fails while the producer reconnects."""
    deadline = time.monotonic() + within_s
    for p in payloads:
        while True:
            try:
                producer.send(p)
                break
            except pulsar.PulsarException:
                assert time.monotonic() < deadline, "the producer never reconnected"
                time.sleep(0.5)


async def applied(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT count(*) n, coalesce(sum(prompt_tokens), 0) p FROM usage_events")
    finally:
        await conn.close()
    assert row is not None
    return int(row["n"]), int(row["p"])


async def test_billing_applies_every_event_once_across_a_broker_restart(
    restartable_broker: list[Pulsar], postgres: Postgres, tmp_path: Path
) -> None:
    broker = restartable_broker[0]
    ns = f"restart_{uuid.uuid4().hex[:8]}"
    broker.create_namespace(ns)
    dsn = await asyncio.to_thread(new_database, postgres, ns)
    conn = await asyncpg.connect(dsn)
    await migrate(conn, "uplion.billing", "billing")
    await conn.close()
    await set_price(dsn, "m", 1000, 1000, 0)
    env = BillingEnv(ns, dsn, broker, tmp_path)
    billing = env.start(UPLION_BILLING_BATCH_DELAY_MS="50")
    client = pulsar.Client(broker.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
                           operation_timeout_seconds=5, authentication=broker.authentication())  # fmt: skip
    try:
        producer = client.create_producer(env.topics.usage(), batching_enabled=False, send_timeout_millis=3000)
        before = [event(f"b-{i}", prompt=i + 1).SerializeToString() for i in range(300)]
        after = [event(f"a-{i}", prompt=1000 + i).SerializeToString() for i in range(300)]
        publish_all(producer, before)

        deadline = time.monotonic() + 60
        while (await applied(dsn))[0] < len(before):
            assert time.monotonic() < deadline, "billing did not apply the first events"
            await asyncio.sleep(0.2)

        broker.stop()
        await asyncio.sleep(10)
        assert billing.alive(), billing.log_tail()  # it waits for the broker, it does not die
        restartable_broker.append(await asyncio.to_thread(restart_pulsar, broker))
        # the same client and producer: they reconnect to the same address by themselves
        await asyncio.to_thread(publish_all, producer, after + before[:50])  # and 50 duplicates

        expected = (len(before) + len(after), sum(range(1, 301)) + sum(range(1000, 1300)))
        deadline = time.monotonic() + 120
        while (got := await applied(dsn)) != expected:
            assert got[0] <= expected[0], f"more events applied than sent: {got}"
            assert time.monotonic() < deadline, f"applied {got}, expected {expected}"
            await asyncio.sleep(0.5)
        assert billing.alive(), billing.log_tail()

        # billing acknowledges a batch cumulatively after its commit, and the client sends grouped acks
        # (every 100 ms): the backlog reaches 0 shortly after the last batch is applied, not at once
        # (a clean-clone run read 250 right after the database showed every event applied)
        def backlog() -> int:
            stats = restartable_broker[-1].admin_get(f"/admin/v2/persistent/public/{ns}/usage/stats")
            return int(stats["subscriptions"][BILLING_SUBSCRIPTION]["msgBacklog"])  # type: ignore[index]

        deadline = time.monotonic() + 30
        while (left := await asyncio.to_thread(backlog)) != 0:
            assert time.monotonic() < deadline, f"billing's backlog stayed at {left}"
            await asyncio.sleep(0.2)
    finally:
        client.close()
        billing.stop()
