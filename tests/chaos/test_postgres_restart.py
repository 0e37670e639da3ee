"""PostgreSQL stopped and started again while usage events keep arriving: billing stays up, waits,
and then applies every event exactly once (its own PostgreSQL: stopping the session's would stall
every other test)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import asyncpg
import pulsar

from uplion.core.migrations import migrate
from uplion.core.pulsar_auth import BILLING, billing_permissions
from uplion.core.subscriptions import BILLING_SUBSCRIPTION
from uplion.core.topics import Topics
from uplion.devstack.platform import service_env
from uplion.devstack.postgres import start_postgres
from uplion.devstack.procs import free_port, spawn, wait_until
from uplion.devstack.pulsar import Pulsar, pulsar_credentials
from uplion.devstack.redis import Redis
from uplion.v1 import common_pb2, usage_pb2


def _event(i: int) -> bytes:
    e = usage_pb2.UsageEvent(
        event_id=f"pg-restart-{i}", model="m", caller=common_pb2.Caller(user_id="u1", token_id="t1"),
        kind=usage_pb2.REQUEST_KIND_CHAT_COMPLETION, outcome=usage_pb2.REQUEST_OUTCOME_COMPLETED,
        prompt_tokens=10, completion_tokens=20,
    )  # fmt: skip
    e.started_at.seconds = 1_790_000_000 + i
    e.finished_at.seconds = 1_790_000_001 + i
    return e.SerializeToString()


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM usage_events"))
    finally:
        await conn.close()


async def _wait_for(dsn: str, n: int, within_s: float = 60) -> int:
    loop = asyncio.get_running_loop()
    until, seen = loop.time() + within_s, -1
    while loop.time() < until:
        seen = await _count(dsn)
        if seen >= n:
            await asyncio.sleep(1.0)  # a duplicate would show up now
            return await _count(dsn)
        await asyncio.sleep(0.2)
    return seen


async def test_billing_waits_out_a_postgres_restart_and_applies_every_event_once(
    broker: Pulsar, redis_server: Redis, tmp_path: Path
) -> None:
    pg = start_postgres(tmp_path / "pg")
    ns = f"pgrestart_{uuid.uuid4().hex[:6]}"
    broker.create_namespace(ns)
    topic = Topics("public", ns).usage()
    conn = await asyncpg.connect(pg.dsn)
    await migrate(conn, "uplion.billing", "billing")
    await conn.execute("INSERT INTO model_prices VALUES ('m', to_timestamp(0), 1000, 3000)")
    await conn.close()
    client = pulsar.Client(broker.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
                           authentication=broker.authentication())  # fmt: skip
    client.subscribe(topic, BILLING_SUBSCRIPTION, consumer_type=pulsar.ConsumerType.Failover).close()
    producer = client.create_producer(topic)
    pulsar_env = {"UPLION_PULSAR_URL": broker.service_url, "UPLION_PULSAR_NAMESPACE": ns}
    credentials = pulsar_credentials(broker.service_url, pulsar_env, BILLING, billing_permissions)
    env = service_env({**pulsar_env, **credentials,
                       "UPLION_DATABASE_URL": pg.dsn, "UPLION_METRICS_PORT": str(free_port()),
                       "UPLION_BILLING_BATCH_DELAY_MS": "50", "UPLION_REDIS_URL": redis_server.url,
                       # the spend mirror is rebuilt from PostgreSQL often, so one falls into the outage
                       "UPLION_BILLING_RECONCILE_S": "0.5"})  # fmt: skip
    billing = spawn("billing", [sys.executable, "-m", "uplion.billing"], tmp_path / "billing.log", env=env)
    try:
        wait_until(billing, lambda: "consuming usage events" in billing.log_path.read_text(), 60)
        for i in range(100):
            producer.send(_event(i))
        assert await _wait_for(pg.dsn, 100) == 100

        pg.stop()  # PostgreSQL goes away; events keep coming (one of them twice, as a redelivery would)
        for i in [*range(100, 300), 150]:
            producer.send(_event(i))
        await asyncio.sleep(3)
        assert billing.alive(), billing.log_tail()  # billing waits; it does not exit

        pg = start_postgres(tmp_path / "pg", port=pg.port)
        assert await _wait_for(pg.dsn, 300) == 300  # every event once, none twice
        assert billing.alive(), billing.log_tail()
        conn = await asyncpg.connect(pg.dsn)
        try:
            # the aggregates agree with the events: nothing counted twice
            spent = await conn.fetchval("SELECT sum(prompt_tokens + completion_tokens) FROM usage_events")
            assert spent == 300 * 30
        finally:
            await conn.close()
    finally:
        billing.stop()
        producer.close()
        client.close()
        pg.stop()
