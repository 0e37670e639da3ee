"""Spend mirrored into Redis for the authz service, and rebuilt from PostgreSQL so drift heals.

Keys: `uplion:spend:user:<id>` and `uplion:spend:token:<id>`, hashes with `credits` and `tokens`
(micro-credits and tokens used). PostgreSQL is the truth. After a batch commits its increments are
added here; a crash between the commit and these increments, or a Redis outage, leaves Redis behind
until the next rebuild (at start, then every reconcile interval, between batches so nothing races).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from uplion.core.credentials import spend_key
from uplion.core.migrations import Conn

CHUNK = 1000


def key(subject: str) -> str:
    """`subject` is `user:<id>` or `token:<id>`."""
    kind, _, subject_id = subject.partition(":")
    return spend_key(kind, subject_id)


async def add(r: aioredis.Redis, spend: dict[str, tuple[int, int]]) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for subject, (credits, tokens) in spend.items():
            pipe.hincrby(key(subject), "credits", credits)
            pipe.hincrby(key(subject), "tokens", tokens)
        await pipe.execute()


async def rebuild(r: aioredis.Redis, conn: Conn) -> int:
    """Set every subject's Redis values to PostgreSQL's; returns how many subjects were written."""
    rows = await conn.fetch("SELECT subject_kind, subject_id, used_micro_credits, used_tokens FROM spend")
    for start in range(0, len(rows), CHUNK):
        async with r.pipeline(transaction=False) as pipe:
            for row in rows[start : start + CHUNK]:
                subject = f"{row['subject_kind']}:{row['subject_id']}"
                pipe.hset(key(subject), mapping={"credits": row["used_micro_credits"], "tokens": row["used_tokens"]})
            await pipe.execute()
    return len(rows)
