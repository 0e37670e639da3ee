"""The set of processes `uplion-devstack up` runs, started in dependency order, stopped in reverse."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from uplion.core.aimodels import Platform

from .console import console_assets, start_console
from .envoy import Envoy
from .local_models import LocalModels
from .otelcol import Collector, start_otelcol
from .platform import (
    Service,
    bootstrap_admin,
    start_accounts,
    start_authz,
    start_billing,
    start_edge,
    start_gateway,
)
from .postgres import Postgres, start_postgres
from .pulsar import Pulsar, start_pulsar
from .ratelimit import start_ratelimit
from .redis import Redis, start_redis


class Stoppable(Protocol):
    def stop(self) -> None: ...


# The models the local platform serves: AIModel manifests, as `kubectl apply` takes them (the
# repository's models/ folder ships echo and minilm; no cloud account, no download at run time).
MODELS_DIR = Path(__file__).resolve().parents[3] / "models"


def seed_price(dsn: str, model: str, body: dict[str, Any]) -> None:
    """A price for a model the local stack starts serving (its spec.prices, else free), so its usage
    is billed; an admin's later SetModelPrice wins (an existing price is kept)."""
    import asyncpg

    prices = body.get("spec", {}).get("prices") or {}
    row = (model, int(prices.get("promptPer1k", 0)), int(prices.get("completionPer1k", 0)))

    async def insert() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO model_prices VALUES ($1, to_timestamp(0), $2, $3) ON CONFLICT DO NOTHING", *row
            )
        finally:
            await conn.close()

    asyncio.run(insert())


async def _billing_schema(dsn: str) -> None:
    import asyncpg

    from uplion.core.migrations import migrate

    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, "uplion.billing", "billing")
    finally:
        await conn.close()


