"""Model prices and quota top-ups (billing reads the prices; limits live on users and tokens)."""

from __future__ import annotations

import secrets
from datetime import datetime

from uplion.core.migrations import Conn
from uplion.v1 import admin_pb2

from . import audit
from .convert import quota, ts

_TABLE = {"user": ("users", "user_id"), "token": ("api_tokens", "token_id")}


class NoLimit(Exception):
    """A top-up of a subject with no limit (unlimited): set a limit first."""


async def set_price(
    conn: Conn, actor: str, model: str, prompt: int, completion: int, effective_from: datetime | None
) -> admin_pb2.ModelPrice:
    async with conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO model_prices (model, effective_from, prompt_micro_credits_per_1k,"
            " completion_micro_credits_per_1k) VALUES ($1, COALESCE($2, now()), $3, $4)"
            " ON CONFLICT (model, effective_from) DO UPDATE SET"
            " prompt_micro_credits_per_1k = EXCLUDED.prompt_micro_credits_per_1k,"
            " completion_micro_credits_per_1k = EXCLUDED.completion_micro_credits_per_1k"
            " RETURNING effective_from",
            model, effective_from, prompt, completion,
        )  # fmt: skip
        await audit.record(conn, actor, "price.set", model, {"prompt_per_1k": prompt, "completion_per_1k": completion})
    assert row is not None
    return admin_pb2.ModelPrice(
        model=model, prompt_micro_credits_per_1k=prompt, completion_micro_credits_per_1k=completion,
        effective_from=ts(row["effective_from"]),
    )  # fmt: skip


async def prices(conn: Conn, model: str) -> admin_pb2.ListModelPricesResponse:
    rows = await conn.fetch(
        "SELECT * FROM model_prices WHERE $1 = '' OR model = $1 ORDER BY model, effective_from", model
    )
    out = admin_pb2.ListModelPricesResponse()
    for r in rows:
        out.prices.add(
            model=r["model"], prompt_micro_credits_per_1k=r["prompt_micro_credits_per_1k"],
            completion_micro_credits_per_1k=r["completion_micro_credits_per_1k"],
            effective_from=ts(r["effective_from"]),
        )  # fmt: skip
    return out


async def top_up(
    conn: Conn, actor: str, kind: str, subject_id: str, credits: int, tokens: int, key: str
) -> tuple[admin_pb2.Quota, bool] | None:
    """Raises the subject's limits; (quota, applied). A repeated idempotency key applies nothing.
    None if the subject does not exist."""
    table, id_col = _TABLE[kind]
    async with conn.transaction():
        current = await conn.fetchrow(
            f"SELECT quota_limit_micro_credits, quota_limit_tokens FROM {table} WHERE {id_col} = $1 FOR UPDATE",  # noqa: S608
            subject_id,
        )
        if current is None:
            return None
        if (credits and current["quota_limit_micro_credits"] is None) or (
            tokens and current["quota_limit_tokens"] is None
        ):
            raise NoLimit(f"the {kind} has no limit to top up (unlimited); set a limit first")
        inserted = await conn.fetchval(
            "INSERT INTO quota_topups (idempotency_key, subject_kind, subject_id, micro_credits, tokens,"
            " actor_user_id) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1",
            key or secrets.token_hex(16), kind, subject_id, credits, tokens, actor,
        )  # fmt: skip
        if inserted:
            await conn.execute(
                f"UPDATE {table} SET quota_limit_micro_credits = quota_limit_micro_credits + $2,"  # noqa: S608
                f" quota_limit_tokens = quota_limit_tokens + $3, version = nextval('accounts_version')"
                f" WHERE {id_col} = $1",
                subject_id, credits, tokens,
            )  # fmt: skip
            await audit.record(conn, actor, "quota.topup", f"{kind}:{subject_id}", {"micro_credits": credits,
                                                                                    "tokens": tokens})  # fmt: skip
        row = await conn.fetchrow(
            f"SELECT t.quota_limit_micro_credits, t.quota_limit_tokens, s.used_micro_credits AS used_credits,"  # noqa: S608
            f" s.used_tokens FROM {table} t LEFT JOIN spend s ON s.subject_kind = $2 AND s.subject_id = t.{id_col}"
            f" WHERE t.{id_col} = $1",
            subject_id, kind,
        )  # fmt: skip
    assert row is not None
    return quota(row), bool(inserted)
