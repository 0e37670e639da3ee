"""The usage query API over billing's tables: filters and grouping turned into one SQL statement.

Whole UTC days (or no bounds) read `usage_daily`; bounds inside a day read the raw `usage_events`
(by finished_at, the time `usage_daily` buckets by), so totals always equal the raw rows'."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from uplion.core.migrations import Conn
from uplion.v1 import admin_pb2

from .convert import from_ts

_COLUMN = {
    admin_pb2.USAGE_GROUP_BY_USER: "user_id",
    admin_pb2.USAGE_GROUP_BY_TOKEN: "token_id",
    admin_pb2.USAGE_GROUP_BY_MODEL: "model",
    admin_pb2.USAGE_GROUP_BY_DAY: "day",
}


def _whole_day(t: datetime | None) -> bool:
    return t is None or t.astimezone(UTC).time() == time(0)


def build(req: admin_pb2.QueryUsageRequest) -> tuple[str, list[Any]]:
    """(SQL, parameters) for a query (pure). Only fixed column names are interpolated."""
    start, end = from_ts(req.start), from_ts(req.end)
    daily = _whole_day(start) and _whole_day(end)
    args: list[Any] = []
    where: list[str] = []

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    for field in ("user_id", "token_id", "model"):
        if req.HasField(field):
            where.append(f"{field} = {param(getattr(req, field))}")
    if daily:
        source, day_expr = "usage_daily", "day"
        requests, cost = "sum(requests)", "sum(cost_micro_credits)"
        if start is not None:
            where.append(f"day >= {param(start.astimezone(UTC).date())}")
        if end is not None:
            where.append(f"day < {param(end.astimezone(UTC).date())}")
    else:
        source, day_expr = "usage_events", "(finished_at AT TIME ZONE 'UTC')::date"
        requests, cost = "count(*)", "sum(cost_micro_credits)"
        if start is not None:
            where.append(f"finished_at >= {param(start)}")
        if end is not None:
            where.append(f"finished_at < {param(end)}")
    groups = []
    for g in dict.fromkeys(req.group_by):  # in the order asked, once each
        if g not in _COLUMN:
            raise ValueError(f"unknown group_by value {g}")
        groups.append(_COLUMN[g])
    select = [f"{day_expr} AS day" if g == "day" else g for g in groups]
    # only fixed column names are interpolated; values are parameters
    sql = (
        f"SELECT {', '.join([*select, f'{requests} AS requests'])}, sum(prompt_tokens) AS prompt_tokens,"  # noqa: S608
        f" sum(completion_tokens) AS completion_tokens, {cost} AS cost FROM {source}"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    if groups:
        positions = ", ".join(str(i + 1) for i in range(len(groups)))
        sql += f" GROUP BY {positions} ORDER BY {positions}"
    return sql, args


async def query(conn: Conn, req: admin_pb2.QueryUsageRequest) -> admin_pb2.QueryUsageResponse:
    sql, args = build(req)
    out = admin_pb2.QueryUsageResponse()
    for r in await conn.fetch(sql, *args):
        if r["requests"] in (None, 0) and not req.group_by:
            continue  # no usage at all: no rows, rather than one row of zeros
        row = out.rows.add(
            requests=int(r["requests"] or 0), prompt_tokens=int(r["prompt_tokens"] or 0),
            completion_tokens=int(r["completion_tokens"] or 0), cost_micro_credits=int(r["cost"] or 0),
        )  # fmt: skip
        keys = dict(r)
        row.user_id = keys.get("user_id") or (req.user_id if req.HasField("user_id") else "")
        row.token_id = keys.get("token_id") or (req.token_id if req.HasField("token_id") else "")
        row.model = keys.get("model") or (req.model if req.HasField("model") else "")
        if keys.get("day") is not None:
            row.day = keys["day"].isoformat()
    return out
