"""SQL shared by the account tables."""

from __future__ import annotations

from typing import Any

from uplion.core.migrations import Conn

_TABLES = {"users": "user_id", "api_tokens": "token_id"}


async def update_row(conn: Conn, table: str, key: str, sets: dict[str, Any]) -> bool:
    """Set `sets` (column -> value) on one row and give it a new version; False if no such row.
    Column names come from the callers' fixed lists (update_assignments); values are parameters."""
    assignments = ", ".join(f"{c} = ${i + 2}" + ("::jsonb" if c == "rate_limits" else "") for i, c in enumerate(sets))
    status = await conn.execute(
        f"UPDATE {table} SET {assignments}, version = nextval('accounts_version') WHERE {_TABLES[table]} = $1",  # noqa: S608
        key,
        *sets.values(),
    )
    return not status.endswith(" 0")
