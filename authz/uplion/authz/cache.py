"""A short-lived in-process cache with single-flight loading: concurrent misses for one key share
one load, and failed loads are not cached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, V]] = {}
        self._loading: dict[bytes, asyncio.Future[V]] = {}

    def peek(self, key: bytes, now: float | None = None) -> V | None:
        hit = self._entries.get(key)
        if hit is not None and hit[0] > (time.monotonic() if now is None else now):
            return hit[1]
        return None

    async def get(self, key: bytes, load: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """(value, whether it came from the cache)."""
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1], True
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending), True
        fut: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = fut
        try:
            value = await load()
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._loading[key]
        fut.set_result(value)
        if self.ttl_s > 0:
            if len(self._entries) >= self.max_entries:
                self._evict(now)
            self._entries[key] = (now + self.ttl_s, value)
        return value, False

    def _evict(self, now: float) -> None:
        expired = [k for k, (exp, _) in self._entries.items() if exp <= now]
        for k in expired:
            del self._entries[k]
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest insertion

    def clear(self) -> None:
        self._entries.clear()
