"""Quota holds: what a request may still spend is held against its user's and token's quotas from
admission (authz) until its usage is billed (billing), so concurrent requests cannot overshoot a
quota by more than one request's bound.

A quota-limited subject (a user or token with `limit_credits` or `limit_tokens`) has, beside its
spend hash (`credentials.spend_key`, kept by billing), a hash of holds in the same Redis Cluster
hash slot: `uplion:quota:held:<user|token>:{<id>}`, one field per request in flight (the edge's
request id), valued `"<micro-credits> <tokens> <expiry ms>"`.

- **Admission** (authz, `HOLD`): a request is admitted only while `spent + held < limit` for every
  limit of the subject; it then adds its own hold. So when it is admitted, the requests already in
  flight can at most use up what is left, and it alone may go past the limit: the overshoot is at
  most one request's hold. A subject with no limit holds nothing (no Redis call in authz); billing
  cannot tell, so it deletes every event's holds (two HDELs in its batch's pipeline).
- **Release** (billing): after a usage event's spend is added to the spend hash, its hold is deleted
  (`HDEL`; the same event again deletes nothing). Spend first, then release: in between, a check
  counts both, never neither.
- **Refused after admission**: the rate limiter deletes the hold of a request it refuses (it knows
  the request id and both subjects); a request lost on the way (a proxy error before the gateway)
  keeps its hold until it expires (`ttl`, longer than any request's deadline).

A request's hold is its token estimate (the edge's `x-uplion-token-estimate`: body bytes / 4 plus
`max_tokens` (or 4096) times `n`), and that many tokens at the highest price per 1k tokens in force or
scheduled for any model (prompt or completion). It bounds what the request can cost as long as the
estimate bounds its tokens.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from .credentials import spend_key, tag

HELD_KEY = "uplion:quota:held:"
# Field names: the edge's request id (Envoy makes it a UUID at the edge); a longer value, one with
# braces or one that looks hashed is hashed, exactly as the rate limiter's key parts are
# (ratelimit/internal/decide: KeyPart), since it deletes the holds of requests it refuses.
MAX_FIELD_BYTES = 128


def held_key(kind: str, subject_id: str) -> str:
    """`kind` is `user` or `token`; the key shares the subject's spend hash's slot."""
    return f"{HELD_KEY}{kind}:{tag(subject_id)}"


def hold_field(request_id: str) -> str:
    if (
        len(request_id.encode()) <= MAX_FIELD_BYTES
        and not request_id.startswith("sha256:")
        and not set("{}") & set(request_id)
    ):
        return request_id
    return "sha256:" + hashlib.sha256(request_id.encode()).hexdigest()


@dataclass(frozen=True)
class Hold:
    """What one request holds against each limited subject."""

    micro_credits: int
    tokens: int


def hold_for(token_estimate: int, max_price_per_1k: int) -> Hold:
    """A request's hold: its token estimate, priced at the highest price (pure)."""
    tokens = max(0, token_estimate)
    return Hold(math.ceil(tokens * max(0, max_price_per_1k) / 1000), tokens)


@dataclass(frozen=True)
class Subject:
    """A limited user or token, as authz knows it (its spend as last read, used when Redis has none)."""

    kind: str  # user | token
    subject_id: str
    limit_credits: int | None
    limit_tokens: int | None
    spent_credits: int
    spent_tokens: int


# KEYS[1] = holds, KEYS[2] = spend (one slot). ARGV = field, now ms, ttl ms, hold credits, hold tokens,
# limit credits ('' = none), limit tokens ('' = none), spent credits, spent tokens (authz's last read:
# used only when the spend hash is missing), the most holds a subject may have. Drops expired holds,
# then:
# returns {1, holds} when admitted (the hold is added, unless it is zero: a request without a body),
# {0, holds} when spend alone reached a limit, {-1, holds} when spend plus the holds in flight did
# (or the subject already has the most holds it may have).
HOLD = """
local now = tonumber(ARGV[2])
local held = redis.call('HGETALL', KEYS[1])
local hc, ht, n = 0, 0, 0
for i = 1, #held, 2 do
  local c, t, exp = string.match(held[i + 1], '^(%d+) (%d+) (%d+)$')
  if c == nil or tonumber(exp) <= now then
    redis.call('HDEL', KEYS[1], held[i])
  else
    hc = hc + tonumber(c)
    ht = ht + tonumber(t)
    n = n + 1
  end
end
local spend = redis.call('HMGET', KEYS[2], 'credits', 'tokens')
local uc, ut = tonumber(spend[1]), tonumber(spend[2])
if uc == nil and ut == nil then
  uc, ut = tonumber(ARGV[8]), tonumber(ARGV[9])
end
uc, ut = uc or 0, ut or 0
local verdict = 1
if ARGV[6] ~= '' then
  local lc = tonumber(ARGV[6])
  if uc >= lc then return {0, n} end
  if uc + hc >= lc then verdict = -1 end
end
if ARGV[7] ~= '' then
  local lt = tonumber(ARGV[7])
  if ut >= lt then return {0, n} end
  if ut + ht >= lt then verdict = -1 end
end
if verdict < 0 or n >= tonumber(ARGV[10]) then return {-1, n} end
if tonumber(ARGV[4]) == 0 and tonumber(ARGV[5]) == 0 then return {1, n} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. (now + tonumber(ARGV[3])))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, n + 1}
"""


# The most holds one subject may have at once: requests in flight or not yet billed. It bounds the
# script's work (it reads every hold) when billing is down and nothing is released.
MAX_HOLDS = 1024


def hold_args(
    subject: Subject, field: str, hold: Hold, now_ms: int, ttl_ms: int, max_holds: int = MAX_HOLDS
) -> tuple[list[str], list[str]]:
    """HOLD's KEYS and ARGV for one subject (pure)."""
    keys = [held_key(subject.kind, subject.subject_id), spend_key(subject.kind, subject.subject_id)]
    argv = [
        field,
        str(now_ms),
        str(ttl_ms),
        str(hold.micro_credits),
        str(hold.tokens),
        "" if subject.limit_credits is None else str(subject.limit_credits),
        "" if subject.limit_tokens is None else str(subject.limit_tokens),
        str(subject.spent_credits),
        str(subject.spent_tokens),
        str(max_holds),
    ]
    return keys, argv


# The highest price per 1k tokens (prompt or completion) of any model, in force now or scheduled
# (billing's table; a price that takes effect later is counted now, so a refresh interval cannot
# hold too little).
MAX_PRICE = """
SELECT coalesce(max(greatest(prompt_micro_credits_per_1k, completion_micro_credits_per_1k)), 0)
FROM model_prices mp
WHERE mp.effective_from > now() OR mp.effective_from = (
    SELECT max(effective_from) FROM model_prices cur WHERE cur.model = mp.model AND cur.effective_from <= now()
)
"""
