"""Settling token reservations: usage events (topic `usage`, subscription `ratelimit`) carry the
edge's request id and the tokens the request really used; the reservation the rate-limit service
(`uplion-ratelimit`, Go) made at admission is refunded or charged the difference, once (the first
settlement deletes it)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from typing import Any

import pulsar
from google.protobuf.message import DecodeError
from prometheus_client import Counter

from uplion.core.pulsar import PulsarSettings
from uplion.core.redis_client import AnyRedis, Call, run_scripts
from uplion.v1 import usage_pb2

log = logging.getLogger("uplion.ratelimit")
SUBSCRIPTION = "ratelimit"
# where the rate-limit service records reservations (ratelimit/internal/decide: ReservationPrefix)
RESERVATION_PREFIX = "uplion:rl:resv:"
SETTLED = Counter("uplion_ratelimit_reservations_settled_total", "Usage events by settlement result", ["result"])
ADJUST_FAILURES = Counter(
    "uplion_ratelimit_settle_adjust_failures_total",
    "Batches whose reservations were taken but whose counters could not all be adjusted",
)

# KEYS[1] = reservation key. A reservation is a hash written by the rate-limit service
# (ratelimit/internal/limiter): counter key -> "hits:algorithm:interval". TAKE returns it and deletes
# it, so only the first settlement of a request sees it.
TAKE = """
local r = redis.call('HGETALL', KEYS[1])
if #r > 0 then redis.call('DEL', KEYS[1]) end
return r
"""

# KEYS[1] = a counter; ARGV = the difference used - reserved (a refund when negative), the
# algorithm (f: fixed window, g: GCRA) and GCRA's interval per hit. A counter that expired stays so.
ADJUST = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local delta = tonumber(ARGV[1])
if ARGV[2] == 'f' then
  local v = tonumber(cur) + delta
  if v < 0 then v = 0 end
  redis.call('SET', KEYS[1], v, 'KEEPTTL')
else
  redis.call('SET', KEYS[1], tostring(tonumber(cur) + delta * tonumber(ARGV[3])), 'KEEPTTL')
end
return 1
"""
_RESERVED = re.compile(r"^(\d+):([fg]):([\d.eE+-]+)$")


def reservation_key(request_id: str) -> str:
    """Where the rate-limit service keeps a request's reservation: its id as ratelimit/internal/decide
    KeyPart writes it (a long id, or one that could be a hash tag or look hashed, by its SHA-256)."""
    if len(request_id.encode()) <= 128 and not request_id.startswith("sha256:") and not set("{}") & set(request_id):
        return RESERVATION_PREFIX + request_id
    return RESERVATION_PREFIX + "sha256:" + hashlib.sha256(request_id.encode()).hexdigest()


def adjustments(reservation: dict[str, str], actual: int) -> list[Call]:
    """The ADJUST calls settling one taken reservation for `actual` tokens used (pure); a field not
    in the rate-limit service's format is skipped."""
    calls = []
    for key, value in reservation.items():
        m = _RESERVED.match(value)
        if m is None:
            continue
        calls.append(Call(ADJUST, [key], [actual - int(m[1]), m[2], m[3]]))
    return calls


BATCH_EVENTS = 500
BATCH_WAIT_MS = 50
ATTEMPTS = 5


def _pairs(flat: list[Any]) -> dict[str, str]:
    text = [x.decode() if isinstance(x, bytes) else str(x) for x in flat]
    return dict(zip(text[0::2], text[1::2], strict=True))


def settlements(payloads: list[bytes]) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """(request id, tokens used) of each usage event that names a reservation, and what became of
    the others (undecodable, no request id), counted by result. Pure."""
    out: list[tuple[str, int]] = []
    skipped = {"undecodable": 0, "no_request_id": 0}
    for data in payloads:
        try:
            event = usage_pb2.UsageEvent.FromString(data)
        except DecodeError:
            skipped["undecodable"] += 1
            continue
        if not event.edge_request_id:
            skipped["no_request_id"] += 1
            continue
        out.append((event.edge_request_id, event.prompt_tokens + event.completion_tokens))
    return out, skipped


class Settler:
    """Usage events in batches (up to BATCH_EVENTS, or what arrived within BATCH_WAIT_MS): every
    settlement of a batch in one Redis round trip, then one cumulative acknowledgement."""

    def __init__(self, pulsar_settings: PulsarSettings, redis: AnyRedis) -> None:
        self.settings = pulsar_settings
        self.redis = redis
        self.client = pulsar.Client(pulsar_settings.url, **pulsar_settings.client_options())

    async def settle_all(self, items: list[tuple[str, int]]) -> list[bool]:
        """Refund or charge each reservation the difference between reserved and used tokens; True
        where it was the first settlement. Two pipelined round trips per batch: every reservation is
        taken (read and deleted, retried safely), then every counter adjusted. Counters and their
        reservation may live on different Redis Cluster nodes, so the two steps are separate: a crash
        between them leaves the reserved tokens counted until their window ends, never twice."""
        if not items:
            return []
        taken = await run_scripts(self.redis, [Call(TAKE, [reservation_key(rid)], []) for rid, _ in items])
        calls: list[Call] = []
        for (_, actual), flat in zip(items, taken, strict=True):
            calls.extend(adjustments(_pairs(flat), actual))
        if calls:
            try:
                await run_scripts(self.redis, calls)
            except Exception as e:  # noqa: BLE001 (the reservations are taken: never adjust twice)
                ADJUST_FAILURES.inc()
                log.warning("adjusting reserved counters failed", extra={"error": str(e), "counters": len(calls)})
        return [bool(flat) for flat in taken]

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        policy = pulsar.ConsumerBatchReceivePolicy(BATCH_EVENTS, 16 * 1024 * 1024, BATCH_WAIT_MS)
        consumer = await asyncio.to_thread(
            self.client.subscribe, self.settings.topics.usage(), SUBSCRIPTION,
            consumer_type=pulsar.ConsumerType.Failover, initial_position=pulsar.InitialPosition.Latest,
            batch_receive_policy=policy,
        )  # fmt: skip
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                messages = await asyncio.to_thread(consumer.batch_receive)
                if not messages:
                    continue
                await self._settle([m.data() for m in messages])
                await asyncio.to_thread(consumer.acknowledge_cumulative, messages[-1])
        finally:
            await asyncio.to_thread(consumer.close)
            await asyncio.to_thread(self.client.close)

    async def _settle(self, payloads: list[bytes]) -> None:
        items, skipped = settlements(payloads)
        for result, n in skipped.items():
            if n:
                SETTLED.labels(result).inc(n)
        for attempt in range(ATTEMPTS):
            try:
                firsts = await self.settle_all(items)
            except Exception as e:  # noqa: BLE001 (Redis down: retry, then give the reservations up to their TTL)
                log.warning("settling reservations failed", extra={"error": str(e), "attempt": attempt})
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            settled = sum(firsts)
            SETTLED.labels("settled").inc(settled)
            SETTLED.labels("nothing_reserved").inc(len(firsts) - settled)
            return
        SETTLED.labels("failed").inc(len(items))
