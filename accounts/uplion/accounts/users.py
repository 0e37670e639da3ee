"""Users in PostgreSQL: each change and its audit entry in one transaction."""

from __future__ import annotations

import json
import secrets
from typing import Any

import asyncpg

from uplion.core.credentials import USER_COLUMNS, UserRecord, user_from_row
from uplion.core.migrations import Conn
from uplion.v1 import admin_pb2

from . import audit, sessions
from .convert import limits_json
from .sql import update_row

SELECT = """
SELECT u.*, s.used_micro_credits AS used_credits, s.used_tokens
FROM users u LEFT JOIN spend s ON s.subject_kind = 'user' AND s.subject_id = u.user_id
"""


def new_user_id() -> str:
    return "u_" + secrets.token_hex(8)


class Conflict(Exception):
    """A unique value (e.g. the email) is taken."""


async def get(conn: Conn, user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT + " WHERE u.user_id = $1", user_id)


async def by_email(conn: Conn, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT + " WHERE u.email = $1", email.strip().lower())


async def page(conn: Conn, page_size: int, after: str) -> tuple[list[asyncpg.Record], str]:
    """Users after `after` in id order, and the next page's token ("" on the last page)."""
    size = min(page_size or 100, 1000)
    rows = list(await conn.fetch(SELECT + " WHERE u.user_id > $1 ORDER BY u.user_id LIMIT $2", after, size))
    return rows, rows[-1]["user_id"] if len(rows) == size else ""


async def record(conn: Conn, user_id: str) -> tuple[UserRecord, dict[str, int]] | None:
    """What the edge reads about a user: its record and its own rate limits."""
    sql = f"SELECT {USER_COLUMNS}, u.rate_limits FROM users u WHERE u.user_id = $1"  # noqa: S608 (fixed columns)
    row = await conn.fetchrow(sql, user_id)
    return None if row is None else (user_from_row(row), json.loads(row["rate_limits"] or "{}"))


async def create(conn: Conn, actor: str, req: admin_pb2.CreateUserRequest, password_hash: str | None) -> asyncpg.Record:
    user_id = new_user_id()
    q = req.quota
    async with conn.transaction():
        try:
            await conn.execute(
                "INSERT INTO users (user_id, email, display_name, password_hash, role, tier,"
                " quota_limit_micro_credits, quota_limit_tokens, rate_limits)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
                user_id, req.email.strip().lower(), req.display_name, password_hash,
                req.role or admin_pb2.ROLE_MEMBER, req.tier or "default",
                q.limit_micro_credits if q.HasField("limit_micro_credits") else None,
                q.limit_tokens if q.HasField("limit_tokens") else None,
                limits_json(req.rate_limits),
            )  # fmt: skip
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a user with email {req.email!r} exists") from None
        await audit.record(
            conn, actor, "user.create", user_id, {"email": req.email, "role": req.role or admin_pb2.ROLE_MEMBER}
        )
        row = await get(conn, user_id)
    assert row is not None
    return row


def update_assignments(req: admin_pb2.UpdateUserRequest, password_hash: str | None) -> dict[str, Any]:
    """The columns an update sets (pure): only fields the caller actually sent."""
    out: dict[str, Any] = {}
    if req.HasField("display_name"):
        out["display_name"] = req.display_name
    if password_hash is not None:
        out["password_hash"] = password_hash
    if req.role:
        out["role"] = req.role
    if req.HasField("disabled"):
        out["disabled"] = req.disabled
    if req.HasField("tier"):
        out["tier"] = req.tier
    if req.HasField("rate_limits"):
        out["rate_limits"] = limits_json(req.rate_limits)
    if req.HasField("quota_limit_micro_credits"):
        out["quota_limit_micro_credits"] = req.quota_limit_micro_credits if req.quota_limit_micro_credits >= 0 else None
    if req.HasField("quota_limit_tokens"):
        out["quota_limit_tokens"] = req.quota_limit_tokens if req.quota_limit_tokens >= 0 else None
    return out


async def update(conn: Conn, actor: str, user_id: str, sets: dict[str, Any]) -> asyncpg.Record | None:
    """A new password ends every session of the user, in the same transaction."""
    async with conn.transaction():
        if sets:
            if not await update_row(conn, "users", user_id, sets):
                return None
            shown = {c: v for c, v in sets.items() if c != "password_hash"}
            if "password_hash" in sets:
                shown["password"] = "changed"  # noqa: S105 (a note, not a password)
                shown["sessions_ended"] = await sessions.revoke_all_in(conn, user_id)
            await audit.record(conn, actor, "user.update", user_id, shown)
        return await get(conn, user_id)


async def delete(conn: Conn, actor: str, user_id: str) -> tuple[list[tuple[bytes, int]], int] | None:
    """Deletes the user and their tokens; returns (secret hash, tombstone version) per token and the
    user's tombstone version."""
    async with conn.transaction():
        hashes = await conn.fetch(
            "DELETE FROM api_tokens WHERE user_id = $1 RETURNING secret_hash, nextval('accounts_version') AS v", user_id
        )
        status = await conn.execute("DELETE FROM users WHERE user_id = $1", user_id)
        if status.endswith(" 0"):
            return None
        await audit.record(conn, actor, "user.delete", user_id, {"tokens_deleted": len(hashes)})
        version = await conn.fetchval("SELECT nextval('accounts_version')")
    return [(bytes(r["secret_hash"]), r["v"]) for r in hashes], int(version)
