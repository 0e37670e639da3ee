"""The billing loop: batch-receive usage events, apply them in one round trip, park poison, then ack.

Failover subscription `billing` on the usage topic: one active consumer (others stand by), so a batch
can be acknowledged with one cumulative ack after its transaction committed. A crash before the ack
redelivers the batch; applying it again changes nothing (event ids).

With usage recovery on (a proof key: uplion.core.usage_proof), a second consumer takes the workers'
recovery records from `usage-recovery`, a UsageRecords message per worker process and second
(Shared subscription `billing-recovery`: Pulsar delivers them after their tasks' deadlines, and
delayed delivery needs Shared; each message acknowledged by itself). A record with a valid proof goes
through the same statement: its event id is its request's, so it counts only if the gateway's event
never came; one without is parked on the dead-letter topic, alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncpg
import pulsar
from google.protobuf.message import DecodeError
from opentelemetry.trace import Span
from prometheus_client import Counter, Histogram

from uplion.core import tracing, usage_proof
from uplion.core.redis_client import ERRORS as REDIS_ERRORS
from uplion.core.redis_client import AnyRedis
from uplion.core.subscriptions import BILLING_SUBSCRIPTION, RECOVERY_SUBSCRIPTION
from uplion.core.topics import Topics
from uplion.v1 import usage_pb2

from . import mirror
from .config import BillingConfig
from .ledger import apply_batch

log = logging.getLogger("uplion.billing")

EVENTS = Counter("uplion_billing_events_total", "Usage events by result", ["result"])
BATCHES = Counter("uplion_billing_batches_total", "Batches applied")
ROUND_TRIPS = Counter("uplion_billing_db_round_trips_total", "Database round trips made by batches")
BATCH_SECONDS = Histogram("uplion_billing_batch_seconds", "Time to apply one batch")


@dataclass(frozen=True)
class Origin:
    """Where an event came from: its message, and what to park if it cannot be billed (the message's
    own bytes, or the one record of a message of many)."""

    message: pulsar.Message
    data: bytes


Decoded = list[tuple[usage_pb2.UsageEvent, Origin]]
Poison = list[tuple[Origin, str]]


@dataclass(frozen=True)
class Source:
    """Where a consumer takes its usage events: the gateways' (`events`), or with a proof key the
    workers' recovery records (`recovery`), applied only with a valid proof."""

    topic: str
    subscription: str
    consumer_type: pulsar.ConsumerType
    proof_key: bytes = field(default=b"", repr=False)

    @classmethod
    def events(cls, topics: Topics) -> Source:
        return cls(topics.usage(), BILLING_SUBSCRIPTION, pulsar.ConsumerType.Failover)

    @classmethod
    def recovery(cls, topics: Topics, proof_key: bytes) -> Source:
        return cls(topics.usage_recovery(), RECOVERY_SUBSCRIPTION, pulsar.ConsumerType.Shared, proof_key)

    @property
    def cumulative(self) -> bool:
        """One cumulative ack per batch (Failover); Shared subscriptions ack each message."""
        return bool(self.consumer_type == pulsar.ConsumerType.Failover)

    @property
    def recovers(self) -> bool:
        """Takes workers' recovery records (which need a valid proof)."""
        return bool(self.proof_key)


def unproven(event: usage_pb2.UsageEvent, proof_key: bytes) -> bool:
    """A recovery record whose proof does not match its own fields (or that is not one)."""
    message = usage_proof.claim(event.event_id, event.model, event.caller, event.kind, event.started_at)
    return not event.recovered or not usage_proof.valid(proof_key, message, event.usage_proof)


