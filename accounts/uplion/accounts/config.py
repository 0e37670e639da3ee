"""Accounts service settings from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from uplion.core.config import ConfigError, env_bool, env_float, env_int, env_str
from uplion.core.pulsar import PulsarSettings
from uplion.core.redis_client import CLUSTER_SETTING

from .logins import DEFAULT_TRUSTED_PROXIES, IPNetwork, parse_networks


def _networks(text: str) -> tuple[IPNetwork, ...]:
    try:
        return parse_networks(text)
    except ValueError as e:
        raise ConfigError(f"UPLION_TRUSTED_PROXIES: {e}") from None


def _default_store(env: Mapping[str, str]) -> str:
    if env.get("UPLION_MODELS_DIR"):
        return "folder"
    return "kubernetes" if env.get("KUBERNETES_SERVICE_HOST") else ""


@dataclass(frozen=True)
class AccountsConfig:
    listen: str
    database_url: str
    database_read_url: str  # usage queries read here (a streaming replica); empty: database_url
    redis_url: str  # empty: no Redis (authz then refills from PostgreSQL alone)
    redis_cluster: bool  # redis_url is one node of a Redis Cluster
    session_secret: str
    session_ttl_s: int
    login_attempts_per_minute: int  # per (email, client address)
    login_attempts_per_address_per_minute: int  # per client address, across emails
    trusted_proxies: tuple[IPNetwork, ...]  # peers whose x-envoy-external-address / x-forwarded-for count
    metrics_port: int
    drain_timeout_s: float
    model_store: str  # where AIModels live for the admin API: "folder", "kubernetes" or "" (not managed)
    models_dir: str  # folder: the local stack's AIModel manifests
    models_status_file: str  # folder: the local runner's status file
    models_namespace: str  # kubernetes: the models' namespace ("" = the service's own)
    pulsar: PulsarSettings  # tenant and namespace of the models' topics (their backlog)
    pulsar_admin_url: str  # "" = backlog unknown (-1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AccountsConfig:
        env = os.environ if env is None else env
        cfg = cls(
            listen=env_str(env, "UPLION_ACCOUNTS_LISTEN", "0.0.0.0:50061"),
            database_url=env_str(env, "UPLION_DATABASE_URL"),
            database_read_url=env.get("UPLION_DATABASE_READ_URL", ""),
            redis_url=env.get("UPLION_REDIS_URL", ""),
            redis_cluster=env_bool(env, CLUSTER_SETTING, False),
            session_secret=env_str(env, "UPLION_SESSION_SECRET"),
            session_ttl_s=env_int(env, "UPLION_SESSION_TTL_S", 3600, minimum=60),
            login_attempts_per_minute=env_int(env, "UPLION_LOGIN_ATTEMPTS_PER_MINUTE", 10, minimum=1),
            login_attempts_per_address_per_minute=env_int(
                env, "UPLION_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE", 30, minimum=1
            ),
            trusted_proxies=_networks(env.get("UPLION_TRUSTED_PROXIES", DEFAULT_TRUSTED_PROXIES)),
            metrics_port=env_int(env, "UPLION_METRICS_PORT", 0, minimum=0),
            drain_timeout_s=env_float(env, "UPLION_DRAIN_TIMEOUT_S", 10.0, minimum=0),
            model_store=env.get("UPLION_MODEL_STORE", _default_store(env)),
            models_dir=env.get("UPLION_MODELS_DIR", ""),
            models_status_file=env.get("UPLION_MODELS_STATUS_FILE", ""),
            models_namespace=env.get("UPLION_MODELS_NAMESPACE", ""),
            pulsar=PulsarSettings.from_env(env),
            pulsar_admin_url=env.get("UPLION_PULSAR_ADMIN_URL", ""),
        )
        if cfg.model_store not in ("", "folder", "kubernetes"):
            raise ConfigError("UPLION_MODEL_STORE must be folder, kubernetes or empty")
        if cfg.model_store == "folder" and not cfg.models_dir:
            raise ConfigError("UPLION_MODEL_STORE=folder needs UPLION_MODELS_DIR")
        if len(cfg.session_secret) < 32:
            raise ConfigError("UPLION_SESSION_SECRET must be at least 32 characters (it signs session tokens)")
        return cfg
