"""Reservation settler settings from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from uplion.core.config import env_bool, env_int, env_str
from uplion.core.pulsar import PulsarSettings
from uplion.core.redis_client import CLUSTER_SETTING


@dataclass(frozen=True)
class SettlerSettings:
    redis_url: str  # the rate-limit service's Redis
    redis_cluster: bool  # redis_url is one node of a Redis Cluster
    pulsar: PulsarSettings  # where usage events come from
    metrics_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SettlerSettings:
        env = os.environ if env is None else env
        return cls(
            redis_url=env_str(env, "UPLION_REDIS_URL"),
            redis_cluster=env_bool(env, CLUSTER_SETTING, False),
            pulsar=PulsarSettings.from_env(env),
            metrics_port=env_int(env, "UPLION_METRICS_PORT", 0, minimum=0),
        )
