"""The set of processes `uplion-devstack up` runs, started in dependency order, stopped in reverse."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .postgres import Postgres, start_postgres
from .pulsar import Pulsar, start_pulsar
from .redis import Redis, start_redis


class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class Stack:
    workdir: Path
    pulsar: Pulsar | None = None
    postgres: Postgres | None = None
    redis: Redis | None = None
    _started: list[tuple[str, Stoppable]] = field(default_factory=list)

    def start(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.workdir.chmod(0o755)
        self.pulsar = start_pulsar(self.workdir / "pulsar")
        self._started.append(("pulsar", self.pulsar))
        self.postgres = start_postgres(self.workdir / "postgres")
        self._started.append(("postgres", self.postgres))
        self.redis = start_redis(self.workdir / "redis")
        self._started.append(("redis", self.redis))

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
        if not (self.pulsar and self.postgres and self.redis):
            raise RuntimeError("stack not started")
        return {
            "pulsar_url": self.pulsar.service_url,
            "pulsar_admin_url": self.pulsar.admin_url,
            "postgres_dsn": self.postgres.dsn,
            "redis_url": self.redis.url,
        }

    def banner(self) -> str:
        lines = ["uplion is up (Ctrl-C stops everything):"]
        lines += [f"  {k:18} {v}" for k, v in self.describe().items()]
        return "\n".join(lines)
