"""How many keys nobody has one client address may have looked up in PostgreSQL.

A key that Redis does not know costs a PostgreSQL query (through a pool of 4 connections). Valid
keys are in Redis (the accounts service writes every change there) and in the per-replica cache, so
what reaches PostgreSQL is random, mistyped or forgotten keys. Each such lookup takes a token from
its client address's bucket first, and a lookup that finds a key gives the token back; an address
whose bucket is empty gets 429 `rate_limit_exceeded` with `retry-after` and no query at all, while
its valid keys still pass (answered from the cache or Redis, they never ask for a token).

The client address is the one the edge determined (Envoy's downstream remote address, which honours
`use_remote_address` and the trusted proxy hops), sent by the Lua filter in `x-uplion-client-address`
after it removed every client-sent `x-uplion-*` header; without it, the ext_authz peer address.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from uplion.core.addresses import address_bucket

CLIENT_ADDRESS_HEADER = "x-uplion-client-address"
UNKNOWN_ADDRESS = "unknown"


def client_bucket(edge_header: str | None, peer: str | None) -> str:
    """The bucket of a Check: the address the edge sent, else the peer Envoy reports."""
    return address_bucket(edge_header) or address_bucket(peer) or UNKNOWN_ADDRESS


@dataclass(frozen=True)
class Bucket:
    tokens: float
    at: float  # when `tokens` was computed (monotonic seconds)


def take(bucket: Bucket | None, now: float, capacity: float, per_s: float) -> tuple[Bucket, float]:
    """A token bucket (`capacity` tokens, refilled at `per_s` a second; a new address starts full):
    (the bucket after taking a token, 0.0), or (the refilled bucket, seconds until a token) when
    none is left."""
    tokens = capacity if bucket is None else min(capacity, bucket.tokens + max(now - bucket.at, 0.0) * per_s)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, now), 0.0
    return Bucket(tokens, now), (1.0 - tokens) / per_s


def give_back(bucket: Bucket, capacity: float) -> Bucket:
    return Bucket(min(capacity, bucket.tokens + 1.0), bucket.at)


class AddressBudget:
    """Per-replica buckets of unknown-key lookups, `per_minute` per client address (a burst of that
    many, refilled evenly over the minute). At most `max_addresses` are tracked; the least recently
    used is forgotten first."""

    def __init__(self, per_minute: int, max_addresses: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.per_s = per_minute / 60.0
        self.max_addresses = max_addresses
        self._buckets: dict[str, Bucket] = {}

    def take(self, address: str, now: float | None = None) -> float:
        """0.0 when `address` may look a key up now (a token is taken), else seconds to wait."""
        now = time.monotonic() if now is None else now
        bucket, wait = take(self._buckets.pop(address, None), now, self.capacity, self.per_s)
        self._buckets[address] = bucket  # re-inserted: the dict's order is least recently used first
        if len(self._buckets) > self.max_addresses:
            del self._buckets[next(iter(self._buckets))]
        return wait

    def give_back(self, address: str) -> None:
        """The lookup found a key: it costs the address nothing."""
        bucket = self._buckets.get(address)
        if bucket is not None:
            self._buckets[address] = give_back(bucket, self.capacity)
