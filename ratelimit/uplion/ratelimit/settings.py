"""Rate-limit service settings from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from uplion.core.config import env_float, env_int, env_str
from uplion.core.pulsar import PulsarSettings


@dataclass(frozen=True)
class RateLimitSettings:
    listen: str
    redis_url: str
    config_dir: Path | None  # None: the packaged default rules
    reload_s: float
    redis_timeout_s: float  # the bound on a decision's wait for a Redis that stopped answering
    pulsar: PulsarSettings | None  # where usage events come from, to settle token reservations
    metrics_port: int
    drain_timeout_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RateLimitSettings:
        env = os.environ if env is None else env
        config_dir = env.get("UPLION_RATELIMIT_CONFIG_DIR", "")
        return cls(
            listen=env_str(env, "UPLION_RATELIMIT_LISTEN", "0.0.0.0:8081"),
            redis_url=env_str(env, "UPLION_REDIS_URL"),
            config_dir=Path(config_dir) if config_dir else None,
            reload_s=env_float(env, "UPLION_RATELIMIT_RELOAD_S", 1.0, minimum=0.05),
            redis_timeout_s=env_int(env, "UPLION_RATELIMIT_REDIS_TIMEOUT_MS", 50, minimum=1) / 1000,
            pulsar=PulsarSettings.from_env(env) if env.get("UPLION_PULSAR_URL") else None,
            metrics_port=env_int(env, "UPLION_METRICS_PORT", 0, minimum=0),
            drain_timeout_s=env_float(env, "UPLION_DRAIN_TIMEOUT_S", 5.0, minimum=0),
        )
