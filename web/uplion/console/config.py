"""Console server settings from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from uplion.core.config import ConfigError, env_float, env_int, env_str

PACKAGE_STATIC = Path(__file__).resolve().parent / "static"
# web/uplion/console/config.py -> web/dist (a checkout after `npm run build`)
CHECKOUT_DIST = Path(__file__).resolve().parents[2] / "dist"


def default_assets() -> Path:
    """The package's static/ folder when it holds a build, else web/dist of the checkout."""
    return PACKAGE_STATIC if (PACKAGE_STATIC / "index.html").is_file() else CHECKOUT_DIST


def split_listen(value: str, name: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:8090`) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"{name} must be host:port, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if number > 65535:
        raise ConfigError(f"{name} port must be at most 65535, got {number}")
    return host, number


@dataclass(frozen=True)
class ConsoleConfig:
    host: str
    port: int
    assets: Path
    # grpc.health.v1 (empty: off); the HTTP port also answers /healthz and /readyz
    grpc_listen: str
    metrics_port: int
    drain_timeout_s: float
    # files larger than this are not held in memory (read from disk on each request)
    max_cached_file_bytes: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleConfig:
        env = os.environ if env is None else env
        host, port = split_listen(env_str(env, "UPLION_CONSOLE_LISTEN", "127.0.0.1:8090"), "UPLION_CONSOLE_LISTEN")
        assets = Path(env.get("UPLION_CONSOLE_ASSETS") or default_assets())
        if not (assets / "index.html").is_file():
            raise ConfigError(
                f"UPLION_CONSOLE_ASSETS={assets} has no index.html: build the console first "
                "(cd web && npm ci && npm run build) or point UPLION_CONSOLE_ASSETS at a build"
            )
        grpc_listen = env.get("UPLION_CONSOLE_GRPC_LISTEN", "127.0.0.1:8091")
        if grpc_listen:
            split_listen(grpc_listen, "UPLION_CONSOLE_GRPC_LISTEN")
        return cls(
            host=host,
            port=port,
            assets=assets.resolve(),
            grpc_listen=grpc_listen,
            metrics_port=env_int(env, "UPLION_METRICS_PORT", 0, minimum=0),
            drain_timeout_s=env_float(env, "UPLION_DRAIN_TIMEOUT_S", 5.0, minimum=0),
            max_cached_file_bytes=env_int(env, "UPLION_CONSOLE_MAX_CACHED_FILE_BYTES", 8 << 20, minimum=0),
        )
