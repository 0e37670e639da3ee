"""Billing under test: the real service (subprocess) on real Pulsar, PostgreSQL; one namespace and one
database per test so nothing mixes."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pulsar
import pytest

from uplion.core.migrations import migrate
from uplion.core.pulsar_auth import BILLING, billing_permissions
from uplion.core.subscriptions import BILLING_SUBSCRIPTION
from uplion.core.topics import Topics
from uplion.devstack.postgres import Postgres
from uplion.devstack.procs import Proc, free_port, spawn, wait_until
from uplion.devstack.pulsar import Pulsar, pulsar_credentials
from uplion.v1 import common_pb2, usage_pb2

T0 = 1_790_000_000  # a fixed start time (2026-09) for reproducible buckets


@dataclass
class BillingEnv:
    namespace: str
    dsn: str
    broker: Pulsar
    workdir: Path

    @property
    def topics(self) -> Topics:
        return Topics("public", self.namespace)

    def start(self, **env: str) -> Proc:
        import os

        pulsar_env = {"UPLION_PULSAR_URL": self.broker.service_url, "UPLION_PULSAR_NAMESPACE": self.namespace}
        settings = {
            **os.environ,
            "UPLION_LOG_LEVEL": "WARNING",
            **pulsar_env,
            **pulsar_credentials(self.broker.service_url, pulsar_env, BILLING, billing_permissions),
            "UPLION_DATABASE_URL": self.dsn,
            "UPLION_METRICS_PORT": str(free_port()),
            **env,
        }
        log = self.workdir / f"billing-{uuid.uuid4().hex[:6]}.log"
        proc = spawn("billing", [sys.executable, "-m", "uplion.billing"], log, env=settings)
        wait_until(proc, lambda: "consuming usage events" in proc.log_path.read_text(), 60)
        return proc


@pytest.fixture
async def billing_env(broker: Pulsar, postgres: Postgres, tmp_path: Path) -> BillingEnv:
    name = f"billing_{uuid.uuid4().hex[:8]}"
    broker.create_namespace(name)
    admin = await asyncpg.connect(postgres.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(dsn)
    await migrate(conn, "uplion.billing", "billing")
    await conn.close()
    return BillingEnv(name, dsn, broker, tmp_path)


def event(event_id: str, user: str = "u1", token: str = "t1", model: str = "m", prompt: int = 10,
          completion: int = 20, started: int = T0) -> usage_pb2.UsageEvent:  # fmt: skip
    e = usage_pb2.UsageEvent(
        event_id=event_id, model=model, caller=common_pb2.Caller(user_id=user, token_id=token),
        kind=usage_pb2.REQUEST_KIND_CHAT_COMPLETION, outcome=usage_pb2.REQUEST_OUTCOME_COMPLETED,
        prompt_tokens=prompt, completion_tokens=completion,
    )  # fmt: skip
    e.started_at.seconds = started
    e.finished_at.seconds = started + 1
    return e


Publisher = Callable[[list[bytes]], None]


@pytest.fixture
def publish(billing_env: BillingEnv) -> Iterator[Publisher]:
    client = pulsar.Client(billing_env.broker.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
                           authentication=billing_env.broker.authentication())  # fmt: skip
    # as the gateway does at start: billing's subscription exists before the first event
    client.subscribe(billing_env.topics.usage(), BILLING_SUBSCRIPTION, consumer_type=pulsar.ConsumerType.Failover,
                     receiver_queue_size=0).close()  # fmt: skip
    producer = client.create_producer(billing_env.topics.usage(), batching_enabled=True, block_if_queue_full=True,
                                      batching_max_messages=1000)  # fmt: skip

    def send(payloads: list[bytes]) -> None:
        for p in payloads:
            producer.send_async(p, None)
        producer.flush()

    yield send
    producer.close()
    client.close()
