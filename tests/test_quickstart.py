"""The README's run command serves the README's example as written, and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import psutil

from uplion.devstack.procs import free_port, spawn

ROOT = Path(__file__).resolve().parents[1]


def _example(name: str, **env: str) -> str:
    """Run one of the README's examples as written; its stdout."""
    out = subprocess.run([sys.executable, f"examples/{name}"], cwd=ROOT, env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


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
    argv = ["--dir", str(stack_dir), "--gateway-port", str(port), "--http-port", str(http_port), "--accounts-port", "0"]
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
        state = json.loads((stack_dir / "state.json").read_text())
        out = _example("quickstart.py", UPLION_EDGE=f"127.0.0.1:{http_port}", UPLION_API_KEY=state["api_key"])
        assert "chat: hello from uplion | usage: 6 tokens" in out
        assert "stream: hello |from |uplion" in out
        assert "embedding: 384 dimensions" in out
        # the README's one-command user + key, then the SDK example with that new key
        created = subprocess.run(
            [str(Path(sys.executable).parent / "uplion"), "--json", "users", "create", "alice@example.com", "--token",
             "laptop"],
            env={**os.environ, "UPLION_ACCOUNTS": state["accounts_grpc"], "UPLION_ADMIN_TOKEN": state["admin_token"]},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        alice_key = json.loads(created.stdout)["secret"]
        # the admin token the run command prints is admin-scoped: a credential for the admin API
        # (and the CLI) only, refused at the inference edge; an inference key is refused by the CLI
        models = httpx.get(f"http://127.0.0.1:{http_port}/v1/models",
                           headers={"authorization": f"Bearer {state['admin_token']}"})  # fmt: skip
        assert models.status_code == 401, models.text
        as_key = subprocess.run(
            [str(Path(sys.executable).parent / "uplion"), "users", "list"],
            env={**os.environ, "UPLION_ACCOUNTS": state["accounts_grpc"], "UPLION_ADMIN_TOKEN": alice_key},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert as_key.returncode == 1
        assert json.loads(as_key.stderr)["error"]["code"] == "insufficient_scope"
        # the CLI's tables: the models the run command serves from models/, Running
        listed = subprocess.run(
            [str(Path(sys.executable).parent / "uplion"), "models", "list"],
            env={**os.environ, "UPLION_ACCOUNTS": state["accounts_grpc"], "UPLION_ADMIN_TOKEN": state["admin_token"]},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        assert header.split()[:4] == ["NAME", "SPEC.MODEL", "SPEC.TYPE", "STATUS.STATE"]
        assert {tuple(r.split()[:4]) for r in rows} >= {("echo", "echo", "echo", "Running"),
                                                         ("minilm", "minilm", "local", "Running")}  # fmt: skip
        out = _example("openai_sdk.py", OPENAI_BASE_URL=f"http://127.0.0.1:{http_port}/v1", OPENAI_API_KEY=alice_key)
        assert "chat: hello over HTTP" in out
        assert "stream: streamed |over |HTTP" in out
        assert "embedding: 384 dimensions" in out
        assert "responses: the Responses API | continues it | completed" in out
        children = psutil.Process(up.pid).children(recursive=True)
        # pulsar, postgres, redis, gateway, two workers, accounts, authz, ratelimit, envoy, billing
        assert len(children) >= 11
        # nothing of the local stack listens beyond loopback, and state.json (admin token) is 0600
        listening = {(p.name(), c.laddr.ip, c.laddr.port) for p in children if p.is_running()
                     for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}  # fmt: skip
        assert listening
        assert {x for x in listening if x[1] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")} == set(), listening
        assert stat.S_IMODE((stack_dir / "state.json").stat().st_mode) == 0o600
        # every request above was billed: its usage event went gateway -> Pulsar -> billing -> PostgreSQL
        assert asyncio.run(_billed(state["postgres_dsn"], at_least=6)) >= 6
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.popen.wait(90)
    assert up.popen.returncode == 0, up.log_tail()
    # everything it started is gone
    assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
