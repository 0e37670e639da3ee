"""Who may do what with the admin API: small pure decisions, no I/O (tests/unit/test_account_rules.py).

Credentials: a session (from Login) or an admin-scoped API token; an inference API key is refused.
Admins may change anything. A member acts on themselves only and can never raise what an admin set:
- a token they create stays within their own quota limits and, when they create it with an
  admin-scoped token, within that token's allow-list, quota limits, rate limits and expiry;
- on a token they own they may rename it, disable it, enable it again only if they disabled it
  themselves, and only tighten its allow-list (a subset), quota limits (lower) and expiry (earlier);
- rate limits, roles, tiers, user limits and the user's `disabled` are admin-only;
- changing their own password needs the current one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from uplion.v1 import admin_pb2

SCOPE_INFERENCE = "inference"
SCOPE_ADMIN = "admin"
DISABLED_BY_OWNER = "owner"
DISABLED_BY_ADMIN = "admin"
SCOPES: dict[int, str] = {
    admin_pb2.TOKEN_SCOPE_UNSPECIFIED: SCOPE_INFERENCE,
    admin_pb2.TOKEN_SCOPE_INFERENCE: SCOPE_INFERENCE,
    admin_pb2.TOKEN_SCOPE_ADMIN: SCOPE_ADMIN,
}
SCOPE_ENUM = {SCOPE_INFERENCE: admin_pb2.TOKEN_SCOPE_INFERENCE, SCOPE_ADMIN: admin_pb2.TOKEN_SCOPE_ADMIN}


class Via(enum.Enum):
    """How the caller of the admin API authenticated."""

    SESSION = "session"
    ADMIN_TOKEN = "admin_token"  # noqa: S105 (a name, not a secret)


@dataclass(frozen=True)
class Limits:
    """A token's or a user's restrictions; empty/None means unrestricted."""

    allowed_models: tuple[str, ...] = ()  # empty: every model
    limit_credits: int | None = None
    limit_tokens: int | None = None
    expires_at: datetime | None = None
    rate_limits: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of the admin API."""

    user_id: str
    role: int
    via: Via = Via.SESSION
    session_id: str = ""
    token_id: str = ""
    user_limits: Limits = Limits()  # the caller's own quota limits
    token_limits: Limits | None = None  # the admin-scoped token the call was made with, if any

    @property
    def is_admin(self) -> bool:
        return self.role == admin_pb2.ROLE_ADMIN


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused (PERMISSION_DENIED), and the request field it is about."""

    message: str
    param: str | None = None
    code: str = "permission_denied"


class Refused(Exception):
    """A Refusal raised from a decision that otherwise returns a value."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def may_act_on_user(p: Principal, user_id: str) -> bool:
    return p.is_admin or p.user_id == user_id


def may_change_role_or_quota(p: Principal) -> bool:
    """Roles, tiers, limits, quotas and prices are set by admins only (members cannot raise their own)."""
    return p.is_admin


def scope_refusal(scope: str) -> Refusal | None:
    """An API token may call the admin API only if it is admin-scoped."""
    if scope == SCOPE_ADMIN:
        return None
    return Refusal(
        "This API key is scoped for inference (/v1/...); the admin API accepts a session token from "
        "POST /admin/v1/login (`uplion login`) or an admin-scoped token.",
        code="insufficient_scope",
    )


# --- creating tokens ---------------------------------------------------------------------------


def _cap(*limits: int | None) -> int | None:
    """The tightest of several limits (None: unlimited)."""
    present = [x for x in limits if x is not None]
    return min(present) if present else None


def mint_limits(actor: Principal, owner_id: str, scope: str, requested: Limits, sets_rate_limits: bool) -> Limits:
    """The restrictions a new token gets (raises Refused if it may not be made). Admins get what they ask
    for; a member's token stays within their own quota limits and, if they call with an
    admin-scoped token, within that token's restrictions (unset ones are inherited from it)."""
    if not may_act_on_user(actor, owner_id):
        raise Refused(Refusal("Only an admin may create tokens for other users.", "user_id"))
    if sets_rate_limits and not actor.is_admin:
        raise Refused(Refusal("Only an admin may set rate limits.", "rate_limits"))
    if actor.is_admin:
        return requested
    if scope == SCOPE_ADMIN and actor.via is not Via.SESSION:
        raise Refused(Refusal("A member creates admin-scoped tokens with a session (log in), not with a token.",
                              "scope"))  # fmt: skip
    bound = actor.token_limits or Limits()
    user = actor.user_limits
    models = requested.allowed_models
    if bound.allowed_models:
        if not models:
            models = bound.allowed_models
        elif not set(models) <= set(bound.allowed_models):
            raise Refused(Refusal(
                "allowed_models may name only models the token you call with may use: "
                + ", ".join(bound.allowed_models), "allowed_models",
            ))  # fmt: skip
    limits: list[int | None] = []
    for param, want, own, theirs in (
        ("quota_limit_micro_credits", requested.limit_credits, user.limit_credits, bound.limit_credits),
        ("quota_limit_tokens", requested.limit_tokens, user.limit_tokens, bound.limit_tokens),
    ):
        cap = _cap(own, theirs)
        if want is None:
            want = cap if theirs is not None else None  # the calling token's limit is inherited
        elif cap is not None and want > cap:
            raise Refused(Refusal(f"{param} may be at most {cap}: a key you create cannot exceed your own limits.",
                                  param))  # fmt: skip
        limits.append(want)
    expires = requested.expires_at
    if bound.expires_at is not None:
        if expires is None:
            expires = bound.expires_at
        elif expires > bound.expires_at:
            raise Refused(Refusal("expires_at may not be later than the expiry of the token you call with.",
                                  "expires_at"))  # fmt: skip
    return Limits(models, limits[0], limits[1], expires, dict(bound.rate_limits) or dict(requested.rate_limits))


