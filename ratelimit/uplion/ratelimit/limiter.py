"""Counting in Redis: every decision is one Lua script run (one round trip) that checks all of a
request's limits and then counts the hits only if the request is allowed, so rejected hits consume
nothing; token reservations are recorded in the same script and settled later by request id."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis

from .resp import PipelinedRedis, RedisReplyError, sha1

# KEYS: n counter keys, then n override-hash keys ("" placeholders allowed), then the reservation
# key (or ""). ARGV: now_ms, n, reservation_ttl_ms, then per hit 7 values: limit, window_ms,
# algorithm (f | g), hits, shadow (0|1), override field ("" none), reserve (0|1).
# Returns {rejected, then per hit: over, limit, remaining, reset_ms}.
DECIDE = """
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local out = {0}
local st = {}
local rejected = false
for i = 1, n do
  local b = 4 + (i - 1) * 7
  local limit = tonumber(ARGV[b])
  local window = tonumber(ARGV[b + 1])
  local algo = ARGV[b + 2]
  local hits = tonumber(ARGV[b + 3])
  local shadow = ARGV[b + 4] == '1'
  local ofield = ARGV[b + 5]
  if ofield ~= '' and KEYS[n + i] ~= '' then
    local v = redis.call('HGET', KEYS[n + i], ofield)
    if v then limit = tonumber(v) end
  end
  local over, remaining, reset, after
  if limit >= 4294967295 then
    -- no limit unless the account sets one: nothing to read or count
    over, remaining, reset, after, hits = false, limit, 0, 0, 0
  elseif algo == 'f' then
    local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
    after = cur + hits
    over = after > limit
    if over then remaining = math.max(limit - cur, 0) else remaining = limit - after end
    reset = window - (now % window)
  else
    local interval = window / math.max(limit, 1)
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    after = tat + hits * interval
    over = limit == 0 or (after - now) > window
    local used = after - now
    if over then used = tat - now end
    remaining = math.max(math.floor((window - used) / interval), 0)
    -- allowed: when the limit is whole again; refused: when this request would fit
    if over then reset = math.max(math.ceil(after - now - window), 1) else reset = math.ceil(used) end
  end
  st[i] = {after, window, algo, hits, ARGV[b + 6], reset}
  if over and not shadow then rejected = true end
  out[#out + 1] = over and 1 or 0
  out[#out + 1] = limit
  out[#out + 1] = remaining
  out[#out + 1] = reset
end
if rejected then
  out[1] = 1
  return out
end
local resv = KEYS[2 * n + 1]
for i = 1, n do
  local s = st[i]
  if s[4] > 0 then
    if s[3] == 'f' then
      local v = redis.call('INCRBY', KEYS[i], s[4])
      if v == s[4] then redis.call('PEXPIRE', KEYS[i], s[6] + 1000) end
    else
      redis.call('SET', KEYS[i], tostring(s[1]), 'PX', math.ceil(s[1] - now) + 1000)
    end
    if resv ~= '' and s[5] == '1' then
      local interval = 0
      if s[3] == 'g' then interval = s[2] / math.max(tonumber(out[3 + (i - 1) * 4]), 1) end
      redis.call('HSET', resv, KEYS[i], s[4] .. ':' .. s[3] .. ':' .. interval)
    end
  end
end
if resv ~= '' and tonumber(ARGV[3]) > 0 and redis.call('EXISTS', resv) == 1 then
  redis.call('PEXPIRE', resv, ARGV[3])
end
return out
"""

# KEYS[1] = reservation key; ARGV[1] = tokens actually used. Settles each reserved counter by the
# difference (refund or charge) once: the reservation is deleted by the first settlement.
SETTLE = """
local r = redis.call('HGETALL', KEYS[1])
if #r == 0 then return 0 end
redis.call('DEL', KEYS[1])
local actual = tonumber(ARGV[1])
for i = 1, #r, 2 do
  local key = r[i]
  local hits, algo, interval = string.match(r[i + 1], '^(%d+):(%a):([%d%.e%+%-]+)$')
  local delta = actual - tonumber(hits)
  if algo == 'f' then
    local cur = redis.call('GET', key)
    if cur then
      local v = tonumber(cur) + delta
      if v < 0 then v = 0 end
      redis.call('SET', key, v, 'KEEPTTL')
    end
  else
    local tat = redis.call('GET', key)
    if tat then
      redis.call('SET', key, tostring(tonumber(tat) + delta * tonumber(interval)), 'KEEPTTL')
    end
  end
end
return 1
"""


DECIDE_SHA, SETTLE_SHA = sha1(DECIDE), sha1(SETTLE)


@dataclass(frozen=True)
class Hit:
    key: str
    limit: int
    window_ms: int
    gcra: bool
    hits: int
    shadow: bool
    override_key: str = ""
    override_field: str = ""
    reserve: bool = False


@dataclass(frozen=True)
class Outcome:
    over: bool
    limit: int
    remaining: int
    reset_ms: int


class Unavailable(Exception):
    """Redis is down (the health probe says so, or a connection failed) or did not answer in time."""


class RedisHealth:
    """A probe on its own thread and connection: PING every `interval_s` with a `timeout_s` socket
    timeout. Measured by the OS, not by this process's event loop, so a saturated process is never
    mistaken for a dead Redis. When Redis stops answering, every decision waiting on it is released
    at once (fail mode) and later ones do not wait at all, until a PING succeeds again."""

    def __init__(self, url: str, timeout_s: float, interval_s: float = 0.005) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.down = False
        self.on_down: list[Callable[[], None]] = []  # run on the event loop when Redis goes down
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._probe, name="redis-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _probe(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s)
        failures = 0
        while not self._stop.is_set():
            try:
                client.ping()
                failures = 0
            except (redis.RedisError, OSError):
                failures += 1
                client.connection_pool.disconnect()
            healthy = failures < 2  # one slow PING is noise; two in a row is an outage
            if healthy == self.down and self._loop is not None:
                self._loop.call_soon_threadsafe(self._set, not healthy)
            if failures != 1:  # after a first failure, ask again at once
                self._stop.wait(self.interval_s)

    def _set(self, down: bool) -> None:
        if down == self.down:
            return
        self.down = down
        if down:
            for callback in self.on_down:
                callback()


class Limiter:
    def __init__(self, r: PipelinedRedis, health: RedisHealth) -> None:
        self.r = r
        self.health = health
        health.on_down.append(lambda: r.fail_all("redis stopped answering"))

    async def decide(
        self, hits: list[Hit], now_ms: int, reservation: str = "", reservation_ttl_ms: int = 0
    ) -> tuple[bool, list[Outcome]]:
        """(rejected, one outcome per hit)."""
        if self.health.down:
            raise Unavailable("redis down")
        keys = [h.key for h in hits] + [h.override_key for h in hits] + [reservation]
        args: list[str | int] = [now_ms, len(hits), reservation_ttl_ms]
        for h in hits:
            args += [h.limit, h.window_ms, "g" if h.gcra else "f", h.hits, int(h.shadow), h.override_field,
                     int(h.reserve)]  # fmt: skip
        try:
            reply = await self.r.evalsha(DECIDE, DECIDE_SHA, keys, args)
        except (RedisReplyError, OSError, TimeoutError) as e:
            raise Unavailable(type(e).__name__) from e
        outcomes = [
            Outcome(bool(reply[1 + 4 * i]), int(reply[2 + 4 * i]), int(reply[3 + 4 * i]), int(reply[4 + 4 * i]))
            for i in range(len(hits))
        ]
        return bool(reply[0]), outcomes

    async def settle(self, reservation: str, actual_tokens: int) -> bool:
        """Refund or charge the difference between reserved and used tokens; True the first time."""
        return bool(await self.r.evalsha(SETTLE, SETTLE_SHA, [reservation], [actual_tokens]))
