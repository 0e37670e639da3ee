"""What the edge does with a request, given what is known about its API key (pure functions)."""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass

from uplion.core.credentials import Spend, TokenRecord, UserRecord, well_formed

NO_SPEND = Spend()


@dataclass(frozen=True)
class Found:
    """What Redis or PostgreSQL holds for one secret hash. `token` None: no such usable secret."""

    token: TokenRecord | None
    user: UserRecord | None = None
    user_spend: Spend = NO_SPEND
    token_spend: Spend = NO_SPEND


@dataclass(frozen=True)
class Deny:
    http_status: int
    message: str
    type: str
    code: str | None
    retry_after_s: int = 0  # > 0: the client may retry after this many seconds (sent as retry-after)


@dataclass(frozen=True)
class Allow:
    user_id: str
    token_id: str
    tier: str
    allowed_models: tuple[str, ...]


MISSING = Deny(
    401,
    "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
    "invalid_request_error",
    "missing_api_key",
)


def bearer(header: str | None) -> str | None:
    """The key in an `Authorization: Bearer <key>` header value."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def shown(secret: str) -> str:
    """What an error message may say about a key: its first characters only."""
    return secret[:8] + "****" if len(secret) > 12 else "****"


def invalid_key(secret: str, why: str = "Incorrect API key provided") -> Deny:
    return Deny(401, f"{why}: {shown(secret)}.", "invalid_request_error", "invalid_api_key")


def exhausted(used: int, limit: int | None) -> bool:
    return limit is not None and used >= limit


def decide(secret: str, hash_: bytes, found: Found, now: float) -> Allow | Deny:
    token, user = found.token, found.user
    if token is None or not hmac.compare_digest(token.secret_hash, hash_):
        return invalid_key(secret)
    if user is None:
        return invalid_key(secret, "This API key's account no longer exists")
    if token.disabled:
        return invalid_key(secret, "This API key has been disabled")
    if token.expires_at is not None and token.expires_at <= now:
        return invalid_key(secret, "This API key has expired")
    if user.disabled:
        return Deny(401, "This account has been disabled.", "invalid_request_error", "account_deactivated")
    if (
        exhausted(found.user_spend.credits, user.limit_credits)
        or exhausted(found.user_spend.tokens, user.limit_tokens)
        or exhausted(found.token_spend.credits, token.limit_credits)
        or exhausted(found.token_spend.tokens, token.limit_tokens)
    ):
        return exhausted_quota()
    return Allow(token.user_id, token.token_id, user.tier, token.allowed_models)


def exhausted_quota() -> Deny:
    return Deny(
        429,
        "You exceeded your current quota; ask an admin to top it up.",
        "insufficient_quota",
        "insufficient_quota",
    )


HELD_RETRY_S = 1


def quota_held() -> Deny:
    """What is left of a quota is held by requests in flight (`uplion.core.quota`): retry when they end."""
    return Deny(
        429,
        "The rest of your quota is held by your requests in flight; retry when they finish.",
        "insufficient_quota",
        "quota_held",
        retry_after_s=HELD_RETRY_S,
    )


def throttled(wait_s: float) -> Deny:
    """The client address used up its budget of unknown keys (`throttle.py`): retry after `wait_s`."""
    seconds = max(1, math.ceil(wait_s))
    return Deny(
        429,
        f"Too many requests with unknown API keys from your address; try again in {seconds} s.",
        "requests",
        "rate_limit_exceeded",
        retry_after_s=seconds,
    )


def precheck(header: str | None) -> str | Deny:
    """The well-formed secret in the header, or why the request is refused before any lookup."""
    secret = bearer(header)
    if secret is None:
        return MISSING
    if not well_formed(secret):
        return invalid_key(secret)
    return secret
