"""Stored responses in PostgreSQL (the gateway's only database use), scoped to their owner.

Writes are grouped: a save waits for the one INSERT in flight, then goes out with every save that
arrived meanwhile (one round trip for all of them), so storing costs no extra round trip per request
under load and one when idle. A response is saved before its answer's last event is sent, so a
client that got its answer can read it back at once.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram

from uplion.core.migrations import migrate
from uplion.v1 import responses_pb2

SAVED = Counter("uplion_gateway_responses_stored_total", "Responses stored (store: true)")
SAVE_FAILURES = Counter("uplion_gateway_responses_store_failures_total",
                        "Responses answered but not stored (the database refused or was down)")  # fmt: skip
BATCH = Histogram("uplion_gateway_responses_store_batch", "Responses written per INSERT round trip",
                  buckets=(1, 2, 4, 8, 16, 32, 64, 128))  # fmt: skip

_INSERT = """
INSERT INTO responses (response_id, user_id, previous_response_id, input_items, response)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (response_id) DO NOTHING
"""
# a response and the ones it continues, newest first, each its owner's (a chain never crosses users)
_CHAIN = """
WITH RECURSIVE chain AS (
    SELECT response_id, previous_response_id, input_items, response, 0 AS depth
    FROM responses WHERE response_id = $1 AND user_id = $2
  UNION ALL
    SELECT r.response_id, r.previous_response_id, r.input_items, r.response, c.depth + 1
    FROM responses r JOIN chain c ON r.response_id = c.previous_response_id
    WHERE r.user_id = $2 AND c.depth < $3
)
SELECT response_id, previous_response_id, input_items, response FROM chain ORDER BY depth
"""
_GET = """
SELECT response_id, previous_response_id, input_items, response FROM responses
WHERE response_id = ANY($1::text[]) AND user_id = $2
"""
MAX_CHAIN = 10_000  # responses one conversation may continue through


@dataclass(frozen=True)
class Stored:
    response_id: str
    previous_response_id: str | None
    input_items: list[dict[str, Any]]
    response: responses_pb2.Response

    @classmethod
    def of(cls, row: asyncpg.Record) -> Stored:
        return cls(row["response_id"], row["previous_response_id"], json.loads(row["input_items"]),
                   responses_pb2.Response.FromString(row["response"]))  # fmt: skip


class ResponseStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, max_connections: int) -> ResponseStore:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=max_connections)
        async with pool.acquire() as conn:
            await migrate(conn, "uplion.gateway", "gateway")
        return cls(pool)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.pool.close()

    async def save(self, user_id: str, input_items: list[dict[str, Any]], r: responses_pb2.Response) -> None:
        """Store `r` (idempotent: a response id is stored once); raises if the database refuses."""
        row = (r.id, user_id, r.previous_response_id if r.HasField("previous_response_id") else None,
               json.dumps(input_items, ensure_ascii=False, separators=(",", ":")), r.SerializeToString())  # fmt: skip
        done = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            BATCH.observe(len(batch))
            try:
                await self.pool.executemany(_INSERT, [row for row, _ in batch])
            except (asyncpg.PostgresError, OSError) as e:
                SAVE_FAILURES.inc(len(batch))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(e)
            else:
                SAVED.inc(len(batch))
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def chain(self, response_id: str, user_id: str) -> list[Stored]:
        """The response and those it continues, oldest first; [] if `user_id` has no such response."""
        rows = await self.pool.fetch(_CHAIN, response_id, user_id, MAX_CHAIN)
        return [Stored.of(r) for r in reversed(rows)]

    async def get_many(self, response_ids: list[str], user_id: str) -> dict[str, Stored]:
        rows = await self.pool.fetch(_GET, response_ids, user_id)
        return {r["response_id"]: Stored.of(r) for r in rows}

    async def get(self, response_id: str, user_id: str) -> Stored | None:
        return (await self.get_many([response_id], user_id)).get(response_id)

    async def delete(self, response_id: str, user_id: str) -> bool:
        status = await self.pool.execute("DELETE FROM responses WHERE response_id = $1 AND user_id = $2",
                                         response_id, user_id)  # fmt: skip
        return bool(status.endswith(" 1"))
