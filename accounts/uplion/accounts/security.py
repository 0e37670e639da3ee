"""Passwords (argon2id), session tokens (signed JWTs) and who may act on what (pure decisions)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import argon2
import jwt

from uplion.v1 import admin_pb2

_hasher = argon2.PasswordHasher()  # argon2id with the library's current recommended parameters
_SESSION_TYPE = "uplion-session"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant work whether or not the user has a password, so timing does not tell."""
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False


_DUMMY = _hasher.hash("uplion-no-password")


def issue_session(secret: str, user_id: str, ttl_s: int, now: float | None = None) -> tuple[str, int]:
    """A signed session token and its expiry (epoch seconds)."""
    now = time.time() if now is None else now
    exp = int(now) + ttl_s
    claims = {"sub": user_id, "typ": _SESSION_TYPE, "iat": int(now), "exp": exp}
    return jwt.encode(claims, secret, algorithm="HS256"), exp


def read_session(secret: str, token: str) -> str | None:
    """The user id a valid, unexpired session token names, else None."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub", "typ"]})
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != _SESSION_TYPE:
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of the admin API."""

    user_id: str
    role: int

    @property
    def is_admin(self) -> bool:
        return self.role == admin_pb2.ROLE_ADMIN


def may_act_on_user(p: Principal, user_id: str) -> bool:
    return p.is_admin or p.user_id == user_id


def may_change_role_or_quota(p: Principal) -> bool:
    """Roles, tiers, limits, quotas and prices are set by admins only (members cannot raise their own)."""
    return p.is_admin
