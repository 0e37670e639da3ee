"""Settling token reservations: usage events (topic `usage`, subscription `ratelimit`) carry the
edge's request id and the tokens the request really used; the reservation the rate-limit service
(`uplion-ratelimit`, Go) made at admission is refunded or charged the difference, once (the first
settlement deletes it)."""

from __future__ import annotations

import asyncio
import logging

import pulsar
import pulsar.asyncio as pa
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


class Settler:
    def __init__(self, pulsar_settings: PulsarSettings, redis: aioredis.Redis) -> None:
        self.settings = pulsar_settings
        self.settle_script = redis.register_script(SETTLE)
        self.client = pa.Client(pulsar_settings.url, logger=CLIENT_LOGGER)

    async def settle(self, request_id: str, actual_tokens: int) -> bool:
        """Refund or charge the difference between reserved and used tokens; True the first time."""
        return bool(await self.settle_script(keys=[RESERVATION_PREFIX + request_id], args=[actual_tokens]))

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        consumer = await self.client.subscribe(
            self.settings.topics.usage(), SUBSCRIPTION, consumer_type=pulsar.ConsumerType.Failover,
            initial_position=pulsar.InitialPosition.Latest,
        )  # fmt: skip
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                receive = asyncio.ensure_future(consumer.receive())
                stopping = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    break
                stopping.cancel()
                msg = receive.result()
                await self._settle(msg.data())
                await consumer.acknowledge(msg)
        finally:
            await consumer.close()
            await self.client.close()

    async def _settle(self, data: bytes) -> None:
        try:
            event = usage_pb2.UsageEvent.FromString(data)
        except DecodeError:
            SETTLED.labels("undecodable").inc()
            return
        if not event.edge_request_id:
            SETTLED.labels("no_request_id").inc()
            return
        actual = event.prompt_tokens + event.completion_tokens
        for attempt in range(5):
            try:
                first = await self.settle(event.edge_request_id, actual)
                SETTLED.labels("settled" if first else "nothing_reserved").inc()
                return
            except Exception as e:  # noqa: BLE001 (Redis down: retry, then give the reservation up to its TTL)
                log.warning("settling a reservation failed", extra={"error": str(e), "attempt": attempt})
                await asyncio.sleep(0.2 * (attempt + 1))
        SETTLED.labels("failed").inc()
