"""API tokens in PostgreSQL: stored as a SHA-256 hash plus a short visible prefix, never the secret."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

import asyncpg

from uplion.core.credentials import (
    TOKEN_COLUMNS,
    TokenRecord,
    new_secret,
    secret_hash,
    token_from_row,
    visible_prefix,
)
from uplion.core.migrations import Conn
from uplion.v1 import admin_pb2

from . import audit
from .convert import from_ts, limits_json
from .rules import SCOPE_INFERENCE, Limits, TokenState
from .sql import update_row

SELECT = """
SELECT t.*, s.used_micro_credits AS used_credits, s.used_tokens
FROM api_tokens t LEFT JOIN spend s ON s.subject_kind = 'token' AND s.subject_id = t.token_id
"""


def new_token_id() -> str:
    return "tok_" + secrets.token_hex(8)


async def get(conn: Conn, token_id: str, lock: bool = False) -> asyncpg.Record | None:
    """With `lock` (inside a transaction), the row stays as read until the transaction ends, so a
    permission decided on it cannot be raced by a concurrent change (e.g. an admin's disable)."""
    return await conn.fetchrow(SELECT + " WHERE t.token_id = $1" + (" FOR UPDATE OF t" if lock else ""), token_id)


async def of_user(conn: Conn, user_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(SELECT + " WHERE t.user_id = $1 ORDER BY t.created_at", user_id))


async def record(conn: Conn, token_id: str) -> tuple[TokenRecord, dict[str, int]] | None:
    """What the edge reads about a token: its record and its own rate limits. Admin-scoped tokens
    are not inference credentials: the edge is never told about them (None)."""
    sql = (
        f"SELECT {TOKEN_COLUMNS}, t.rate_limits FROM api_tokens t"  # noqa: S608 (fixed columns)
        " WHERE t.token_id = $1 AND t.scope = 'inference'"
    )
    row = await conn.fetchrow(sql, token_id)
    return None if row is None else (token_from_row(row), json.loads(row["rate_limits"] or "{}"))


async def admin_scoped_tombstones(conn: Conn) -> list[tuple[bytes, int]]:
    """(secret hash, fresh version) of every admin-scoped token: the edge must know none of them as
    inference keys, including a token that was an inference key before (migration 0002)."""
    rows = await conn.fetch(
        "SELECT secret_hash, nextval('accounts_version') AS v FROM api_tokens WHERE scope = 'admin'"
    )
    return [(bytes(r["secret_hash"]), int(r["v"])) for r in rows]


async def credential(conn: Conn, secret: str) -> asyncpg.Record | None:
    """The usable token (enabled, unexpired, owner enabled) with this secret: its scope and
    restrictions, and its owner's role and quota limits."""
    return await conn.fetchrow(
        "SELECT t.token_id, t.user_id, t.scope, t.allowed_models, t.quota_limit_micro_credits,"
        " t.quota_limit_tokens, t.expires_at, t.rate_limits, u.role,"
        " u.quota_limit_micro_credits AS u_limit_credits, u.quota_limit_tokens AS u_limit_tokens"
        " FROM api_tokens t JOIN users u USING (user_id)"
        " WHERE t.secret_hash = $1 AND NOT t.disabled AND NOT u.disabled"
        " AND (t.expires_at IS NULL OR t.expires_at > now())",
        secret_hash(secret),
    )


def limits_of(row: asyncpg.Record) -> Limits:
    """A token row's restrictions (pure)."""
    return Limits(
        allowed_models=tuple(row["allowed_models"] or ()),
        limit_credits=row["quota_limit_micro_credits"],
        limit_tokens=row["quota_limit_tokens"],
        expires_at=row["expires_at"],
        rate_limits=json.loads(row["rate_limits"] or "{}"),
    )


def state_of(row: asyncpg.Record) -> TokenState:
    """What the permission rules need to know about a token row (pure)."""
    return TokenState(row["user_id"], row["scope"], row["disabled"], row["disabled_by"], limits_of(row))


async def create(
    conn: Conn, actor: str, user_id: str, name: str, limits: Limits, scope: str = SCOPE_INFERENCE
) -> tuple[asyncpg.Record, str]:
    """The new token's row and its secret (returned to the caller once, never stored)."""
    secret = new_secret()
    token_id = new_token_id()
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO api_tokens (token_id, user_id, name, prefix, secret_hash, expires_at, allowed_models,"
            " quota_limit_micro_credits, quota_limit_tokens, rate_limits, scope)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11)",
            token_id, user_id, name, visible_prefix(secret), secret_hash(secret), limits.expires_at,
            list(limits.allowed_models), limits.limit_credits, limits.limit_tokens,
            json.dumps(dict(limits.rate_limits), sort_keys=True), scope,
        )  # fmt: skip
        await audit.record(conn, actor, "token.create", token_id, {"user_id": user_id, "name": name, "scope": scope})
        row = await get(conn, token_id)
    assert row is not None
    return row, secret


def update_assignments(req: admin_pb2.UpdateTokenRequest) -> dict[str, Any]:
    """The columns an update sets (pure): only fields the caller actually sent."""
    out: dict[str, Any] = {}
    if req.HasField("name"):
        out["name"] = req.name
    if req.HasField("disabled"):
        out["disabled"] = req.disabled
    if req.HasField("expires_at"):
        expires: datetime | None = from_ts(req.expires_at)
        out["expires_at"] = expires
    if req.set_allowed_models:
        out["allowed_models"] = list(req.allowed_models)
    if req.HasField("quota_limit_micro_credits"):
        out["quota_limit_micro_credits"] = req.quota_limit_micro_credits if req.quota_limit_micro_credits >= 0 else None
    if req.HasField("quota_limit_tokens"):
        out["quota_limit_tokens"] = req.quota_limit_tokens if req.quota_limit_tokens >= 0 else None
    if req.HasField("rate_limits"):
        out["rate_limits"] = limits_json(req.rate_limits)
    return out


async def update(conn: Conn, actor: str, token_id: str, sets: dict[str, Any]) -> asyncpg.Record | None:
    async with conn.transaction():
        if sets:
            if not await update_row(conn, "api_tokens", token_id, sets):
                return None
            await audit.record(conn, actor, "token.update", token_id, {k: str(v) for k, v in sets.items()})
        return await get(conn, token_id)


async def roll(conn: Conn, actor: str, token_id: str) -> tuple[asyncpg.Record, str, bytes, int] | None:
    """A new secret for the same token: (row, new secret, old hash, the old hash's tombstone version)."""
    secret = new_secret()
    async with conn.transaction():
        old = await conn.fetchrow("SELECT secret_hash FROM api_tokens WHERE token_id = $1 FOR UPDATE", token_id)
        if old is None:
            return None
        await conn.execute(
            "UPDATE api_tokens SET secret_hash = $2, prefix = $3, version = nextval('accounts_version')"
            " WHERE token_id = $1",
            token_id,
            secret_hash(secret),
            visible_prefix(secret),
        )
        await audit.record(conn, actor, "token.roll", token_id)
        gone_version = await conn.fetchval("SELECT nextval('accounts_version')")
        row = await get(conn, token_id)
    assert row is not None
    return row, secret, bytes(old["secret_hash"]), int(gone_version)


async def delete(conn: Conn, actor: str, token_id: str) -> tuple[bytes, int] | None:
    """(secret hash, tombstone version) of the deleted token."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "DELETE FROM api_tokens WHERE token_id = $1 RETURNING secret_hash, nextval('accounts_version') AS v",
            token_id,
        )
        if row is None:
            return None
        await audit.record(conn, actor, "token.delete", token_id)
    return bytes(row["secret_hash"]), int(row["v"])
