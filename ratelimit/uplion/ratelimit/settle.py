"""Settling token reservations: usage events (topic `usage`, subscription `ratelimit`) carry the
edge's request id and the tokens the request really used; the reservation the rate-limit service
(`uplion-ratelimit`, Go) made at admission is refunded or charged the difference, once (the first
settlement deletes it)."""

from __future__ import annotations

import asyncio
import logging

import pulsar
import redis.asyncio as aioredis
from google.protobuf.message import DecodeError
from prometheus_client import Counter

from uplion.core.pulsar import CLIENT_LOGGER, PulsarSettings
from uplion.v1 import usage_pb2

log = logging.getLogger("uplion.ratelimit")
SUBSCRIPTION = "ratelimit"
# where the rate-limit service records reservations (ratelimit/internal/decide: ReservationPrefix)
RESERVATION_PREFIX = "uplion:rl:resv:"
SETTLED = Counter("uplion_ratelimit_reservations_settled_total", "Usage events by settlement result", ["result"])

# KEYS[1] = reservation key; ARGV[1] = tokens actually used. A reservation is a hash written by the
# rate-limit service's decision script (ratelimit/internal/limiter/decide.lua): counter key ->
# "hits:algorithm:interval". Each reserved counter is settled by the difference (refund or charge)
# once: the reservation is deleted by the first settlement.
SETTLE = """
local r = redis.call('HGETALL', KEYS[1])
if #r == 0 then return 0 end
redis.call('DEL', KEYS[1])
local actual = tonumber(ARGV[1])
for i = 1, #r, 2 do
  local key = r[i]
  local hits, algo, interval = string.match(r[i + 1], '^(%d+):(%a):([%d%.e%+%-]+)$')
  local delta = actual - tonumber(hits)
  if algo == 'f' then
    local cur = redis.call('GET', key)
    if cur then
      local v = tonumber(cur) + delta
      if v < 0 then v = 0 end
      redis.call('SET', key, v, 'KEEPTTL')
    end
  else
    local tat = redis.call('GET', key)
    if tat then
      redis.call('SET', key, tostring(tonumber(tat) + delta * tonumber(interval)), 'KEEPTTL')
    end
  end
end
return 1
"""


BATCH_EVENTS = 500
BATCH_WAIT_MS = 50
ATTEMPTS = 5


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

    def __init__(self, pulsar_settings: PulsarSettings, redis: aioredis.Redis) -> None:
        self.settings = pulsar_settings
        self.redis = redis
        self.settle_script = redis.register_script(SETTLE)
        self.client = pulsar.Client(pulsar_settings.url, logger=CLIENT_LOGGER)

    async def settle_all(self, items: list[tuple[str, int]]) -> list[bool]:
        """Refund or charge each reservation the difference between reserved and used tokens, every
        settlement of a batch in one pipeline (one round trip); True where it was the first time."""
        if not items:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for request_id, actual in items:
                await self.settle_script(keys=[RESERVATION_PREFIX + request_id], args=[actual], client=pipe)
            return [bool(r) for r in await pipe.execute()]

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
