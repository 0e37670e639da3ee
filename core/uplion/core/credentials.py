"""API-token credentials as the edge sees them: the secret's format and hash, and the records the
accounts service publishes to Redis for the authz service. PostgreSQL stays the truth.

Redis keys (hashes):
- `uplion:authz:token:<sha256 hex of the secret>`: the token's record, or a tombstone (`gone`) once
  it is deleted or rolled, or a short-lived `gone` marker for a secret nobody has.
- `uplion:authz:user:{<user id>}`: the owner's record.
- `uplion:spend:user:{<user id>}`, `uplion:spend:token:{<token id>}`: used micro-credits and tokens,
  kept by billing.
- `uplion:limits:user:{<user id>}`, `uplion:limits:token:{<token id>}`: an account's own rate limits.

The braces are Redis Cluster hash tags: every key about one user (its record, spend, limits, and the
rate limiter's counters of that user) lives in one hash slot, and so does every key about one token;
a script only ever touches keys of one slot. Ids are the platform's own (`u_…`, `t_…`), never braces.

Every record carries `v`, a version from one PostgreSQL sequence bumped on each change. Writers use
PUT_IF_NEWER, so a reader refilling Redis from an older read can never overwrite a newer change.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from dataclasses import dataclass

from asyncpg import Record

SECRET_PREFIX = "upl-"  # noqa: S105 (the public prefix of every key)
SECRET_LEN = 40
VISIBLE_CHARS = 8
_ALPHABET = string.ascii_letters + string.digits
_WELL_FORMED = re.compile(r"^upl-[A-Za-z0-9]{40}$")

TOKEN_KEY = "uplion:authz:token:"  # noqa: S105 (a Redis key prefix)
USER_KEY = "uplion:authz:user:"
SPEND_KEY = "uplion:spend:"
# how long tombstones and unknown-secret markers live; a record itself does not expire
GONE_TTL_MS = 24 * 3600 * 1000
UNKNOWN_TTL_MS = 60 * 1000


def new_secret() -> str:
    return SECRET_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LEN))


def well_formed(secret: str) -> bool:
    return _WELL_FORMED.match(secret) is not None


def secret_hash(secret: str) -> bytes:
    """SHA-256: the secrets carry 238 random bits, so a slow password hash would add nothing but cost."""
    return hashlib.sha256(secret.encode()).digest()


def visible_prefix(secret: str) -> str:
    return secret[: len(SECRET_PREFIX) + VISIBLE_CHARS]


def token_key(hash_: bytes) -> str:
    return TOKEN_KEY + hash_.hex()


def tag(subject_id: str) -> str:
    """A user or token id as a Redis Cluster hash tag."""
    return "{" + subject_id + "}"


def user_key(user_id: str) -> str:
    return USER_KEY + tag(user_id)


def spend_key(kind: str, subject_id: str) -> str:
    """`kind` is `user` or `token`."""
    return f"{SPEND_KEY}{kind}:{tag(subject_id)}"


def _opt_int(raw: str | None) -> int | None:
    return None if raw is None or raw == "" else int(raw)


def _opt_str(value: int | float | None) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    user_id: str
    secret_hash: bytes
    disabled: bool
    expires_at: float | None  # epoch seconds
    allowed_models: tuple[str, ...]  # empty: every model
    limit_credits: int | None
    limit_tokens: int | None
    version: int

    @property
    def limited(self) -> bool:
        """It has a quota limit (credits or tokens): its spend is mirrored and its requests hold."""
        return self.limit_credits is not None or self.limit_tokens is not None

    def fields(self) -> dict[str, str]:
        return {
            "v": str(self.version),
            "token_id": self.token_id,
            "user_id": self.user_id,
            "hash": self.secret_hash.hex(),
            "disabled": "1" if self.disabled else "0",
            "expires": _opt_str(self.expires_at),
            "models": ",".join(self.allowed_models),
            "lc": _opt_str(self.limit_credits),
            "lt": _opt_str(self.limit_tokens),
        }

    @classmethod
    def from_fields(cls, f: dict[str, str]) -> TokenRecord:
        return cls(
            token_id=f["token_id"],
            user_id=f["user_id"],
            secret_hash=bytes.fromhex(f["hash"]),
            disabled=f.get("disabled") == "1",
            expires_at=float(f["expires"]) if f.get("expires") else None,
            allowed_models=tuple(m for m in f.get("models", "").split(",") if m),
            limit_credits=_opt_int(f.get("lc")),
            limit_tokens=_opt_int(f.get("lt")),
            version=int(f["v"]),
        )


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    tier: str
    disabled: bool
    limit_credits: int | None
    limit_tokens: int | None
    version: int

    @property
    def limited(self) -> bool:
        """It has a quota limit (credits or tokens): its spend is mirrored and its requests hold."""
        return self.limit_credits is not None or self.limit_tokens is not None

    def fields(self) -> dict[str, str]:
        return {
            "v": str(self.version),
            "user_id": self.user_id,
            "tier": self.tier,
            "disabled": "1" if self.disabled else "0",
            "lc": _opt_str(self.limit_credits),
            "lt": _opt_str(self.limit_tokens),
        }

    @classmethod
    def from_fields(cls, f: dict[str, str]) -> UserRecord:
        return cls(
            user_id=f["user_id"],
            tier=f.get("tier", "default"),
            disabled=f.get("disabled") == "1",
            limit_credits=_opt_int(f.get("lc")),
            limit_tokens=_opt_int(f.get("lt")),
            version=int(f["v"]),
        )


@dataclass(frozen=True)
class Spend:
    credits: int = 0
    tokens: int = 0

    @classmethod
    def from_fields(cls, f: dict[str, str]) -> Spend:
        return cls(int(f.get("credits") or 0), int(f.get("tokens") or 0))


# KEYS[1] = key; ARGV = version, ttl_ms (0: none), field, value, ...
# Replaces the hash only if the stored version is older; returns 1 if it wrote.
PUT_IF_NEWER = """
local v = redis.call('HGET', KEYS[1], 'v')
if v and tonumber(v) >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def put_args(fields: dict[str, str], ttl_ms: int = 0) -> list[str]:
    """PUT_IF_NEWER's ARGV for a record's fields (which include `v`)."""
    rest = [x for k, val in fields.items() if k != "v" for x in (k, val)]
    return [fields["v"], str(ttl_ms), *rest]


