"""Starting, probing and stopping child processes."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()  # this process never hands out one port twice


def port_pool(ephemeral: tuple[int, int], floor: int = 10000) -> range:
    """The ports `free_port` picks from: below the kernel's ephemeral range. A port the kernel picks
    (bind to 0) comes from that range, which is also where every outgoing connection gets its local
    port: a service's client connecting elsewhere could take it between the pick and the bind (CI saw
    Envoy fail with "Address already in use" so). Empty when the range leaves too little below it."""
    low = ephemeral[0]
    return range(floor, low) if low - floor >= 4096 else range(0)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = _EPHEMERAL_RANGE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return (32768, 60999)  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, outside the ephemeral range (see `port_pool`), chosen at
    random so that concurrent test processes rarely pick the same one; the kernel's pick when the
    machine leaves no room below its ephemeral range."""
    pool = port_pool(_ephemeral_range())
    for _ in range(200 if pool else 0):
        port = secrets.choice(pool)
        if port not in _handed_out and _bindable(host, port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_block(count: int, host: str = "127.0.0.1", tries: int = 50) -> int:
    """The first of `count` consecutive TCP ports nobody listens on right now (a worker pod of N
    processes serves metrics on its port + 0..N-1: a lone free port is not enough)."""
    for _ in range(tries):
        base = free_port(host)
        rest = range(base + 1, base + count)
        if all(port not in _handed_out and _bindable(host, port) for port in rest):
            _handed_out.update(rest)
            return base
    raise RuntimeError(f"no {count} consecutive free ports on {host} after {tries} tries")


@dataclass
class Proc:
    """A child service process that runs in its own session and logs to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process group, wait, then SIGKILL whatever is left."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(timeout=0.0, sig=signal.SIGKILL)


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        user=user,
        start_new_session=True,
    )
    log.close()
    return Proc(name, popen, log_path)


class NotReady(RuntimeError):
    pass


def wait_until(proc: Proc, ready: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
    """Poll `ready` until it returns True; fail with the log tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise NotReady(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        with contextlib.suppress(Exception):  # any probe failure means "not yet"
            if ready():
                return
        time.sleep(interval)
    proc.stop()
    raise NotReady(f"{proc.name} not ready after {timeout:.0f}s:\n{proc.log_tail()}")


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def tcp_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
