"""Usage queries can go to a PostgreSQL read replica (UPLION_DATABASE_READ_URL): a real streaming
replica (pg_basebackup, hot standby) of the session's PostgreSQL. Proof that the replica answers:
with its WAL replay paused, rows committed on the primary are not in the API's answer; resumed,
they are."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.databases import new_database
from uplion.accounts.cli import Client
from uplion.devstack.platform import bootstrap_admin, start_accounts
from uplion.devstack.postgres import Postgres, start_replica
from uplion.v1 import admin_pb2

DB = "usage_replica"
INSERT = """INSERT INTO usage_events (event_id, user_id, token_id, model, kind, outcome, streamed, prompt_tokens,
            completion_tokens, cost_micro_credits, started_at, finished_at)
            VALUES ($1, 'u-replica', 't-replica', 'replica-model', 1, 1, false, 3, 4, 0, now(), now())"""


async def _sql(dsn: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def replica_setup(postgres: Postgres, run_dir: Path) -> Iterator[tuple[Client, str, str]]:
    primary = new_database(postgres, DB)
    replica = start_replica(postgres, run_dir / "postgres-replica")
    replica_dsn = replica.dsn.rsplit("/", 1)[0] + f"/{DB}"
    accounts = start_accounts(run_dir, primary, UPLION_DATABASE_READ_URL=replica_dsn)
    admin = Client(f"127.0.0.1:{accounts.port}", bootstrap_admin(primary)["secret"])
    yield admin, primary, replica_dsn
    admin.channel.close()
    accounts.stop()
    replica.stop()


def _requests(admin: Client) -> int:
    """Requests in the last hour (bounds inside a day: the raw usage_events, which the test writes)."""
    start, end = Timestamp(), Timestamp()
    now = time.time()
    start.FromSeconds(int(now) - 3599)
    end.FromSeconds(int(now) + 3599)
    reply = admin.call("QueryUsage", admin_pb2.QueryUsageRequest(model="replica-model", start=start, end=end))
    return sum(r.requests for r in reply.rows)


async def _replayed(replica_dsn: str, event_id: str) -> None:
    for _ in range(200):
        if await _sql(replica_dsn, "SELECT count(*) FROM usage_events WHERE event_id = $1", event_id):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{event_id} never reached the replica")


def test_usage_queries_read_the_replica(replica_setup: tuple[Client, str, str]) -> None:
    admin, primary, replica_dsn = replica_setup
    assert asyncio.run(_sql(replica_dsn, "SELECT pg_is_in_recovery()")) is True
    asyncio.run(_sql(primary, INSERT, "e-1"))
    asyncio.run(_replayed(replica_dsn, "e-1"))
    assert _requests(admin) == 1

    asyncio.run(_sql(replica_dsn, "SELECT pg_wal_replay_pause()"))
    asyncio.run(_sql(primary, INSERT, "e-2"))
    assert asyncio.run(_sql(primary, "SELECT count(*) FROM usage_events")) == 2
    assert _requests(admin) == 1  # answered by the paused replica, not the primary

    asyncio.run(_sql(replica_dsn, "SELECT pg_wal_replay_resume()"))
    asyncio.run(_replayed(replica_dsn, "e-2"))
    assert _requests(admin) == 2
