"""Authz service settings from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from uplion.core.config import ConfigError, env_bool, env_float, env_int, env_str
from uplion.core.redis_client import CLUSTER_SETTING


@dataclass(frozen=True)
class AuthzConfig:
    listen: str
    database_url: str
    redis_url: str
    redis_cluster: bool  # redis_url is one node of a Redis Cluster
    cache_ttl_s: float  # bounds how long a revoked key keeps working on this replica
    cache_max_entries: int
    redis_timeout_s: float
    db_timeout_s: float
    breaker_open_s: float  # after a Redis failure, go straight to PostgreSQL for this long
    fail_open: bool  # when neither Redis nor PostgreSQL answers: allow (True) or 503 (False)
    # PostgreSQL lookups of keys nobody has, per client address and minute (a burst of that many)
    unknown_keys_per_address_per_minute: int
    # a quota hold lives until billing releases it, or this long (longer than any request's deadline)
    quota_hold_ttl_s: float
    quota_hold_timeout_s: float  # bound on holding a request's quota (then admitted without a hold)
    quota_price_refresh_s: float  # how often the highest price per 1k tokens is read again
    quota_default_estimate: int  # tokens held when the edge sent no estimate
    metrics_port: int
    drain_timeout_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthzConfig:
        env = os.environ if env is None else env
        cfg = cls(
            listen=env_str(env, "UPLION_AUTHZ_LISTEN", "0.0.0.0:9001"),
            database_url=env_str(env, "UPLION_DATABASE_URL"),
            redis_url=env.get("UPLION_REDIS_URL", ""),
            redis_cluster=env_bool(env, CLUSTER_SETTING, False),
            cache_ttl_s=env_int(env, "UPLION_AUTHZ_CACHE_TTL_MS", 500, minimum=0) / 1000,
            cache_max_entries=env_int(env, "UPLION_AUTHZ_CACHE_MAX_ENTRIES", 100_000, minimum=1),
            redis_timeout_s=env_int(env, "UPLION_AUTHZ_REDIS_TIMEOUT_MS", 100, minimum=1) / 1000,
            db_timeout_s=env_int(env, "UPLION_AUTHZ_DB_TIMEOUT_MS", 300, minimum=1) / 1000,
            breaker_open_s=env_float(env, "UPLION_AUTHZ_BREAKER_OPEN_S", 1.0, minimum=0),
            fail_open=env_bool(env, "UPLION_AUTHZ_FAIL_OPEN", False),
            unknown_keys_per_address_per_minute=env_int(
                env, "UPLION_AUTHZ_UNKNOWN_KEYS_PER_ADDRESS_PER_MINUTE", 30, minimum=1
            ),
            quota_hold_ttl_s=env_float(env, "UPLION_AUTHZ_QUOTA_HOLD_TTL_S", 900.0, minimum=1),
            quota_hold_timeout_s=env_int(env, "UPLION_AUTHZ_QUOTA_HOLD_TIMEOUT_MS", 400, minimum=1) / 1000,
            quota_price_refresh_s=env_float(env, "UPLION_AUTHZ_QUOTA_PRICE_REFRESH_S", 2.0, minimum=0.1),
            quota_default_estimate=env_int(env, "UPLION_AUTHZ_QUOTA_DEFAULT_ESTIMATE", 8192, minimum=0),
            metrics_port=env_int(env, "UPLION_METRICS_PORT", 0, minimum=0),
            drain_timeout_s=env_float(env, "UPLION_DRAIN_TIMEOUT_S", 5.0, minimum=0),
        )
        if cfg.cache_ttl_s > 1.0:
            raise ConfigError("UPLION_AUTHZ_CACHE_TTL_MS must be at most 1000: revocations must apply within 1 s")
        return cfg

    @property
    def decision_bound_s(self) -> float:
        """The longest a cache miss can take before the fail mode answers."""
        return self.redis_timeout_s + self.db_timeout_s
