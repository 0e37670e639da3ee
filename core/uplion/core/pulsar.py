"""Pulsar settings and producers, the same way in every service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulsar
import pulsar.asyncio as pa

from .config import env_str
from .topics import Topics

# The Pulsar C++ client's own warnings and errors, in its own line format on stderr. A Python logger
# would put them in the JSON schema, but the client's threads then call into an interpreter that is
# shutting down, and the process ends with "terminate called without an active exception".
CLIENT_LOGGER = pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn)


@dataclass(frozen=True)
class PulsarSettings:
    url: str
    tenant: str
    namespace: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PulsarSettings:
        return cls(
            url=env_str(env, "UPLION_PULSAR_URL", "pulsar://127.0.0.1:6650"),
            tenant=env_str(env, "UPLION_PULSAR_TENANT", "public"),
            namespace=env_str(env, "UPLION_PULSAR_NAMESPACE", "default"),
        )

    @property
    def topics(self) -> Topics:
        return Topics(self.tenant, self.namespace)


class Producers:
    """One producer per (topic, options), created on first use; concurrent first uses share it."""

    def __init__(self, client: pa.Client) -> None:
        self.client = client
        self._producers: dict[tuple[str, tuple[tuple[str, Any], ...]], pa.Producer] = {}
        self._lock = asyncio.Lock()

    def has(self, topic: str, **options: Any) -> bool:
        return (topic, tuple(sorted(options.items()))) in self._producers

    async def get(self, topic: str, **options: Any) -> pa.Producer:
        key = (topic, tuple(sorted(options.items())))
        producer = self._producers.get(key)
        if producer is None:
            async with self._lock:
                producer = self._producers.get(key)
                if producer is None:
                    producer = await self.client.create_producer(topic, block_if_queue_full=True, **options)
                    self._producers[key] = producer
        return producer

    async def close(self) -> None:
        for producer in self._producers.values():
            with contextlib.suppress(pulsar.PulsarException):
                await producer.close()
