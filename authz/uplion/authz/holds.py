"""Holding an admitted request's bound against its user's and token's quotas (`uplion.core.quota`):
one HOLD script per limited subject (the user's and the token's live in different slots: run
concurrently), undone when either refuses. The highest price is read from PostgreSQL at start and
every refresh interval.

Redis failing or slower than its timeout: the request is admitted without a hold (counted, logged
once a second) — the quota is then checked as before, against spend alone, as when authz decides
from PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import asyncpg
from prometheus_client import Counter, Gauge

from uplion.core.quota import HOLD, MAX_PRICE, Subject, held_key, hold_args, hold_field, hold_for
from uplion.core.redis_client import ERRORS as REDIS_ERRORS
from uplion.core.redis_client import AnyRedis

from .decision import Deny, Found, exhausted_quota, quota_held

log = logging.getLogger("uplion.authz")
HOLDS = Counter("uplion_authz_quota_holds_total", "Quota holds of admitted requests by result", ["result"])
MAX_PRICE_GAUGE = Gauge("uplion_authz_quota_max_price", "Highest price per 1k tokens used for holds (micro-credits)")
UNHELD = "unheld"


def limited_subjects(found: Found) -> list[Subject]:
    """The user and token with a quota limit, in the order they are held (pure)."""
    out: list[Subject] = []
    t, u = found.token, found.user
    if t is not None and t.limited:
        s = found.token_spend
        out.append(Subject("token", t.token_id, t.limit_credits, t.limit_tokens, s.credits, s.tokens))
    if u is not None and u.limited:
        s = found.user_spend
        out.append(Subject("user", u.user_id, u.limit_credits, u.limit_tokens, s.credits, s.tokens))
    return out


def estimate_of(header: str | None, default: int) -> int:
    """The edge's token estimate (set by its Lua filter, never by a client), else `default`."""
    try:
        return max(0, int(header)) if header else default
    except ValueError:
        return default


class Holds:
    def __init__(
        self,
        redis: AnyRedis | None,
        pool: asyncpg.Pool,
        ttl_ms: int,
        timeout_s: float,
        price_refresh_s: float,
        default_estimate: int,
        max_concurrent: int = 32,
    ) -> None:
        self.redis = redis
        self.pool = pool
        self.ttl_ms = ttl_ms
        self.timeout_s = timeout_s
        self.price_refresh_s = price_refresh_s
        self.default_estimate = default_estimate
        self.price_timeout_s = 1.0
        # holds wait their turn here rather than fail for want of a pooled connection (a burst of
        # one user's requests); the wait counts within the timeout
        self._slots = asyncio.Semaphore(max_concurrent)
        self.max_price: int | None = None  # unknown until read: holds count tokens only
        self._logged = 0.0
        self._refresher: asyncio.Task[None] | None = None
        # EVALSHA, loading the script again on a node that lost it
        self._script = redis.register_script(HOLD) if redis is not None else None

    async def start(self) -> None:
        """Read the highest price once (bounded), then again every refresh interval."""
        await self._read_price()
        self._refresher = asyncio.create_task(self._refresh_prices())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    async def _refresh_prices(self) -> None:
        while True:
            await asyncio.sleep(self.price_refresh_s)
            await self._read_price()

    async def _read_price(self) -> None:
        try:
            async with self.pool.acquire(timeout=self.price_timeout_s) as conn:
                price = await conn.fetchval(MAX_PRICE, timeout=self.price_timeout_s)
            self.max_price = int(price or 0)
            MAX_PRICE_GAUGE.set(self.max_price)
        except asyncpg.UndefinedTableError:
            self.max_price = 0  # billing has not created its tables: nothing is priced yet
        except (asyncpg.PostgresError, OSError, TimeoutError) as e:
            log.warning("reading model prices failed; keeping the last", extra={"error": type(e).__name__})

    async def hold(self, found: Found, request_id: str | None, estimate_header: str | None) -> Deny | None:
        """Hold the request's bound against each limited subject; a Deny when one has no room."""
        subjects = limited_subjects(found)
        if not subjects or self.redis is None:
            return None
        field = hold_field(request_id or "authz-" + uuid.uuid4().hex)  # no id: the hold lives until its ttl
        bound = hold_for(estimate_of(estimate_header, self.default_estimate), self.max_price or 0)
        now_ms = int(time.time() * 1000)
        try:
            async with asyncio.timeout(self.timeout_s):
                results = await asyncio.gather(
                    *(self._hold(*hold_args(s, field, bound, now_ms, self.ttl_ms)) for s in subjects),
                    return_exceptions=True,
                )
        except TimeoutError:
            results = [TimeoutError()]
        failed = [r for r in results if isinstance(r, BaseException)]
        verdicts = [r[0] for r in results if isinstance(r, list)]
        if failed:  # a hold may have been added before the failure: delete every one (idempotent)
            await self._undo(subjects, field)
        elif any(v != 1 for v in verdicts):
            await self._undo([s for s, v in zip(subjects, verdicts, strict=True) if v == 1], field)
        if failed:
            HOLDS.labels(UNHELD).inc()
            if time.monotonic() - self._logged > 1:
                self._logged = time.monotonic()
                log.warning("quota hold failed; admitted without one", extra={"error": type(failed[0]).__name__})
            return None
        if 0 in verdicts:
            HOLDS.labels("exhausted").inc()
            return exhausted_quota()
        if -1 in verdicts:
            HOLDS.labels("held").inc()
            return quota_held()
        HOLDS.labels("held_ok").inc()
        return None

    async def _hold(self, keys: list[str], argv: list[str]) -> list[int]:
        assert self._script is not None
        async with self._slots:
            reply = await self._script(keys=keys, args=argv)
        return [int(x) for x in reply]

    async def _undo(self, subjects: list[Subject], field: str) -> None:
        """Delete these subjects' hold of the request (the other subject refused, or Redis failed)."""
        assert self.redis is not None
        for s in subjects:
            with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                async with self._slots:
                    await asyncio.wait_for(self.redis.hdel(held_key(s.kind, s.subject_id), field), self.timeout_s)
