"""uplion's own services as subprocesses (gateway, workers), for tests, benchmarks and run.sh."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from uplion.core import pulsar_auth

from .envoy import Envoy, start_envoy
from .procs import NotReady, Proc, free_port, free_port_block, spawn, wait_until
from .pulsar import pulsar_credentials


def service_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("UPLION_LOG_LEVEL", "WARNING")
    env.setdefault("UPLION_METRICS_HOST", "127.0.0.1")  # nothing of the local stack listens beyond loopback
    env.update(extra)
    return env


@dataclass
class Service:
    proc: Proc
    port: int
    metrics_port: int

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus counter/gauge's samples matching `labels` (0 if absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        self.proc.stop(timeout=30)

    def kill(self) -> None:
        self.proc.kill()


def wait_for_line(proc: Proc, needle: str, timeout: float) -> None:
    wait_until(proc, lambda: needle in proc.log_path.read_text(errors="replace"), timeout, interval=0.1)


def start_gateway(
    workdir: Path, pulsar_url: str, models: list[str], port: int = 0, wrap: Sequence[str] = (), **env: str
) -> Service:
    """The gateway; on a broker this process started with authentication, as `uplion-gateway` with
    its permissions granted (`pulsar_credentials`), as every starter here does for its service.
    `wrap` prefixes its command (e.g. `ip netns exec NAME`: run it in a network namespace)."""
    port, metrics = port or free_port(), free_port()
    settings = {
        "UPLION_GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "UPLION_PULSAR_URL": pulsar_url,
        **pulsar_credentials(pulsar_url, env, pulsar_auth.GATEWAY, pulsar_auth.gateway_permissions),
        "UPLION_MODELS": ",".join(models),
        "UPLION_METRICS_PORT": str(metrics),
        "UPLION_GATEWAY_ID": f"gw-{port}",
        **env,
    }
    log = workdir / f"gateway-{port}.log"
    proc = spawn("gateway", [*wrap, sys.executable, "-m", "uplion.gateway"], log, env=service_env(settings))
    wait_for_line(proc, "listening on port", 60)
    return Service(proc, port, metrics)


def start_worker(workdir: Path, pulsar_url: str, model: str, model_type: str = "echo", **env: str) -> Service:
    metrics = free_port_block(int(env.get("UPLION_WORKER_PROCESSES", "1")))  # one port per process
    worker_id = env.pop("UPLION_WORKER_ID", f"w-{model}-{metrics}")
    settings = {
        "UPLION_MODEL": model,
        "UPLION_MODEL_TYPE": model_type,
        "UPLION_PULSAR_URL": pulsar_url,
        **pulsar_credentials(
            pulsar_url, env, pulsar_auth.worker_role(model), lambda t: pulsar_auth.worker_permissions(model, t)
        ),
        "UPLION_METRICS_PORT": str(metrics),
        "UPLION_WORKER_ID": worker_id,
        # the crash journal in the run's folder, not the shared temporary one (a killed worker leaves records)
        "UPLION_WORKER_JOURNAL_DIR": str(workdir / "journals" / worker_id),
        **env,
    }
    log = workdir / f"worker-{worker_id}.log"
    proc = spawn("worker", [sys.executable, "-m", "uplion.worker"], log, env=service_env(settings))
    wait_for_line(proc, "serving model", 120)
    return Service(proc, 0, metrics)


def wait_metric(svc: Service, name: str, at_least: float, timeout: float = 30.0, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    value = 0.0
    while time.monotonic() < deadline:
        value = svc.metric(name, **labels)
        if value >= at_least:
            return value
        time.sleep(0.1)
    raise NotReady(f"{name}{labels} stayed at {value}, wanted >= {at_least}")


def start_edge(
    workdir: Path,
    gateway_port: int,
    port: int = 0,
    authz_port: int | None = None,
    accounts_port: int | None = None,
    ratelimit_ports: tuple[int, ...] = (),
    console_port: int | None = None,
    otlp_port: int | None = None,
) -> tuple[Envoy, int]:
    """Envoy with uplion's edge filters in front of a gateway (and, when given, the authz and
    accounts services, and an OpenTelemetry collector it sends its spans to); returns it and its
    HTTP/gRPC port."""
    from uplion.edge.local import local_envoy_config

    port = port or free_port()
    descriptor = Path(__file__).resolve().parents[3] / "gen" / "descriptor" / "uplion.pb"
    config = local_envoy_config(port, gateway_port, str(descriptor), authz_port, accounts_port, ratelimit_ports,
                                console_port, otlp_port)  # fmt: skip
    return start_envoy(workdir / f"envoy-{port}", config), port


def start_python_service(
    workdir: Path, name: str, listen_var: str | None, port: int = 0, ready: str = "listening on port",
    log_name: str = "", **settings: str,
) -> Service:  # fmt: skip
    """`python -m uplion.<name>` with its listen address (`listen_var`; None for a consumer that serves
    no RPCs) and metrics on free loopback ports, waited for until its log says `ready`."""
    metrics = free_port()
    env = {"UPLION_METRICS_PORT": str(metrics), **settings}
    if listen_var is not None:
        port = port or free_port()
        env[listen_var] = f"127.0.0.1:{port}"
    log = workdir / f"{log_name or f'{name}-{port}'}.log"
    proc = spawn(log_name or name, [sys.executable, "-m", f"uplion.{name}"], log, env=service_env(env))
    wait_for_line(proc, ready, 60)
    return Service(proc, port, metrics)


def start_accounts(workdir: Path, database_url: str, redis_url: str = "", port: int = 0, **env: str) -> Service:
    # given Pulsar's admin URL (for the models' backlog): as `uplion-accounts` on a broker with authentication
    pulsar = pulsar_credentials(
        env.get("UPLION_PULSAR_ADMIN_URL", ""), env, pulsar_auth.ACCOUNTS, pulsar_auth.accounts_permissions
    )
    return start_python_service(
        workdir, "accounts", "UPLION_ACCOUNTS_LISTEN", port, UPLION_DATABASE_URL=database_url,
        UPLION_REDIS_URL=redis_url, UPLION_SESSION_SECRET=secrets.token_urlsafe(48), **{**pulsar, **env},
    )  # fmt: skip


def start_authz(workdir: Path, database_url: str, redis_url: str = "", port: int = 0, **env: str) -> Service:
    return start_python_service(
        workdir, "authz", "UPLION_AUTHZ_LISTEN", port, UPLION_DATABASE_URL=database_url, UPLION_REDIS_URL=redis_url,
        **env,
    )  # fmt: skip


def bootstrap_admin(database_url: str, email: str = "admin@uplion.local") -> dict[str, str]:
    """The first admin and an admin API token (user_id, token_id, secret)."""
    out = subprocess.run(
        [sys.executable, "-m", "uplion.accounts", "bootstrap-admin", email],
        env=service_env({"UPLION_DATABASE_URL": database_url}), capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    result: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def start_billing(workdir: Path, pulsar_url: str, database_url: str, redis_url: str = "", **env: str) -> Service:
    pulsar = pulsar_credentials(pulsar_url, env, pulsar_auth.BILLING, pulsar_auth.billing_permissions)
    return start_python_service(
        workdir, "billing", None, 0, ready="consuming usage events", log_name="billing", UPLION_PULSAR_URL=pulsar_url,
        UPLION_DATABASE_URL=database_url, UPLION_REDIS_URL=redis_url, **{**pulsar, **env},
    )  # fmt: skip
