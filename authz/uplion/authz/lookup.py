"""Finding what is known about a secret hash: Redis first (one round trip, a Lua script), then
PostgreSQL on a miss (refilling Redis), each under its own timeout; a circuit breaker skips Redis
for a while after it fails, so an outage costs one timeout, not one per request. A PostgreSQL lookup
first takes a token from the client address's budget (`throttle.py`), given back when it finds a key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import Counter

from uplion.core.credentials import (
    PUT_IF_NEWER,
    SPEND_KEY,
    TOKEN_COLUMNS,
    UNKNOWN_TTL_MS,
    USER_KEY,
    Spend,
    TokenRecord,
    UserRecord,
    gone_fields,
    put_args,
    token_from_row,
    token_key,
    user_key,
)

from .decision import Found
from .throttle import AddressBudget

log = logging.getLogger("uplion.authz")
LOOKUPS = Counter("uplion_authz_lookups_total", "Cache-miss lookups by the source that answered", ["source"])
BACKEND_FAILURES = Counter("uplion_authz_backend_failures_total", "Redis/PostgreSQL lookups that failed", ["backend"])
THROTTLED = Counter(
    "uplion_authz_throttled_total", "PostgreSQL lookups refused: the client address used up its unknown-key budget"
)

# KEYS[1] = token key; ARGV[1] = user key prefix, ARGV[2] = spend key prefix.
# Returns {} (unknown), {token} (a tombstone) or {token, user, user spend, token spend}.
FETCH = """
local t = redis.call('HGETALL', KEYS[1])
if #t == 0 then return {} end
local uid, tid
for i = 1, #t, 2 do
  if t[i] == 'user_id' then uid = t[i + 1] elseif t[i] == 'token_id' then tid = t[i + 1] end
end
if not uid then return {t} end
return {t, redis.call('HGETALL', ARGV[1] .. uid), redis.call('HGETALL', ARGV[2] .. 'user:' .. uid),
        redis.call('HGETALL', ARGV[2] .. 'token:' .. tid)}
"""

BY_HASH = f"""
SELECT {TOKEN_COLUMNS}, u.tier AS u_tier, u.disabled AS u_disabled, u.quota_limit_micro_credits AS u_lc,
       u.quota_limit_tokens AS u_lt, u.version AS u_version,
       su.used_micro_credits AS su_credits, su.used_tokens AS su_tokens,
       st.used_micro_credits AS st_credits, st.used_tokens AS st_tokens
FROM api_tokens t JOIN users u USING (user_id)
LEFT JOIN spend su ON su.subject_kind = 'user' AND su.subject_id = t.user_id
LEFT JOIN spend st ON st.subject_kind = 'token' AND st.subject_id = t.token_id
WHERE t.secret_hash = $1 AND t.scope = 'inference'
"""  # noqa: S608 (only fixed column lists are interpolated); admin-scoped tokens are no inference keys


class Unavailable(Exception):
    """Neither Redis nor PostgreSQL answered in time."""


class Throttled(Exception):
    """The client address looked up too many unknown keys; it may try again in `wait_s`."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"retry in {wait_s:.1f} s")
        self.wait_s = wait_s


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def found_from_redis(reply: list[list[str]]) -> Found | None:
    """The Lua reply as a Found, or None when Redis cannot answer alone (pure)."""
    if not reply:
        return None  # unknown to Redis: ask PostgreSQL
    token_f = _pairs(reply[0])
    if "gone" in token_f:
        return Found(None)
    if len(reply) < 4 or not reply[1] or "gone" in _pairs(reply[1]):
        return None  # the owner's record is missing: refill both from PostgreSQL
    return Found(
        TokenRecord.from_fields(token_f),
        UserRecord.from_fields(_pairs(reply[1])),
        Spend.from_fields(_pairs(reply[2])),
        Spend.from_fields(_pairs(reply[3])),
    )


class Lookup:
    def __init__(
        self,
        redis: aioredis.Redis | None,
        pool: asyncpg.Pool,
        redis_timeout_s: float,
        db_timeout_s: float,
        breaker_open_s: float,
        budget: AddressBudget | None = None,
    ) -> None:
        self.redis = redis
        self.budget = budget
        self.pool = pool
        self.redis_timeout_s = redis_timeout_s
        self.db_timeout_s = db_timeout_s
        self.breaker_open_s = breaker_open_s
        self._redis_down_until = 0.0
        self._fetch = redis.register_script(FETCH) if redis is not None else None
        self._refills: set[asyncio.Task[None]] = set()

    async def find(self, hash_: bytes, address: str = "") -> Found:
        """What is known about `hash_`; `address` (the client's bucket) pays for a PostgreSQL lookup
        that finds nothing. Raises Unavailable, or Throttled when the address's budget is used up."""
        if self._fetch is not None and time.monotonic() >= self._redis_down_until:
            try:
                reply = await asyncio.wait_for(
                    self._fetch(keys=[token_key(hash_)], args=[USER_KEY, SPEND_KEY]), self.redis_timeout_s
                )
                found = found_from_redis(reply)
                if found is not None:
                    LOOKUPS.labels("redis").inc()
                    return found
            except (aioredis.RedisError, OSError, TimeoutError) as e:
                BACKEND_FAILURES.labels("redis").inc()
                self._redis_down_until = time.monotonic() + self.breaker_open_s
                log.warning("redis lookup failed; using PostgreSQL", extra={"error": type(e).__name__})
        if self.budget is None:
            return await self._from_postgres(hash_)
        wait = self.budget.take(address)
        if wait > 0:
            THROTTLED.inc()
            raise Throttled(wait)
        found = await self._from_postgres(hash_)
        if found.token is not None:
            self.budget.give_back(address)  # a key that exists is no guess
        return found

    async def _from_postgres(self, hash_: bytes) -> Found:
        try:
            row = await asyncio.wait_for(self._query(hash_), self.db_timeout_s)
        except (asyncpg.PostgresError, OSError, TimeoutError) as e:
            BACKEND_FAILURES.labels("postgres").inc()
            raise Unavailable(f"credential stores unreachable ({type(e).__name__})") from e
        LOOKUPS.labels("postgres").inc()
        if row is None:
            self._refill(token_key(hash_), put_args(gone_fields(0), UNKNOWN_TTL_MS))
            return Found(None)
        token = token_from_row(row)
        user = UserRecord(token.user_id, row["u_tier"], row["u_disabled"], row["u_lc"], row["u_lt"], row["u_version"])
        self._refill(token_key(hash_), put_args(token.fields()))
        self._refill(user_key(user.user_id), put_args(user.fields()))
        return Found(
            token,
            user,
            Spend(row["su_credits"] or 0, row["su_tokens"] or 0),
            Spend(row["st_credits"] or 0, row["st_tokens"] or 0),
        )

    async def _query(self, hash_: bytes) -> asyncpg.Record | None:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(BY_HASH, hash_)

    def _refill(self, key: str, argv: list[str]) -> None:
        """Put what PostgreSQL said into Redis, unless Redis already has something newer."""
        if self.redis is None or time.monotonic() < self._redis_down_until:
            return
        task = asyncio.create_task(self._put(key, argv))
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _put(self, key: str, argv: list[str]) -> None:
        assert self.redis is not None
        with contextlib.suppress(aioredis.RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.redis.eval(PUT_IF_NEWER, 1, key, *argv), self.redis_timeout_s)