def decode(
    messages: list[pulsar.Message], proof_key: bytes = b""
) -> tuple[Decoded, Poison, int, list[mirror.Held]]:  # fmt: skip
    """The events to bill, what to park, how many were requests the gateway refused (outcome
    REJECTED: no tokens, nothing to bill; they exist to release reservations), and the quota holds
    every decoded event releases. With `proof_key` each message is a UsageRecords of workers'
    recovery records: a record without a valid proof is parked, alone."""
    events: Decoded = []
    poison: Poison = []
    refused = 0
    holds: list[mirror.Held] = []
    for msg in messages:
        data = msg.data()
        try:
            if proof_key:
                records = usage_pb2.UsageRecords.FromString(data).events
                found = [(e, Origin(msg, e.SerializeToString())) for e in records]
            else:
                found = [(usage_pb2.UsageEvent.FromString(data), Origin(msg, data))]
        except DecodeError:
            poison.append((Origin(msg, data), "undecodable usage event"))
            continue
        for event, origin in found:
            if proof_key and unproven(event, proof_key):
                poison.append((origin, "recovery record without a valid proof of its caller"))
                continue
            if event.edge_request_id:
                holds.append((event.caller.user_id, event.caller.token_id, event.edge_request_id))
            if event.outcome == usage_pb2.REQUEST_OUTCOME_REJECTED:
                refused += 1
                continue
            if not event.event_id or not event.model:
                poison.append((origin, "usage event without event_id or model"))
                continue
            events.append((event, origin))
    return events, poison, refused, holds


def _event_spans(events: Decoded, batch: int) -> list[Span]:
    """A span per billed event, child of the gateway's span for its request (tracing on): from the
    batch's start until it is acknowledged."""
    spans = []
    for event, origin in events:
        span = tracing.start("billing usage event", tracing.CONSUMER, tracing.message_context(origin.message), {
            "uplion.model": event.model, "uplion.user_id": event.caller.user_id,
            "uplion.request_id": event.edge_request_id, "uplion.task_id": event.event_id, "uplion.batch_size": batch,
        })  # fmt: skip
        if span is not None:
            spans.append(span)
    return spans


MIRROR_FAILURES = Counter("uplion_billing_redis_mirror_failures_total", "Redis mirror updates that failed")
# PostgreSQL refusing, restarting or gone: the batch waits and is applied when it is back
DATABASE_DOWN = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
RECONCILES = Counter("uplion_billing_reconciles_total", "Rebuilds of the Redis mirror from PostgreSQL")
RESTARTS_SEEN = Counter("uplion_billing_redis_restarts_seen_total", "Redis servers found restarted or replaced")
RESTART_CHECK_S = 1.0


