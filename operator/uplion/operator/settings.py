"""The operator's one config object, read from the environment once at start.

Pulsar worker tokens are on when `UPLION_PULSAR_SIGNING_KEY_FILE` names the broker's signing key
(the raw HS256 key bytes its `tokenSecretKey` file holds, a Secret mounted as a file): the operator
then mints a token per AIModel for `uplion-worker-<model>` and grants that role its topics through
the admin API with a superuser's token (`UPLION_PULSAR_TOKEN` or `UPLION_PULSAR_TOKEN_FILE`, read as
every service reads its token). Without the key it writes no token and grants nothing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from uplion.core.aimodels import Platform
from uplion.core.config import ConfigError, env_float, env_list, env_str
from uplion.core.pulsar import PulsarSettings
from uplion.core.topics import Topics

DEFAULT_PULSAR_URL = "pulsar://pulsar-broker.pulsar:6650"
DEFAULT_ADMIN_URL = "http://pulsar-broker.pulsar:8080"
MIN_KEY_BYTES = 32  # HS256 keys shorter than 256 bits are refused by the broker's JWT library


@dataclass(frozen=True)
class Settings:
    pulsar: PulsarSettings  # the workers' broker, tenant, namespaces; its token is the operator's own (a superuser's)
    pulsar_admin_url: str
    watch_namespaces: tuple[str, ...] = ()
    worker_image: str = Platform.worker_image
    worker_local_image: str = Platform.worker_local_image
    signing_key: bytes = field(default=b"", repr=False)
    admin_timeout_s: float = 10.0  # one admin API call (a grant or revoke: access.CALLS_PER_CHANGE of them at most)
    grant_retry_s: float = 15.0  # kopf retries a handler whose grant or revoke failed after this delay
    # OTEL_EXPORTER_OTLP_ENDPOINT: handed to the workers it creates (it sends no spans itself)
    otlp_endpoint: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        defaults = {"UPLION_PULSAR_URL": DEFAULT_PULSAR_URL}
        pulsar = PulsarSettings.from_env({**defaults, **{k: v for k, v in env.items() if v != ""}})
        settings = cls(
            pulsar=pulsar,
            pulsar_admin_url=env_str(env, "UPLION_PULSAR_ADMIN_URL", DEFAULT_ADMIN_URL).rstrip("/"),
            watch_namespaces=env_list(env, "UPLION_WATCH_NAMESPACES"),
            worker_image=env_str(env, "UPLION_WORKER_IMAGE", Platform.worker_image),
            worker_local_image=env_str(env, "UPLION_WORKER_LOCAL_IMAGE", Platform.worker_local_image),
            signing_key=_signing_key(env.get("UPLION_PULSAR_SIGNING_KEY_FILE", "")),
            admin_timeout_s=env_float(env, "UPLION_PULSAR_ADMIN_TIMEOUT_S", 10.0, minimum=0.1),
            grant_retry_s=env_float(env, "UPLION_PULSAR_GRANT_RETRY_S", 15.0, minimum=0.1),
            otlp_endpoint=env_str(env, "OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """What tokens need besides the key: a superuser's token to grant with, and the gateways'
        reply namespace (workers may produce there; without one they would need produce on the
        task namespace, where usage events are)."""
        if not self.tokens:
            return
        if not self.pulsar.token:
            raise ConfigError(
                "UPLION_PULSAR_SIGNING_KEY_FILE needs a superuser's token to grant worker permissions: "
                "set UPLION_PULSAR_TOKEN or UPLION_PULSAR_TOKEN_FILE"
            )
        replies = self.pulsar.reply_namespace
        if not replies or replies == self.pulsar.namespace:
            raise ConfigError(
                "UPLION_PULSAR_SIGNING_KEY_FILE needs UPLION_PULSAR_REPLY_NAMESPACE: the gateways' reply "
                "namespace, other than UPLION_PULSAR_NAMESPACE (docs/pulsar-auth.md)"
            )

    @property
    def tokens(self) -> bool:
        """Per-model worker tokens and grants are on."""
        return bool(self.signing_key)

    @property
    def topics(self) -> Topics:
        return self.pulsar.topics

    @property
    def platform(self) -> Platform:
        return Platform(
            pulsar_url=self.pulsar.url,
            pulsar_admin_url=self.pulsar_admin_url,
            tenant=self.pulsar.tenant,
            namespace=self.pulsar.namespace,
            worker_image=self.worker_image,
            worker_local_image=self.worker_local_image,
            otlp_endpoint=self.otlp_endpoint,
        )


def _signing_key(path: str) -> bytes:
    if not path:
        return b""
    try:
        key = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"UPLION_PULSAR_SIGNING_KEY_FILE: cannot read {path}: {e.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"UPLION_PULSAR_SIGNING_KEY_FILE: {path} holds {len(key)} bytes; the broker's HS256 key (raw bytes, "
            f"as its tokenSecretKey file holds them) has at least {MIN_KEY_BYTES}"
        )
    return key
