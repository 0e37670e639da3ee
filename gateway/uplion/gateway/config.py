"""Gateway settings from environment variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from uplion.core.config import ConfigError, env_bool, env_float, env_int, env_list, env_str
from uplion.core.pulsar import PulsarSettings
from uplion.core.usage_proof import key_from_env

# The edge passes REST bodies of up to 8 MiB whole, wrapped in a google.api.HttpBody (a few bytes more):
# a message over this bound would be grpcio's RESOURCE_EXHAUSTED, an HTTP 429 the SDKs retry.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024 + 64 * 1024


@dataclass(frozen=True)
class GatewayConfig:
    listen: str
    pulsar: PulsarSettings
    gateway_id: str
    models: tuple[str, ...]
    remote_models: tuple[str, ...]  # those of `models` a remote backend serves: unknown request members go to it
    responses_models: tuple[str, ...]  # those of `models` whose remote upstream serves /v1/responses itself
    default_timeout_s: float
    max_timeout_s: float
    max_message_bytes: int
    drain_timeout_s: float
    publish_timeout_s: float  # a task the broker has not taken by then is a 503, never a hang
    max_worker_crashes: int  # a task whose attempts crashed this many worker processes is set aside
    metrics_port: int
    watch_aimodels: bool  # serve the models AIModel resources declare (in a cluster)
    aimodel_namespace: str  # "" = all namespaces
    models_dir: str  # the local stack: serve the models of the AIModel manifests in this folder
    database_url: str  # stored responses (the Responses API's `store`); "" = none are kept
    database_max_connections: int
    # signs each task's caller for billing's recovery of work a dead gateway never billed
    # (uplion.core.usage_proof); empty: no proofs, workers send no recovery records
    usage_proof_key: bytes = field(default=b"", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        env = os.environ if env is None else env
        cfg = cls(
            listen=env_str(env, "UPLION_GATEWAY_LISTEN", "0.0.0.0:50051"),
            pulsar=PulsarSettings.from_env(env),
            gateway_id=env_str(env, "UPLION_GATEWAY_ID", f"{socket.gethostname()}-{os.getpid()}"),
            models=env_list(env, "UPLION_MODELS"),
            remote_models=env_list(env, "UPLION_REMOTE_MODELS"),
            responses_models=env_list(env, "UPLION_RESPONSES_MODELS"),
            default_timeout_s=env_float(env, "UPLION_DEFAULT_TIMEOUT_S", 600.0, minimum=0.001),
            max_timeout_s=env_float(env, "UPLION_MAX_TIMEOUT_S", 3600.0, minimum=0.001),
            max_message_bytes=env_int(env, "UPLION_MAX_MESSAGE_BYTES", MAX_MESSAGE_BYTES, minimum=1024),
            drain_timeout_s=env_float(env, "UPLION_DRAIN_TIMEOUT_S", 30.0, minimum=0),
            publish_timeout_s=env_float(env, "UPLION_PUBLISH_TIMEOUT_S", 5.0, minimum=0.1),
            max_worker_crashes=env_int(env, "UPLION_MAX_WORKER_CRASHES", 3, minimum=1),
            metrics_port=env_int(env, "UPLION_METRICS_PORT", 0, minimum=0),
            watch_aimodels=env_bool(env, "UPLION_WATCH_AIMODELS", bool(env.get("KUBERNETES_SERVICE_HOST"))),
            aimodel_namespace=env.get("UPLION_AIMODEL_NAMESPACE", ""),
            models_dir=env.get("UPLION_MODELS_DIR", ""),
            database_url=env.get("UPLION_DATABASE_URL", ""),
            database_max_connections=env_int(env, "UPLION_DATABASE_MAX_CONNECTIONS", 4, minimum=1),
            usage_proof_key=key_from_env(env),
        )
        if cfg.default_timeout_s > cfg.max_timeout_s:
            raise ConfigError("UPLION_DEFAULT_TIMEOUT_S must not exceed UPLION_MAX_TIMEOUT_S")
        return cfg

    def timeout_for(self, client_remaining: float | None) -> float:
        """The request's budget: the client's deadline if it sent one, else the default; capped."""
        wanted = self.default_timeout_s if client_remaining is None else client_remaining
        return max(0.0, min(wanted, self.max_timeout_s))
