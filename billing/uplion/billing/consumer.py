"""The billing loop: batch-receive usage events, apply them in one round trip, park poison, then ack.

Failover subscription `billing` on the usage topic: one active consumer (others stand by), so a batch
can be acknowledged with one cumulative ack after its transaction committed. A crash before the ack
redelivers the batch; applying it again changes nothing (event ids).
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import pulsar
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Histogram

from uplion.core.subscriptions import BILLING_SUBSCRIPTION
from uplion.core.topics import Topics
from uplion.v1 import usage_pb2

from .config import BillingConfig
from .ledger import apply_batch

log = logging.getLogger("uplion.billing")

EVENTS = Counter("uplion_billing_events_total", "Usage events by result", ["result"])
BATCHES = Counter("uplion_billing_batches_total", "Batches applied")
ROUND_TRIPS = Counter("uplion_billing_db_round_trips_total", "Database round trips made by batches")
BATCH_SECONDS = Histogram("uplion_billing_batch_seconds", "Time to apply one batch")


Decoded = list[tuple[usage_pb2.UsageEvent, pulsar.Message]]
Poison = list[tuple[pulsar.Message, str]]


def decode(messages: list[pulsar.Message]) -> tuple[Decoded, Poison]:
    events: Decoded = []
    poison: Poison = []
    for msg in messages:
        try:
            event = usage_pb2.UsageEvent.FromString(msg.data())
        except DecodeError:
            poison.append((msg, "undecodable usage event"))
            continue
        if not event.event_id or not event.model:
            poison.append((msg, "usage event without event_id or model"))
            continue
        events.append((event, msg))
    return events, poison


class UsageConsumer:
    def __init__(self, cfg: BillingConfig, pool: asyncpg.Pool) -> None:
        self.cfg = cfg
        self.pool = pool
        self.topics = Topics(cfg.tenant, cfg.namespace)
        self.client = pulsar.Client(cfg.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
        policy = pulsar.ConsumerBatchReceivePolicy(cfg.batch_max_events, 64 * 1024 * 1024, cfg.batch_max_delay_ms)
        self.consumer = self.client.subscribe(
            self.topics.usage(),
            BILLING_SUBSCRIPTION,
            consumer_type=pulsar.ConsumerType.Failover,
            receiver_queue_size=max(1000, cfg.batch_max_events),
            batch_receive_policy=policy,
            initial_position=pulsar.InitialPosition.Earliest,
        )
        self.dlq = self.client.create_producer(self.topics.usage() + "-dlq", batching_enabled=True)

    async def receive(self) -> list[pulsar.Message]:
        return list(await asyncio.to_thread(self.consumer.batch_receive))

    async def run_once(self, messages: list[pulsar.Message] | None = None) -> int:
        """Apply one batch (received now unless given); returns how many messages it consumed."""
        if messages is None:
            messages = await self.receive()
        if not messages:
            return 0
        started = time.monotonic()
        events, poison = decode(messages)
        unpriced: list[str] = []
        if events:
            async with self.pool.acquire() as conn:
                applied = await apply_batch(conn, [e for e, _ in events])
            ROUND_TRIPS.inc()
            unpriced = applied.unpriced
        by_id = {e.event_id: m for e, m in events}
        parked = poison + [(by_id[i], "no price in force for the event's model") for i in unpriced]
        for msg, reason in parked:
            log.warning("usage event to dead letters: %s", reason, extra={"message_id": str(msg.message_id())})
            await asyncio.to_thread(self.dlq.send, msg.data(), {"reason": reason})
        await asyncio.to_thread(self.consumer.acknowledge_cumulative, messages[-1])
        BATCHES.inc()
        BATCH_SECONDS.observe(time.monotonic() - started)
        EVENTS.labels("applied_or_duplicate").inc(len(events) - len(unpriced))
        EVENTS.labels("dead_lettered").inc(len(parked))
        return len(messages)

    async def run(self, stop: asyncio.Event) -> None:
        """Batches until `stop` is set; the batch in hand is always finished (graceful shutdown).
        The next batch is received while the current one is in the database; a prefetched batch
        left at shutdown is not acknowledged, so Pulsar delivers it again."""
        pending = asyncio.ensure_future(self.receive())
        while not stop.is_set():
            messages = await pending
            pending = asyncio.ensure_future(self.receive())
            try:
                await self.run_once(messages)
            except (asyncpg.PostgresError, OSError, pulsar.PulsarException):
                log.exception("batch failed; it will be redelivered")
                await pending  # nothing after a failed batch may be acknowledged before it
                await asyncio.to_thread(self.consumer.redeliver_unacknowledged_messages)
                await asyncio.sleep(1)
                pending = asyncio.ensure_future(self.receive())
        await asyncio.gather(pending, return_exceptions=True)

    def close(self) -> None:
        self.dlq.flush()
        self.consumer.close()
        self.client.close()
