"""Rate-limit services as subprocesses: uplion's (the Go service `uplion-ratelimit` and, given Pulsar,
its reservation settler `python -m uplion.ratelimit`), and the reference envoyproxy/ratelimit (built
from the Go module proxy) on the same rules and Redis, for conformance tests and benchmarks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from uplion.core import pulsar_auth

from .gotools import ratelimit_binary, reference_ratelimit
from .platform import Service, service_env, start_python_service, wait_for_line
from .procs import free_port, spawn, tcp_open, wait_until
from .pulsar import pulsar_credentials


@dataclass
class RateLimit(Service):
    """The rate-limit service (port, log and metrics of the Go process) and its settler, if any."""

    settler: Service | None = None

    def metric(self, name: str, **labels: str) -> float:
        total = super().metric(name, **labels)
        return total + (self.settler.metric(name, **labels) if self.settler else 0.0)

    def stop(self) -> None:
        super().stop()
        if self.settler is not None:
            self.settler.stop()


def start_ratelimit(
    workdir: Path, redis_url: str, config_dir: Path | None = None, pulsar_url: str = "", port: int = 0, **env: str
) -> RateLimit:
    port, metrics = port or free_port(), free_port()
    settings = {
        "UPLION_RATELIMIT_LISTEN": f"127.0.0.1:{port}", "UPLION_METRICS_PORT": str(metrics),
        "UPLION_REDIS_URL": redis_url, "UPLION_RATELIMIT_CONFIG_DIR": str(config_dir) if config_dir else "", **env,
    }  # fmt: skip
    proc = spawn("ratelimit", [str(ratelimit_binary())], workdir / f"ratelimit-{port}.log", env=service_env(settings))
    wait_for_line(proc, "listening on port", 60)
    settler = None
    if pulsar_url:
        credentials = pulsar_credentials(pulsar_url, env, pulsar_auth.SETTLER, pulsar_auth.settler_permissions)
        settler_env = {**credentials, **env, "UPLION_REDIS_URL": redis_url, "UPLION_PULSAR_URL": pulsar_url}
        settler = start_python_service(
            workdir, "ratelimit", None, 0, "consuming usage events", f"ratelimit-settler-{port}", **settler_env
        )
    return RateLimit(proc, port, metrics, settler)


def start_reference_ratelimit(workdir: Path, redis_port: int, config_yaml: str) -> Service:
    """envoyproxy/ratelimit with one config file, on the given Redis (its own key names)."""
    root = workdir / f"reference-rls-{free_port()}"
    (root / "ratelimit" / "config").mkdir(parents=True)
    (root / "ratelimit" / "config" / "config.yaml").write_text(config_yaml)
    grpc_port, http_port, debug_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "RUNTIME_ROOT": str(root),
        "RUNTIME_SUBDIRECTORY": "ratelimit",
        "RUNTIME_WATCH_ROOT": "false",
        "RUNTIME_IGNOREDOTFILES": "true",
        "REDIS_SOCKET_TYPE": "tcp",
        "REDIS_URL": f"127.0.0.1:{redis_port}",
        "USE_STATSD": "false",
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "HOST": "127.0.0.1",
        "PORT": str(http_port),
        "DEBUG_HOST": "127.0.0.1",
        "DEBUG_PORT": str(debug_port),
        "LOG_LEVEL": "warn",
    }
    proc = spawn("reference-ratelimit", [str(reference_ratelimit())], root / "rls.log", env=env)
    wait_until(proc, lambda: tcp_open("127.0.0.1", grpc_port), 60, interval=0.1)
    return Service(proc, grpc_port, 0)