def gone_fields(version: int) -> dict[str, str]:
    return {"v": str(version), "gone": "1"}


# PostgreSQL reads shared by the accounts service (to publish) and authz (to refill on a miss).
TOKEN_COLUMNS = (
    "t.token_id, t.user_id, t.secret_hash, t.disabled, extract(epoch from t.expires_at)::float8 AS expires,"  # noqa: S105
    " t.allowed_models, t.quota_limit_micro_credits AS lc, t.quota_limit_tokens AS lt, t.version"
)
USER_COLUMNS = "u.user_id, u.tier, u.disabled, u.quota_limit_micro_credits AS lc, u.quota_limit_tokens AS lt, u.version"


def token_from_row(r: Record) -> TokenRecord:
    return TokenRecord(
        token_id=r["token_id"],
        user_id=r["user_id"],
        secret_hash=bytes(r["secret_hash"]),
        disabled=r["disabled"],
        expires_at=r["expires"],
        allowed_models=tuple(r["allowed_models"] or ()),
        limit_credits=r["lc"],
        limit_tokens=r["lt"],
        version=r["version"],
    )


def user_from_row(r: Record) -> UserRecord:
    return UserRecord(
        user_id=r["user_id"],
        tier=r["tier"],
        disabled=r["disabled"],
        limit_credits=r["lc"],
        limit_tokens=r["lt"],
        version=r["version"],
    )


# An account's own rate limits, read by the rate-limit service: `uplion:limits:user:{<id>}` or
# `uplion:limits:token:{<id>}`, a hash of fields such as `rpm` (requests per minute) or `tpd` (tokens
# per day). ratelimit/internal/decide (OverrideFor) builds the same names.
LIMITS_KEY = "uplion:limits:"


def limit_field(kind: str, unit: str) -> str:
    """The hash field of a limit: `kind` requests | tokens, `unit` minute | hour | day → rpm, tpd, ..."""
    return f"{kind[0]}p{unit[0]}"


_ACCOUNT_LIMITS = [("requests", "minute"), ("requests", "hour"), ("requests", "day"), ("tokens", "minute"),
                   ("tokens", "day")]  # fmt: skip
_LIMIT_FIELDS = {f"{kind}_per_{unit}": limit_field(kind, unit) for kind, unit in _ACCOUNT_LIMITS}


def limits_key(kind: str, subject_id: str) -> str:
    return f"{LIMITS_KEY}{kind}:{tag(subject_id)}"


def limit_fields(rate_limits: dict[str, int]) -> dict[str, str]:
    """The admin API's RateLimits (as a dict) to the hash fields the rate limiter reads."""
    return {_LIMIT_FIELDS[k]: str(v) for k, v in rate_limits.items() if k in _LIMIT_FIELDS}
