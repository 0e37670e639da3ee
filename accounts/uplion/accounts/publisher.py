"""Write-through of committed account changes to Redis, where the authz service reads them.

PostgreSQL commits first; then the new record (or a tombstone) goes to Redis with PUT_IF_NEWER. A
Redis failure is logged and the write retried in the background until it lands, so an outage delays
a revocation on the edge by at most the outage (and authz falls back to PostgreSQL while Redis is
unreachable, so it never serves the stale copy meanwhile)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import Counter

from uplion.core.credentials import (
    GONE_TTL_MS,
    PUT_IF_NEWER,
    TokenRecord,
    UserRecord,
    gone_fields,
    limit_fields,
    limits_key,
    put_args,
    token_key,
    user_key,
)
from uplion.core.redis_client import ERRORS as REDIS_ERRORS
from uplion.core.redis_client import AnyRedis

log = logging.getLogger("uplion.accounts")
PUBLISH_FAILURES = Counter("uplion_accounts_redis_publish_failures_total", "Redis write-throughs that failed (retried)")


class Publisher:
    def __init__(self, r: AnyRedis | None, retry_interval_s: float = 0.5) -> None:
        self.r = r
        self.retry_interval_s = retry_interval_s
        self._pending: dict[str, list[str]] = {}  # key -> ARGV; only the newest write per key matters
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.r is not None:
            self._task = asyncio.create_task(self._retry_loop())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending:
            log.warning("redis writes still pending at shutdown", extra={"pending": len(self._pending)})

    async def token(self, rec: TokenRecord) -> None:
        await self._put(token_key(rec.secret_hash), put_args(rec.fields()))

    async def token_gone(self, hash_: bytes, version: int) -> None:
        await self._put(token_key(hash_), put_args(gone_fields(version), GONE_TTL_MS))

    async def user(self, rec: UserRecord) -> None:
        await self._put(user_key(rec.user_id), put_args(rec.fields()))

    async def user_gone(self, user_id: str, version: int) -> None:
        await self._put(user_key(user_id), put_args(gone_fields(version), GONE_TTL_MS))

    async def limits(self, kind: str, subject_id: str, rate_limits: dict[str, int]) -> None:
        """The account's own rate limits for the rate-limit service (replaced whole; none: deleted)."""
        if self.r is None:
            return
        fields = limit_fields(rate_limits)
        try:
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.delete(limits_key(kind, subject_id))
                if fields:
                    pipe.hset(limits_key(kind, subject_id), mapping=fields)  # type: ignore[arg-type]
                await pipe.execute()
        except REDIS_ERRORS as e:
            PUBLISH_FAILURES.inc()
            log.warning("redis write of rate limits failed", extra={"error": str(e)})

    async def _put(self, key: str, argv: list[str]) -> None:
        if self.r is None:
            return
        try:
            await self.r.eval(PUT_IF_NEWER, 1, key, *argv)
            self._pending.pop(key, None)
        except REDIS_ERRORS as e:
            PUBLISH_FAILURES.inc()
            log.warning("redis write-through failed; will retry", extra={"error": str(e)})
            self._pending[key] = argv

    async def _retry_loop(self) -> None:
        assert self.r is not None
        while True:
            await asyncio.sleep(self.retry_interval_s)
            for key, argv in list(self._pending.items()):
                try:
                    await self.r.eval(PUT_IF_NEWER, 1, key, *argv)
                except REDIS_ERRORS:
                    break
                if self._pending.get(key) is argv:
                    del self._pending[key]
