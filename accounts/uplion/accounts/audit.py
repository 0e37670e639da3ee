"""The audit log: one row per change, written in the same transaction as the change itself."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from uplion.core.migrations import Conn
from uplion.v1 import admin_pb2


async def record(conn: Conn, actor: str, action: str, target: str, details: dict[str, Any] | None = None) -> None:
    """`details` must never hold a secret, a password or a hash."""
    await conn.execute(
        "INSERT INTO audit_log (actor_user_id, action, target, details) VALUES ($1, $2, $3, $4::jsonb)",
        actor,
        action,
        target,
        json.dumps(details or {}, sort_keys=True),
    )


async def page(conn: Conn, page_size: int, page_token: str) -> admin_pb2.ListAuditLogResponse:
    """Newest first; the page token is the last entry id seen."""
    size = min(page_size or 100, 1000)
    before = int(page_token) if page_token.isdigit() else 2**62
    rows = await conn.fetch(
        "SELECT entry_id, actor_user_id, action, target, details::text AS details, at FROM audit_log"
        " WHERE entry_id < $1 ORDER BY entry_id DESC LIMIT $2",
        before,
        size,
    )
    out = admin_pb2.ListAuditLogResponse()
    for r in rows:
        at = Timestamp()
        at.FromDatetime(r["at"])
        out.entries.add(
            entry_id=str(r["entry_id"]), actor_user_id=r["actor_user_id"], action=r["action"],
            target=r["target"], details_json=r["details"], at=at,
        )  # fmt: skip
    if len(rows) == size:
        out.next_page_token = str(rows[-1]["entry_id"])
    return out
