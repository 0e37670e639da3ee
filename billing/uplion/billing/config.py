"""Billing settings from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from uplion.core.config import env_bool, env_float, env_int, env_str
from uplion.core.pulsar import PulsarSettings
from uplion.core.redis_client import CLUSTER_SETTING
from uplion.core.usage_proof import key_from_env


@dataclass(frozen=True)
class BillingConfig:
    pulsar: PulsarSettings
    database_url: str
    batch_max_events: int
    batch_max_delay_ms: int
    redis_url: str
    redis_cluster: bool  # redis_url is one node of a Redis Cluster
    reconcile_s: float
    metrics_port: int
    # the gateways' key for proofs of the caller: with it, workers' recovery records are applied
    # (billing/README.md, "A gateway that dies"); empty: recovery off
    usage_proof_key: bytes = field(default=b"", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BillingConfig:
        env = os.environ if env is None else env
        return cls(
            pulsar=PulsarSettings.from_env(env),
            database_url=env_str(env, "UPLION_DATABASE_URL"),
            batch_max_events=env_int(env, "UPLION_BILLING_BATCH_EVENTS", 5000, minimum=1),
            batch_max_delay_ms=env_int(env, "UPLION_BILLING_BATCH_DELAY_MS", 200, minimum=1),
            redis_url=env.get("UPLION_REDIS_URL", ""),
            redis_cluster=env_bool(env, CLUSTER_SETTING, False),
            reconcile_s=env_float(env, "UPLION_BILLING_RECONCILE_S", 60.0, minimum=0.1),
            metrics_port=env_int(env, "UPLION_METRICS_PORT", 0, minimum=0),
            usage_proof_key=key_from_env(env),
        )
