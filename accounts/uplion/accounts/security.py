"""Passwords (argon2id) and session tokens (signed JWTs naming a row of the sessions table)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import argon2
import jwt

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


def issue_session(secret: str, user_id: str, session_id: str, ttl_s: int, now: float | None = None) -> tuple[str, int]:
    """A signed session token naming its sessions row, and its expiry (epoch seconds)."""
    now = time.time() if now is None else now
    exp = int(now) + ttl_s
    claims = {"sub": user_id, "sid": session_id, "typ": _SESSION_TYPE, "iat": int(now), "exp": exp}
    return jwt.encode(claims, secret, algorithm="HS256"), exp


@dataclass(frozen=True)
class SessionClaims:
    user_id: str
    session_id: str


def read_session(secret: str, token: str) -> SessionClaims | None:
    """Who a validly signed, unexpired session token names, else None. Whether the session is still
    open (not logged out, password unchanged) is the sessions table's to say."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub", "sid", "typ"]})
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != _SESSION_TYPE:
        return None
    sub, sid = claims.get("sub"), claims.get("sid")
    return SessionClaims(sub, sid) if isinstance(sub, str) and isinstance(sid, str) else None
