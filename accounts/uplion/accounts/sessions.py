"""Sessions in PostgreSQL: one row per login. A session token is honoured only while its row is
unrevoked and unexpired, so Logout and a password change end sessions at once."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import asyncpg

from uplion.core.migrations import Conn

from . import audit


def new_session_id() -> str:
    return "ses_" + secrets.token_urlsafe(18)


async def open_session(conn: Conn, user_id: str, ttl_s: int, client_address: str) -> tuple[str, datetime]:
    """A new session (id, expiry), its login audit entry, and the user's long-expired rows dropped,
    in one transaction."""
    session_id = new_session_id()
    expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
    async with conn.transaction():
        await conn.execute("DELETE FROM sessions WHERE user_id = $1 AND expires_at < now() - interval '1 day'", user_id)
        await conn.execute(
            "INSERT INTO sessions (session_id, user_id, client_address, expires_at) VALUES ($1, $2, $3, $4)",
            session_id, user_id, client_address, expires,
        )  # fmt: skip
        await audit.record(conn, user_id, "user.login", user_id, {"client_address": client_address})
    return session_id, expires


async def active_user(conn: Conn, session_id: str, user_id: str) -> asyncpg.Record | None:
    """The session's user (role, limits) if the session is open and the user enabled, else None."""
    return await conn.fetchrow(
        "SELECT u.user_id, u.role, u.quota_limit_micro_credits, u.quota_limit_tokens FROM sessions s"
        " JOIN users u USING (user_id) WHERE s.session_id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL"
        " AND s.expires_at > now() AND NOT u.disabled",
        session_id,
        user_id,
    )


async def revoke(conn: Conn, actor: str, user_id: str, session_id: str | None) -> int:
    """Ends one session (or, with session_id None, all of the user's); returns how many."""
    async with conn.transaction():
        if session_id is None:
            status = await conn.execute(
                "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
            )
        else:
            status = await conn.execute(
                "UPDATE sessions SET revoked_at = now() WHERE session_id = $1 AND user_id = $2 AND revoked_at IS NULL",
                session_id,
                user_id,
            )
        ended = int(status.rsplit(" ", 1)[-1])
        await audit.record(conn, actor, "user.logout", user_id, {"sessions_ended": ended,
                                                                  "everywhere": session_id is None})  # fmt: skip
    return ended


async def revoke_all_in(conn: Conn, user_id: str) -> int:
    """Ends all of the user's sessions inside the caller's transaction (a password change)."""
    status = await conn.execute(
        "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )
    return int(status.rsplit(" ", 1)[-1])
