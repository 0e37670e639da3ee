"""The console's API client (TypeScript, run by vitest) against the real edge: Envoy with uplion's
filters and REST transcoding in front of the accounts and authz services on real PostgreSQL and
Redis. No gateway runs behind it (the inference calls check the 401 and 503 the chat page shows)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from uplion.devstack.node import check_node, link_tree
from uplion.devstack.platform import bootstrap_admin, start_accounts, start_authz, start_edge
from uplion.devstack.postgres import Postgres
from uplion.devstack.procs import free_port
from uplion.devstack.redis import Redis

from .conftest import WEB
from .test_console_build import SKIP


async def _new_database(dsn: str) -> str:
    name = f"console_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def edge_env(
    postgres: Postgres, redis_server: Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    d = tmp_path_factory.mktemp("contract")
    models = d / "models"
    models.mkdir()
    dsn = asyncio.run(_new_database(postgres.dsn))  # a database of its own (accounts applies its migrations)
    accounts = start_accounts(d, dsn, redis_server.url, UPLION_MODELS_DIR=str(models))
    authz = start_authz(d, dsn, redis_server.url)
    admin = bootstrap_admin(dsn, "console-contract@uplion.local")
    envoy, port = start_edge(d, free_port(), authz_port=authz.port, accounts_port=accounts.port)
    try:
        yield {"UPLION_EDGE_URL": f"http://127.0.0.1:{port}", "UPLION_ADMIN_TOKEN": admin["secret"]}
    finally:
        envoy.stop()
        authz.stop()
        accounts.stop()


def test_client_against_the_real_edge(edge_env: dict[str, str], tmp_path: Path) -> None:
    check_node()
    project = link_tree(WEB, tmp_path / "web", SKIP)
    out = subprocess.run(
        [str(project / "node_modules" / ".bin" / "vitest"), "run", "--config", "vitest.contract.config.ts"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **edge_env, "CI": "true", "NO_COLOR": "1"},
    )
    print(out.stdout + out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "failed" not in out.stdout.lower().replace("0 failed", "")
    assert "Tests  15 passed (15)" in out.stdout, out.stdout
