"""Settling token reservations: usage events (topic `usage`, subscription `ratelimit`) carry the
edge's request id and the tokens the request really used; the reservation made at admission is
refunded or charged the difference, once (the first settlement deletes it)."""

from __future__ import annotations

import asyncio
import logging

import pulsar
import pulsar.asyncio as pa
from google.protobuf.message import DecodeError
from prometheus_client import Counter

from uplion.core.pulsar import CLIENT_LOGGER, PulsarSettings
from uplion.v1 import usage_pb2

from .limiter import Limiter
from .service import RESERVATION_PREFIX

log = logging.getLogger("uplion.ratelimit")
SUBSCRIPTION = "ratelimit"
SETTLED = Counter("uplion_ratelimit_reservations_settled_total", "Usage events by settlement result", ["result"])


class Settler:
    def __init__(self, pulsar_settings: PulsarSettings, limiter: Limiter) -> None:
        self.settings = pulsar_settings
        self.limiter = limiter
        self.client = pa.Client(pulsar_settings.url, logger=CLIENT_LOGGER)

    async def run(self, stop: asyncio.Event) -> None:
        consumer = await self.client.subscribe(
            self.settings.topics.usage(), SUBSCRIPTION, consumer_type=pulsar.ConsumerType.Failover,
            initial_position=pulsar.InitialPosition.Latest,
        )  # fmt: skip
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
                first = await self.limiter.settle(RESERVATION_PREFIX + event.edge_request_id, actual)
                SETTLED.labels("settled" if first else "nothing_reserved").inc()
                return
            except Exception as e:  # noqa: BLE001 (Redis down: retry, then give the reservation up to its TTL)
                log.warning("settling a reservation failed", extra={"error": str(e), "attempt": attempt})
                await asyncio.sleep(0.2 * (attempt + 1))
        SETTLED.labels("failed").inc()
