"""A pool of remote accounts used together: least-busy first, 429 cool-downs, bad keys set aside."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..config import Account

# A key the provider rejected is retried after this long (the Secret may have been fixed).
DISABLE_S = 300.0
# An account out of quota (429 insufficient_quota) is left alone this long.
QUOTA_S = 600.0
MAX_COOLDOWN_S = 60.0


@dataclass
class AccountState:
    account: Account
    inflight: int = 0
    cooldown_until: float = 0.0
    consecutive_429: int = 0
    disabled_until: float = 0.0
    last_problem: str = field(default="", repr=False)

    def usable(self, now: float) -> bool:
        return now >= self.cooldown_until and now >= self.disabled_until

    def rate_limited(self, now: float, retry_after: float | None) -> None:
        self.consecutive_429 += 1
        backoff = retry_after if retry_after is not None else min(2.0 ** (self.consecutive_429 - 1), MAX_COOLDOWN_S)
        self.cooldown_until = now + backoff
        self.last_problem = "rate_limited"

    def succeeded(self) -> None:
        self.consecutive_429 = 0

    def disable(self, now: float, seconds: float, problem: str) -> None:
        self.disabled_until = now + seconds
        self.last_problem = problem


def pick_order(states: list[AccountState], now: float) -> list[AccountState]:
    """Usable accounts, least busy first (ties keep configuration order)."""
    return sorted((s for s in states if s.usable(now)), key=lambda s: s.inflight)


def soonest_available(states: list[AccountState], now: float) -> float:
    waits = [max(s.cooldown_until, s.disabled_until) - now for s in states]
    return max(0.0, min(waits)) if waits else 0.0


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (numeric form); None when absent or unreadable."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return float(raw_ms) / 1000
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return float(raw)
        except ValueError:
            return None
    return None


def now() -> float:
    return time.monotonic()