@dataclass
class Stack:
    workdir: Path
    gateway_port: int = 0
    http_port: int = 0
    accounts_port: int = 0
    pulsar: Pulsar | None = None
    postgres: Postgres | None = None
    redis: Redis | None = None
    gateway: Service | None = None
    envoy: Envoy | None = None
    accounts: Service | None = None
    admin_token: str = ""
    api_key: str = ""
    admin_password: str = ""  # the console's sign-in (admin@uplion.local, demo@uplion.local)
    demo_password: str = ""
    _started: list[tuple[str, Stoppable]] = field(default_factory=list)
    # the AIModel manifests the local runner serves (and the admin API writes)
    models_dir: Path = MODELS_DIR
    # provider keys for remote models (UPLION_SECRET_<SECRET>_<KEY>), beside the process environment
    secrets: dict[str, str] = field(default_factory=dict)
    models: LocalModels | None = None
    # an OpenTelemetry collector every service and Envoy send spans to (docs/tracing.md), written to
    # <workdir>/otelcol/spans.jsonl
    traces: bool = False
    collector: Collector | None = None
    # the gateway and billing share a proof key: work done for a gateway that died is billed
    # (billing/README.md, "A gateway that dies"); off only to measure what it costs (bench/peers.py)
    usage_recovery: bool = True

    def start(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.workdir.chmod(0o755)
        if self.traces:
            self.collector = start_otelcol(self.workdir / "otelcol")
            self._started.append(("otelcol", self.collector))
            # this process starts every service (workers too) with its own environment plus their settings
            os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.collector.endpoint
        self.pulsar = start_pulsar(self.workdir / "pulsar")
        self._started.append(("pulsar", self.pulsar))
        self.postgres = start_postgres(self.workdir / "postgres")
        self._started.append(("postgres", self.postgres))
        self.redis = start_redis(self.workdir / "redis")
        self._started.append(("redis", self.redis))
        logs = self.workdir / "logs"
        logs.mkdir()
        models_dir = str(self.models_dir.resolve())
        # the gateway signs each task's caller, so that billing applies what workers report for tasks a
        # dead gateway never billed (billing/README.md, "A gateway that dies"): a key of this run's
        proof_key = secrets.token_hex(32) if self.usage_recovery else ""
        self.gateway = start_gateway(logs, self.pulsar.service_url, [], port=self.gateway_port,
                                     UPLION_MODELS_DIR=models_dir, UPLION_DATABASE_URL=self.postgres.dsn,
                                     UPLION_USAGE_PROOF_KEY=proof_key)  # fmt: skip
        self._started.append(("gateway", self.gateway))
        asyncio.run(_billing_schema(self.postgres.dsn))
        dsn = self.postgres.dsn
        self.models = LocalModels(
            self.models_dir.resolve(), logs, Platform(self.pulsar.service_url, self.pulsar.admin_url),
            self.workdir / "models-status.json", {**os.environ, **self.secrets},
            on_model=lambda model, body: seed_price(dsn, model, body),
        )  # fmt: skip
        self.models.start(wait_ready=120)
        self._started.append(("models", self.models))
        self.accounts = start_accounts(
            logs, self.postgres.dsn, self.redis.url, port=self.accounts_port, UPLION_MODELS_DIR=models_dir,
            UPLION_MODELS_STATUS_FILE=str(self.workdir / "models-status.json"),
            UPLION_PULSAR_ADMIN_URL=self.pulsar.admin_url,
        )  # fmt: skip
        self._started.append(("accounts", self.accounts))
        authz = start_authz(logs, self.postgres.dsn, self.redis.url)
        self._started.append(("authz", authz))
        ratelimit = start_ratelimit(logs, self.redis.url, pulsar_url=self.pulsar.service_url)
        self._started.append(("ratelimit", ratelimit))
        console = start_console(logs, console_assets())
        self._started.append(("console", console))
        self.envoy, self.http_port = start_edge(
            logs, self.gateway.port, port=self.http_port, authz_port=authz.port, accounts_port=self.accounts.port,
            ratelimit_ports=(ratelimit.port,), console_port=console.port,
            otlp_port=self.collector.port if self.collector else None,
        )  # fmt: skip
        self._started.append(("envoy", self.envoy))
        self._create_accounts()
        billing = start_billing(logs, self.pulsar.service_url, self.postgres.dsn, self.redis.url,
                                UPLION_USAGE_PROOF_KEY=proof_key)  # fmt: skip
        self._started.append(("billing", billing))

    def _create_accounts(self) -> None:
        """An admin (its API token is the CLI's credential) and a demo member with an API key, each
        with a new random password for the console's sign-in."""
        from uplion.accounts.cli import Client
        from uplion.v1 import admin_pb2

        assert self.postgres is not None
        assert self.accounts is not None
        admin = bootstrap_admin(self.postgres.dsn)
        self.admin_token = admin["secret"]
        self.admin_password, self.demo_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        client = Client(f"127.0.0.1:{self.accounts.port}", self.admin_token)
        client.call("UpdateUser", admin_pb2.UpdateUserRequest(user_id=admin["user_id"], password=self.admin_password))
        _, token = client.create_user_with_token("demo@uplion.local", token_name="quickstart",  # noqa: S106
                                                 password=self.demo_password)  # fmt: skip
        self.api_key = token.secret
        client.channel.close()

    def serving(self) -> list[str]:
        """The AIModels the local runner reports Running."""
        if self.models is None:
            return []
        return sorted(n for n, st in self.models.statuses().items() if st["state"] == "Running")

    def processes(self) -> list[tuple[str, int]]:
        """(name, pid) of every process started so far, in start order; the rate limiter's
        settler is listed as its own entry ("ratelimit settler"), and each model's worker processes
        the local runner started as "worker <model>"."""
        out = []
        for name, svc in self._started:
            proc = getattr(svc, "proc", None)
            if proc is not None:
                out.append((name, proc.pid))
            settler = getattr(svc, "settler", None)
            if settler is not None:
                out.append((f"{name} settler", settler.proc.pid))
        if self.models is not None:
            for model, run in list(self.models.running.items()):
                out += [(f"worker {model}", p.pid) for p in run.procs]
        return out

    def dead(self) -> list[str]:
        out = []
        for name, svc in self._started:
            proc = getattr(svc, "proc", None)
            if proc is not None and not proc.alive():
                out.append(name)
        return out

    def stop(self) -> None:
        while self._started:
            _, svc = self._started.pop()
            svc.stop()

    def describe(self) -> dict[str, str]:
        if not (self.pulsar and self.postgres and self.redis and self.gateway):
            raise RuntimeError("stack not started")
        return {
            "console": f"http://127.0.0.1:{self.http_port}/",
            "console_admin": f"admin@uplion.local {self.admin_password}",
            "console_member": f"demo@uplion.local {self.demo_password}",
            "openai_base_url": f"http://127.0.0.1:{self.http_port}/v1",
            "api_key": self.api_key,
            "edge_grpc": f"127.0.0.1:{self.http_port}",
            "gateway_grpc_internal": f"127.0.0.1:{self.gateway.port}",
            "accounts_grpc": f"127.0.0.1:{self.accounts.port if self.accounts else 0}",
            "admin_token": self.admin_token,
            "models": f"{self.models_dir} ({', '.join(self.serving())})",
            "pulsar_url": self.pulsar.service_url,
            "pulsar_admin_url": self.pulsar.admin_url,
            # token authentication is on; every service has its own role (docs/pulsar-auth.md)
            "pulsar_superuser_token_file": str(self.pulsar.auth.superuser_token_file if self.pulsar.auth else ""),
            "postgres_dsn": self.postgres.dsn,
            "redis_url": self.redis.url,
            "logs": str(self.workdir / "logs"),
            **({"spans": str(self.collector.path)} if self.collector else {}),
        }

    def banner(self) -> str:
        lines = ["uplion is up (Ctrl-C stops everything):"]
        lines += [f"  {k:18} {v}" for k, v in self.describe().items()]
        body = '{"model": "echo", "messages": [{"role": "user", "content": "hello"}]}'
        accounts = self.accounts.port if self.accounts else 0
        lines += [
            "", "try it:",
            f"  curl -s http://127.0.0.1:{self.http_port}/v1/chat/completions -H 'authorization: Bearer {self.api_key}'"
            f" -H 'content-type: application/json' -d '{body}'",
            f"  OPENAI_BASE_URL=http://127.0.0.1:{self.http_port}/v1 OPENAI_API_KEY={self.api_key}"
            " .venv/bin/python examples/openai_sdk.py",
            f"  UPLION_EDGE=127.0.0.1:{self.http_port} UPLION_API_KEY={self.api_key}"
            " .venv/bin/python examples/quickstart.py",
            "", "accounts (a user and an API key in one command):",
            f"  UPLION_ACCOUNTS=127.0.0.1:{accounts} UPLION_ADMIN_TOKEN={self.admin_token}"
            " .venv/bin/uplion users create alice@example.com --token laptop",
        ]  # fmt: skip
        return "\n".join(lines)