# --- changing tokens ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenState:
    """What the rules need to know about an existing token."""

    user_id: str
    scope: str = SCOPE_INFERENCE
    disabled: bool = False
    disabled_by: str | None = None
    limits: Limits = Limits()


def narrower_models(old: Sequence[str], new: Sequence[str]) -> bool:
    """`new` allows no model `old` does not (empty means every model)."""
    if not old:
        return True
    return bool(new) and set(new) <= set(old)


def lower_limit(old: int | None, new: int | None) -> bool:
    """`new` is no higher than `old` (None: unlimited)."""
    if old is None:
        return True
    return new is not None and new <= old


def earlier_expiry(old: datetime | None, new: datetime | None) -> bool:
    """`new` is no later than `old` (None: never expires)."""
    if old is None:
        return True
    return new is not None and new <= old


def may_update_token(actor: Principal, token: TokenState, change: Mapping[str, object]) -> Refusal | None:
    """None if `actor` may apply `change` (column -> new value, only the columns being set; see
    tokens.update_assignments) to `token`, else why not."""
    if actor.is_admin:
        return None
    if token.user_id != actor.user_id:
        return Refusal("This token belongs to another user.")
    if "rate_limits" in change:
        return Refusal("Only an admin may set rate limits.", "rate_limits")
    if change.get("disabled") is False and token.disabled and token.disabled_by != DISABLED_BY_OWNER:
        return Refusal("An admin disabled this token; only an admin may enable it again.", "disabled")
    if "allowed_models" in change:
        new_models = change["allowed_models"]
        assert isinstance(new_models, list | tuple)
        if not narrower_models(token.limits.allowed_models, new_models):
            return Refusal("allowed_models may only be narrowed to a subset of the token's current allow-list ("
                           + ", ".join(token.limits.allowed_models) + ").", "allowed_models")  # fmt: skip
    for column, old in (
        ("quota_limit_micro_credits", token.limits.limit_credits),
        ("quota_limit_tokens", token.limits.limit_tokens),
    ):
        if column in change:
            new = change[column]
            assert new is None or isinstance(new, int)
            if not lower_limit(old, new):
                return Refusal(f"{column} may only be lowered (it is {old}); only an admin may raise it.", column)
    if "expires_at" in change:
        new_expiry = change["expires_at"]
        assert new_expiry is None or isinstance(new_expiry, datetime)
        if not earlier_expiry(token.limits.expires_at, new_expiry):
            return Refusal("expires_at may only be moved earlier; only an admin may extend it.", "expires_at")
    return None


def within(bound: Limits, limits: Limits) -> bool:
    """`limits` are no looser than `bound` in any respect (pure)."""
    return (
        narrower_models(bound.allowed_models, limits.allowed_models)
        and lower_limit(bound.limit_credits, limits.limit_credits)
        and lower_limit(bound.limit_tokens, limits.limit_tokens)
        and earlier_expiry(bound.expires_at, limits.expires_at)
        and all(limits.rate_limits.get(k) is not None and limits.rate_limits[k] <= v
                for k, v in bound.rate_limits.items())
    )  # fmt: skip


def may_roll_token(actor: Principal, token_id: str, token: TokenState) -> Refusal | None:
    """A new secret is a new key: a member calling with an admin-scoped token may roll only tokens
    that token could have minted (and itself), so rolling cannot hand out a wider key."""
    if actor.is_admin:
        return None
    if token.user_id != actor.user_id:
        return Refusal("This token belongs to another user.")
    if actor.via is Via.SESSION or token_id == actor.token_id:
        return None
    if token.scope == SCOPE_ADMIN:
        return Refusal("A member rolls admin-scoped tokens with a session (log in), not with a token.", "token_id")
    if actor.token_limits is not None and not within(actor.token_limits, token.limits):
        return Refusal("This token allows more than the token you call with; roll it with a session.", "token_id")
    return None


def disabled_by_after(actor: Principal, token: TokenState, disable: bool) -> str | None:
    """Who the token counts as disabled by once `disabled` is set to `disable`: an admin's disable is
    never turned into its owner's (the owner could then undo it)."""
    if not disable:
        return None
    if actor.is_admin or (token.disabled and token.disabled_by != DISABLED_BY_OWNER):
        return DISABLED_BY_ADMIN
    return DISABLED_BY_OWNER


# --- passwords -----------------------------------------------------------------------------------


def password_change_refusal(
    actor: Principal, target_user_id: str, target_has_password: bool, current_given: bool, current_ok: bool
) -> Refusal | None:
    """An admin may set another user's password; one's own needs the current password (an admin
    without a password yet, e.g. the bootstrap admin, may set a first one)."""
    if actor.user_id != target_user_id:
        return None if actor.is_admin else Refusal("Only an admin may change other users' passwords.", "user_id")
    if not target_has_password:
        if actor.is_admin:
            return None
        return Refusal("Your account has no password yet; an admin sets the first one.", "password")
    if not current_given:
        return Refusal("Changing your password needs current_password.", "current_password",
                       "current_password_required")  # fmt: skip
    if not current_ok:
        return Refusal("current_password is incorrect.", "current_password", "invalid_current_password")
    return None