class UsageConsumer:
    def __init__(
        self, cfg: BillingConfig, pool: asyncpg.Pool, redis: AnyRedis | None = None, source: Source | None = None
    ) -> None:
        self.cfg = cfg
        self.source = source or Source.events(cfg.pulsar.topics)
        self.pool = pool
        self.redis = redis
        self._last_reconcile = 0.0
        self._servers: frozenset[str] = frozenset()  # the Redis run ids the mirror was last rebuilt on
        self._servers_checked = 0.0
        self.topics = cfg.pulsar.topics
        self.client = pulsar.Client(cfg.pulsar.url, **cfg.pulsar.client_options())
        policy = pulsar.ConsumerBatchReceivePolicy(cfg.batch_max_events, 64 * 1024 * 1024, cfg.batch_max_delay_ms)
        self.consumer = self.client.subscribe(
            self.source.topic,
            self.source.subscription,
            consumer_type=self.source.consumer_type,
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
        events, poison, refused, holds = decode(messages, self.source.proof_key)
        spans = _event_spans(events, len(messages)) if tracing.enabled() else []
        try:
            await self._apply(messages, events, poison, refused, holds)
        except BaseException as e:
            for span in spans:
                tracing.fail(span, e)
            raise
        finally:
            for span in spans:
                tracing.end(span)
        BATCH_SECONDS.observe(time.monotonic() - started)
        return len(messages)

    async def _apply(
        self, messages: list[pulsar.Message], events: Decoded, poison: Poison, refused: int, holds: list[mirror.Held]
    ) -> None:
        unpriced: list[str] = []
        spend: dict[str, tuple[int, int]] = {}
        if events:
            async with self.pool.acquire() as conn:
                applied = await apply_batch(conn, [e for e, _ in events])
            ROUND_TRIPS.inc()
            unpriced, spend = applied.unpriced, applied.spend
        by_id = {e.event_id: origin for e, origin in events}
        parked = poison + [(by_id[i], "no price in force for the event's model") for i in unpriced]
        for origin, reason in parked:
            extra = {"message_id": str(origin.message.message_id())}
            log.warning("usage event to dead letters: %s", reason, extra=extra)
            await asyncio.to_thread(self.dlq.send, origin.data, {"reason": reason})
        if await self._mirror(spend):
            await self._release(holds)
        await asyncio.to_thread(self._acknowledge, messages)
        BATCHES.inc()
        EVENTS.labels("applied_or_duplicate").inc(len(events) - len(unpriced))
        EVENTS.labels("dead_lettered").inc(len(parked))
        EVENTS.labels("refused_not_billed").inc(refused)

    def _acknowledge(self, messages: list[pulsar.Message]) -> None:
        if self.source.cumulative:
            self.consumer.acknowledge_cumulative(messages[-1])
            return
        for msg in messages:
            self.consumer.acknowledge(msg)

    async def _mirror(self, spend: dict[str, tuple[int, int]]) -> bool:
        """Add the batch's spend to Redis; False when Redis failed (the next reconcile repairs it)."""
        if self.redis is None or not spend:
            return True
        try:
            if await self._restarted():
                await self.reconcile_if_due()  # rebuilds (the restart made it due) with this batch's rows
                return True
            await mirror.add(self.redis, spend)
        except REDIS_ERRORS:
            MIRROR_FAILURES.inc()
            log.warning("redis mirror update failed; the next reconcile repairs it")
            self._last_reconcile = 0.0  # reconcile as soon as Redis answers again
            return False
        return True

    async def _release(self, holds: list[mirror.Held]) -> None:
        """Release the batch's quota holds, after its spend is in Redis (never before: a check in
        between would count neither). A hold left by a failure expires (authz's hold ttl)."""
        if self.redis is None or not holds:
            return
        try:
            await mirror.release(self.redis, holds)
        except REDIS_ERRORS:
            MIRROR_FAILURES.inc()
            log.warning("releasing quota holds failed; they expire")

    async def _restarted(self) -> bool:
        """Whether a Redis server restarted (or was replaced) since the last rebuild; a restart makes
        the rebuild due at once."""
        assert self.redis is not None
        self._servers_checked = time.monotonic()
        servers = await mirror.server_ids(self.redis)
        if servers == self._servers:
            return False
        if self._servers:
            log.warning("redis restarted or replaced: rebuilding the spend mirror")
            RESTARTS_SEEN.inc()
        self._last_reconcile = 0.0
        return True

    async def reconcile_if_due(self) -> None:
        """Rebuild Redis from PostgreSQL when the interval has passed or a Redis server restarted
        (checked about once a second; called between batches)."""
        if self.redis is None:
            return
        try:
            if time.monotonic() - self._servers_checked >= RESTART_CHECK_S:
                await self._restarted()
        except REDIS_ERRORS:
            return
        if time.monotonic() - self._last_reconcile < self.cfg.reconcile_s:
            return
        try:
            servers = await mirror.server_ids(self.redis)
            async with self.pool.acquire() as conn:
                written = await mirror.rebuild(self.redis, conn)
        except REDIS_ERRORS + DATABASE_DOWN:
            MIRROR_FAILURES.inc()
            log.warning("redis mirror rebuild failed; retried before the next batch")
            return
        self._last_reconcile = time.monotonic()
        self._servers = servers
        RECONCILES.inc()
        log.info("redis mirror rebuilt", extra={"subjects": written})

    async def run(self, stop: asyncio.Event) -> None:
        """Batches until `stop` is set; the batch in hand is always finished (graceful shutdown).
        The next batch is received while the current one is in the database; a prefetched batch
        left at shutdown is not acknowledged, so Pulsar delivers it again."""
        pending = asyncio.ensure_future(self.receive())
        while not stop.is_set():
            if not self.source.recovers:  # the recovery consumer leaves the mirror's rebuilds to this one
                await self.reconcile_if_due()
            try:
                messages = await pending
            except pulsar.PulsarException:
                log.exception("receiving usage events failed; retrying")
                await asyncio.sleep(1)
                pending = asyncio.ensure_future(self.receive())
                continue
            pending = asyncio.ensure_future(self.receive())
            try:
                await self.run_once(messages)
            except (*DATABASE_DOWN, pulsar.PulsarException):
                log.exception("batch failed; it will be redelivered")
                await asyncio.gather(pending, return_exceptions=True)  # nothing after it may be acked first
                await asyncio.to_thread(self.consumer.redeliver_unacknowledged_messages)
                await asyncio.sleep(1)
                pending = asyncio.ensure_future(self.receive())
        await asyncio.gather(pending, return_exceptions=True)

    def close(self) -> None:
        self.dlq.flush()
        self.consumer.close()
        self.client.close()
