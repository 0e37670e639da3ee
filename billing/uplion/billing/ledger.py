"""Applying a batch of usage events in ONE database round trip, idempotently.

The batch travels as arrays; one statement (data-modifying CTEs, one snapshot, atomic) prices each
event at the price in force when its request started, inserts the events not seen before
(ON CONFLICT DO NOTHING on the event id, which also drops duplicates inside the batch), and adds
only those to the daily aggregates and to user and token spend. Events whose model has no price in
force are not applied: they come back as `unpriced` for the dead-letter topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from uplion.core.migrations import Conn
from uplion.v1 import usage_pb2

APPLY = """
WITH incoming AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::int2[], $7::bool[],
                         $8::int8[], $9::int8[], $10::timestamptz[], $11::timestamptz[])
        AS t(event_id, user_id, token_id, model, kind, outcome, streamed,
             prompt_tokens, completion_tokens, started_at, finished_at)
),
priced AS (
    SELECT i.*, p.prompt_micro_credits_per_1k AS pp, p.completion_micro_credits_per_1k AS cp
    FROM incoming i
    LEFT JOIN LATERAL (
        SELECT prompt_micro_credits_per_1k, completion_micro_credits_per_1k FROM model_prices mp
        WHERE mp.model = i.model AND mp.effective_from <= i.started_at
        ORDER BY mp.effective_from DESC LIMIT 1
    ) p ON true
),
inserted AS (
    INSERT INTO usage_events (event_id, user_id, token_id, model, kind, outcome, streamed,
                              prompt_tokens, completion_tokens, cost_micro_credits, started_at, finished_at)
    SELECT event_id, user_id, token_id, model, kind, outcome, streamed, prompt_tokens, completion_tokens,
           (prompt_tokens * pp + completion_tokens * cp) / 1000, started_at, finished_at
    FROM priced WHERE pp IS NOT NULL
    ON CONFLICT (event_id) DO NOTHING
    RETURNING user_id, token_id, model, prompt_tokens, completion_tokens, cost_micro_credits, finished_at
),
daily AS (
    INSERT INTO usage_daily AS d (day, user_id, token_id, model, requests, prompt_tokens, completion_tokens,
                                  cost_micro_credits)
    SELECT (finished_at AT TIME ZONE 'UTC')::date, user_id, token_id, model, count(*),
           sum(prompt_tokens), sum(completion_tokens), sum(cost_micro_credits)
    FROM inserted GROUP BY 1, 2, 3, 4
    ON CONFLICT (day, user_id, token_id, model) DO UPDATE SET
        requests = d.requests + EXCLUDED.requests,
        prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
        cost_micro_credits = d.cost_micro_credits + EXCLUDED.cost_micro_credits
    RETURNING 1
),
spend_delta AS (
    SELECT kind, id, sum(cost_micro_credits) AS credits, sum(prompt_tokens + completion_tokens) AS tokens
    FROM (SELECT 'user' AS kind, user_id AS id, cost_micro_credits, prompt_tokens, completion_tokens FROM inserted
          UNION ALL
          SELECT 'token', token_id, cost_micro_credits, prompt_tokens, completion_tokens FROM inserted) x
    GROUP BY kind, id
),
spent AS (
    INSERT INTO spend AS s (subject_kind, subject_id, used_micro_credits, used_tokens)
    SELECT kind, id, credits, tokens FROM spend_delta
    ON CONFLICT (subject_kind, subject_id) DO UPDATE SET
        used_micro_credits = s.used_micro_credits + EXCLUDED.used_micro_credits,
        used_tokens = s.used_tokens + EXCLUDED.used_tokens
    RETURNING 1
)
SELECT 'spent' AS status, kind || ':' || id AS key, credits AS added_credits, tokens AS added_tokens
FROM spend_delta
UNION ALL
SELECT 'unpriced', event_id, 0, 0 FROM priced WHERE pp IS NULL
UNION ALL
SELECT 'written', '', (SELECT count(*) FROM daily), (SELECT count(*) FROM spent)
"""


@dataclass
class Applied:
    """What a batch changed: spend added per `user:<id>` / `token:<id>`, and the unpriced event ids."""

    spend: dict[str, tuple[int, int]]
    unpriced: list[str]


def _ts(ts: object) -> datetime:
    seconds = getattr(ts, "seconds", 0) + getattr(ts, "nanos", 0) / 1e9
    return datetime.fromtimestamp(seconds, UTC)


def columns(events: list[usage_pb2.UsageEvent]) -> list[list[object]]:
    """The batch as the statement's 11 array parameters (a pure function)."""
    cols: list[list[object]] = [[] for _ in range(11)]
    for e in events:
        row = (e.event_id, e.caller.user_id, e.caller.token_id, e.model, e.kind, e.outcome, e.streamed,
               e.prompt_tokens, e.completion_tokens, _ts(e.started_at), _ts(e.finished_at))  # fmt: skip
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return cols


async def apply_batch(conn: Conn, events: list[usage_pb2.UsageEvent]) -> Applied:
    rows = await conn.fetch(APPLY, *columns(events))
    applied = Applied({}, [])
    for r in rows:
        if r["status"] == "spent":
            applied.spend[r["key"]] = (int(r["added_credits"]), int(r["added_tokens"]))
        elif r["status"] == "unpriced":
            applied.unpriced.append(r["key"])
    return applied
