"""Spend mirrored into Redis for the authz service, and rebuilt from PostgreSQL so drift heals.

Keys: `uplion:spend:user:<id>` and `uplion:spend:token:<id>`, hashes with `credits` and `tokens`
(micro-credits and tokens used). PostgreSQL is the truth. After a batch commits its increments are
added here; a crash between the commit and these increments, or a Redis outage, leaves Redis behind
until the next rebuild (at start, then every reconcile interval, between batches so nothing races).

A Redis server that restarted (or was replaced) comes back empty: an increment would then create a
hash holding that increment alone, far below the truth. So every server's run id is compared before
each batch's increments (and about once a second when idle), and a change rebuilds first. Every
subject with a quota limit gets a hash, zero when it has spent nothing: authz reads a limited
subject without one as "ask PostgreSQL".
"""

from __future__ import annotations

from redis.asyncio import RedisCluster

from uplion.core.credentials import spend_key
from uplion.core.migrations import Conn
from uplion.core.quota import held_key, hold_field
from uplion.core.redis_client import AnyRedis

CHUNK = 1000


def key(subject: str) -> str:
    """`subject` is `user:<id>` or `token:<id>`."""
    kind, _, subject_id = subject.partition(":")
    return spend_key(kind, subject_id)


async def add(r: AnyRedis, spend: dict[str, tuple[int, int]]) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for subject, (credits, tokens) in spend.items():
            pipe.hincrby(key(subject), "credits", credits)
            pipe.hincrby(key(subject), "tokens", tokens)
        await pipe.execute()


Held = tuple[str, str, str]  # user id, token id, the edge's request id


async def release(r: AnyRedis, holds: list[Held]) -> None:
    """Delete each request's quota hold on its user and token (`uplion.core.quota`); deleting a hold
    that is gone (a duplicate event, an unlimited subject) changes nothing."""
    async with r.pipeline(transaction=False) as pipe:
        for user_id, token_id, request_id in holds:
            field = hold_field(request_id)
            if user_id:
                pipe.hdel(held_key("user", user_id), field)
            if token_id:
                pipe.hdel(held_key("token", token_id), field)
        await pipe.execute()


SPEND = "SELECT subject_kind, subject_id, used_micro_credits, used_tokens FROM spend"
# and a zero row for each user or token with a quota limit and no spend yet (the accounts tables:
# in the same database, once the accounts service has created them)
SPEND_AND_LIMITED = """
SELECT subject_kind, subject_id, used_micro_credits, used_tokens FROM spend
UNION ALL
SELECT 'user', u.user_id, 0, 0 FROM users u
WHERE (u.quota_limit_micro_credits IS NOT NULL OR u.quota_limit_tokens IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM spend s WHERE s.subject_kind = 'user' AND s.subject_id = u.user_id)
UNION ALL
SELECT 'token', t.token_id, 0, 0 FROM api_tokens t
WHERE (t.quota_limit_micro_credits IS NOT NULL OR t.quota_limit_tokens IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM spend s WHERE s.subject_kind = 'token' AND s.subject_id = t.token_id)
"""


async def server_ids(r: AnyRedis) -> frozenset[str]:
    """The run ids of the Redis server (or of every cluster primary): a restart changes them."""
    if isinstance(r, RedisCluster):
        infos = await r.info("server", target_nodes=RedisCluster.PRIMARIES)
        return frozenset(str(info["run_id"]) for info in infos.values())
    return frozenset([str((await r.info("server"))["run_id"])])


async def rebuild(r: AnyRedis, conn: Conn) -> int:
    """Set every subject's Redis values to PostgreSQL's; returns how many subjects were written."""
    accounts = await conn.fetchval("SELECT to_regclass('users') IS NOT NULL AND to_regclass('api_tokens') IS NOT NULL")
    rows = await conn.fetch(SPEND_AND_LIMITED if accounts else SPEND)
    for start in range(0, len(rows), CHUNK):
        async with r.pipeline(transaction=False) as pipe:
            for row in rows[start : start + CHUNK]:
                subject = f"{row['subject_kind']}:{row['subject_id']}"
                pipe.hset(key(subject), mapping={"credits": row["used_micro_credits"], "tokens": row["used_tokens"]})
            await pipe.execute()
    return len(rows)
