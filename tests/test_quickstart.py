"""The README's run command serves the README's example as written, and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil

from uplion.devstack.procs import free_port, spawn

ROOT = Path(__file__).resolve().parents[1]


async def _billed(dsn: str, at_least: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(100):
            n = int(await conn.fetchval("SELECT count(*) FROM usage_events"))
            if n >= at_least:
                return n
            await asyncio.sleep(0.2)
        return n
    finally:
        await conn.close()


def test_run_command_serves_the_quickstart_example(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    stack_dir = tmp_path / "stack"
    argv = ["--dir", str(stack_dir), "--gateway-port", str(port), "--http-port", str(http_port)]
    up = spawn(
        "devstack",
        [sys.executable, "-m", "uplion.devstack", "up", *argv],
        tmp_path / "up.log",
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 240
        while "uplion is up" not in up.log_path.read_text() and time.monotonic() < deadline:
            assert up.alive(), up.log_tail()
            time.sleep(0.5)
        assert "uplion is up" in up.log_path.read_text(), up.log_tail()
        env = {**os.environ, "UPLION_GATEWAY": f"127.0.0.1:{port}"}
        out = subprocess.run(
            [sys.executable, "examples/quickstart.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert "chat: hello from uplion | usage: 6 tokens" in out.stdout
        assert "stream: hello |from |uplion" in out.stdout
        assert "embedding: 384 dimensions" in out.stdout
        env = {**os.environ, "OPENAI_BASE_URL": f"http://127.0.0.1:{http_port}/v1"}
        out = subprocess.run(
            [sys.executable, "examples/openai_sdk.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert "chat: hello over HTTP" in out.stdout
        assert "stream: streamed |over |HTTP" in out.stdout
        assert "embedding: 384 dimensions" in out.stdout
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 8  # pulsar, postgres, redis, gateway, two workers, envoy, billing
        # every request above was billed: its usage event went gateway -> Pulsar -> billing -> PostgreSQL
        state = json.loads((stack_dir / "state.json").read_text())
        assert asyncio.run(_billed(state["postgres_dsn"], at_least=6)) >= 6
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.popen.wait(90)
    assert up.popen.returncode == 0, up.log_tail()
    # everything it started is gone
    assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
