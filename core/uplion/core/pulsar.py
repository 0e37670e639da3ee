"""Pulsar settings and producers, the same way in every service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulsar
import pulsar.asyncio as pa

from .config import ConfigError, env_str
from .topics import Topics

# What the Pulsar client raises. Its asyncio API (pulsar.asyncio) raises its own PulsarException,
# which is NOT a pulsar.PulsarException: an `except pulsar.PulsarException` around an awaited call
# catches nothing. Catch ERRORS.
ERRORS: tuple[type[Exception], ...] = (pulsar.PulsarException, pa.PulsarException)
# a send that failed or did not finish within its bound (asyncio.timeout around it)
SEND_ERRORS: tuple[type[Exception], ...] = (TimeoutError, *ERRORS)

# The Pulsar C++ client's own warnings and errors, in its own line format on stderr. A Python logger
# would put them in the JSON schema, but the client's threads then call into an interpreter that is
# shutting down, and the process ends with "terminate called without an active exception".
CLIENT_LOGGER = pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn)


@dataclass(frozen=True)
class PulsarSettings:
    url: str
    tenant: str
    namespace: str
    reply_namespace: str = ""  # empty: the reply topics live beside the tasks, in `namespace`
    token: str = field(default="", repr=False)  # a JWT (uplion.core.pulsar_auth); empty: no authentication

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PulsarSettings:
        return cls(
            url=env_str(env, "UPLION_PULSAR_URL", "pulsar://127.0.0.1:6650"),
            tenant=env_str(env, "UPLION_PULSAR_TENANT", "public"),
            namespace=env_str(env, "UPLION_PULSAR_NAMESPACE", "default"),
            reply_namespace=env.get("UPLION_PULSAR_REPLY_NAMESPACE", ""),
            token=_token(env),
        )

    @property
    def topics(self) -> Topics:
        return Topics(self.tenant, self.namespace, self.reply_namespace)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of every service's `pulsar.Client` / `pulsar.asyncio.Client`: the
        client's logger and, given a token, token authentication."""
        auth = pulsar.AuthenticationToken(self.token) if self.token else None
        return {"logger": CLIENT_LOGGER, "authentication": auth}

    def admin_headers(self) -> dict[str, str]:
        """HTTP headers for the broker's admin REST API (the same token)."""
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


def _token(env: Mapping[str, str]) -> str:
    """UPLION_PULSAR_TOKEN, or the contents of UPLION_PULSAR_TOKEN_FILE (a mounted Secret), read
    once at start: a rotated token takes effect on restart."""
    token, path = env.get("UPLION_PULSAR_TOKEN", "").strip(), env.get("UPLION_PULSAR_TOKEN_FILE", "")
    if not path:
        return token
    if token:
        raise ConfigError("set UPLION_PULSAR_TOKEN or UPLION_PULSAR_TOKEN_FILE, not both")
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"UPLION_PULSAR_TOKEN_FILE: cannot read {path}: {e.strerror}") from None
    if not token:
        raise ConfigError(f"UPLION_PULSAR_TOKEN_FILE: {path} is empty")
    return token


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
            with contextlib.suppress(*ERRORS):
                await producer.close()
