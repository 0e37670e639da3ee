"""Billing applies every usage event exactly once, at its own time's price; poison is parked."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import pulsar
import pulsar.asyncio as pa
import pytest
import redis.asyncio as aioredis

from uplion.core.credentials import spend_key
from uplion.core.subscriptions import BILLING_SUBSCRIPTION
from uplion.devstack.redis import Redis
from uplion.v1 import usage_pb2

from .conftest import T0, BillingEnv, Publisher, event

PROMPT_PRICE, COMPLETION_PRICE = 1000, 3000  # micro-credits per 1k tokens


async def set_price(dsn: str, model: str, prompt: int, completion: int, effective: int) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "INSERT INTO model_prices VALUES ($1, $2, $3, $4)", model, datetime.fromtimestamp(effective, UTC), prompt,
        completion,
    )  # fmt: skip
    await conn.close()


def backlog(env: BillingEnv) -> int:
    stats = env.broker.admin_get(f"/admin/v2/persistent/public/{env.namespace}/usage/stats")
    return int(stats["subscriptions"][BILLING_SUBSCRIPTION]["msgBacklog"])  # type: ignore[index]


async def wait_drained(env: BillingEnv, within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if backlog(env) == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"billing backlog stayed at {backlog(env)}")


def workload(n: int, dup_rate: float, seed: int = 7) -> tuple[list[bytes], dict[str, usage_pb2.UsageEvent]]:
    rng = random.Random(seed)
    distinct = {}
    for i in range(n):
        e = event(f"ev-{i}", user=f"u{i % 17}", token=f"t{i % 41}", prompt=rng.randint(1, 500),
                  completion=rng.randint(0, 900), started=T0 + rng.randint(0, 3 * 86400))  # fmt: skip
        distinct[e.event_id] = e
    payloads = [e.SerializeToString() for e in distinct.values()]
    dups = [payloads[rng.randrange(n)] for _ in range(int(n * dup_rate))]
    for d in dups:  # duplicates land anywhere, before or after their original
        payloads.insert(rng.randrange(len(payloads) + 1), d)
    return payloads, distinct


def expected_cost(
    e: usage_pb2.UsageEvent, prompt_price: int = PROMPT_PRICE, completion_price: int = COMPLETION_PRICE
) -> int:
    return (e.prompt_tokens * prompt_price + e.completion_tokens * completion_price) // 1000


async def check_totals(env: BillingEnv, distinct: dict[str, usage_pb2.UsageEvent]) -> None:
    conn = await asyncpg.connect(env.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM usage_events") == len(distinct)
        total = sum(expected_cost(e) for e in distinct.values())
        assert await conn.fetchval("SELECT sum(cost_micro_credits) FROM usage_events") == total
        daily = await conn.fetchrow("SELECT sum(requests) r, sum(prompt_tokens) p, sum(completion_tokens) c,"
                                    " sum(cost_micro_credits) m FROM usage_daily")  # fmt: skip
        assert daily is not None
        assert (daily["r"], daily["m"]) == (len(distinct), total)
        assert daily["p"] == sum(e.prompt_tokens for e in distinct.values())
        per_user: dict[str, int] = defaultdict(int)
        for e in distinct.values():
            per_user[e.caller.user_id] += expected_cost(e)
        rows = await conn.fetch("SELECT subject_id, used_micro_credits FROM spend WHERE subject_kind = 'user'")
        assert {r["subject_id"]: r["used_micro_credits"] for r in rows} == dict(per_user)
        tokens = await conn.fetchval("SELECT sum(used_micro_credits) FROM spend WHERE subject_kind = 'token'")
        assert tokens == total
    finally:
        await conn.close()


async def test_100k_events_with_5_percent_duplicates_bill_exactly_once(
    billing_env: BillingEnv, publish: Publisher
) -> None:
    await set_price(billing_env.dsn, "m", PROMPT_PRICE, COMPLETION_PRICE, T0 - 1000)
    payloads, distinct = workload(100_000, 0.05)
    await asyncio.to_thread(publish, payloads)
    proc = await asyncio.to_thread(billing_env.start)
    try:
        await wait_drained(billing_env)
        await check_totals(billing_env, distinct)
    finally:
        proc.stop()


async def redis_matches_postgres(env: BillingEnv, redis_url: str) -> bool:
    r = aioredis.from_url(redis_url, decode_responses=True)
    conn = await asyncpg.connect(env.dsn)
    try:
        rows = await conn.fetch("SELECT subject_kind, subject_id, used_micro_credits, used_tokens FROM spend")
        for row in rows:
            got = await r.hgetall(spend_key(row["subject_kind"], row["subject_id"]))
            if got != {"credits": str(row["used_micro_credits"]), "tokens": str(row["used_tokens"])}:
                return False
        return bool(rows)
    finally:
        await conn.close()
        await r.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 15) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


async def test_sigkill_mid_stream_then_restart_stays_exact(
    billing_env: BillingEnv, publish: Publisher, redis_server: Redis
) -> None:
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/1"
    await set_price(billing_env.dsn, "m", PROMPT_PRICE, COMPLETION_PRICE, T0 - 1000)
    payloads, distinct = workload(50_000, 0.05, seed=11)
    await asyncio.to_thread(publish, payloads)
    mirror_env = {"UPLION_BILLING_BATCH_EVENTS": "1000", "UPLION_REDIS_URL": redis_url}
    proc = await asyncio.to_thread(billing_env.start, **mirror_env)
    conn = await asyncpg.connect(billing_env.dsn)
    for _ in range(2000):  # until billing is mid-stream (bounded: 100 s)
        if await conn.fetchval("SELECT count(*) FROM usage_events") >= 5_000:
            break
        await asyncio.sleep(0.05)
    proc.kill()  # mid-stream: some batches committed, the one in hand maybe too, none acknowledged after
    applied_at_kill = await conn.fetchval("SELECT count(*) FROM usage_events")
    await conn.close()
    assert applied_at_kill < len(distinct)
    proc = await asyncio.to_thread(billing_env.start, **mirror_env)
    try:
        await wait_drained(billing_env)
        await check_totals(billing_env, distinct)
        # the quota mirror equals PostgreSQL again (the restart rebuilt it, then added increments)
        assert await eventually(lambda: redis_matches_postgres(billing_env, redis_url))
    finally:
        proc.stop()


async def test_redis_mirror_follows_postgres_and_drift_heals(
    billing_env: BillingEnv, publish: Publisher, redis_server: Redis
) -> None:
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/2"
    await set_price(billing_env.dsn, "m", PROMPT_PRICE, COMPLETION_PRICE, T0 - 1000)
    proc = await asyncio.to_thread(billing_env.start, UPLION_REDIS_URL=redis_url, UPLION_BILLING_RECONCILE_S="1")
    try:
        batch = [event(f"mirror-{i}", user=f"mu{i % 3}", token=f"mt{i % 5}").SerializeToString() for i in range(300)]
        await asyncio.to_thread(publish, batch)
        await wait_drained(billing_env)
        assert await eventually(lambda: redis_matches_postgres(billing_env, redis_url))
        r = aioredis.from_url(redis_url)
        await r.hset(spend_key("user", "mu0"), mapping={"credits": 0, "tokens": 0})  # drift, e.g. a lost update
        await r.delete(spend_key("token", "mt1"))
        await r.aclose()
        assert await eventually(lambda: redis_matches_postgres(billing_env, redis_url), within_s=5)
    finally:
        proc.stop()


async def test_price_change_mid_stream_charges_each_event_its_own_price(
    billing_env: BillingEnv, publish: Publisher
) -> None:
    await set_price(billing_env.dsn, "m", 1000, 1000, T0 - 100)
    await set_price(billing_env.dsn, "m", 5000, 7000, T0 + 50)  # in force for requests started from T0+50
    before, after = event("old", started=T0), event("new", started=T0 + 100)
    proc = await asyncio.to_thread(billing_env.start)
    try:
        await asyncio.to_thread(publish, [before.SerializeToString(), after.SerializeToString()])
        await wait_drained(billing_env)
        conn = await asyncpg.connect(billing_env.dsn)
        rows = await conn.fetch("SELECT event_id, cost_micro_credits FROM usage_events")
        costs = {r["event_id"]: r["cost_micro_credits"] for r in rows}
        await conn.close()
        assert costs == {"old": (10 * 1000 + 20 * 1000) // 1000, "new": (10 * 5000 + 20 * 7000) // 1000}
    finally:
        proc.stop()


async def test_poison_events_go_to_dead_letters_and_the_rest_is_billed(
    billing_env: BillingEnv, publish: Publisher
) -> None:
    await set_price(billing_env.dsn, "m", PROMPT_PRICE, COMPLETION_PRICE, T0 - 1000)
    good = [event(f"g{i}") for i in range(10)]
    poison = [b"\xff\x00 not a usage event", event("orphan", model="model-without-price").SerializeToString()]
    # requests the gateway refused (any model a client typed, or none): neither billed nor parked
    refused = [event(f"r{i}", model=m, prompt=0, completion=0) for i, m in enumerate(["no-such-model", ""])]
    for r in refused:
        r.outcome = usage_pb2.REQUEST_OUTCOME_REJECTED
    proc = await asyncio.to_thread(billing_env.start)
    try:
        await asyncio.to_thread(
            publish, [good[0].SerializeToString(), *poison, *(r.SerializeToString() for r in refused),
                      *(e.SerializeToString() for e in good[1:])],
        )  # fmt: skip
        await wait_drained(billing_env)
        conn = await asyncpg.connect(billing_env.dsn)
        assert await conn.fetchval("SELECT count(*) FROM usage_events") == 10
        await conn.close()
        client = pa.Client(billing_env.broker.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
                           authentication=billing_env.broker.authentication())  # fmt: skip
        reader = await client.create_reader(billing_env.topics.usage() + "-dlq", pulsar.MessageId.earliest)
        parked = [await asyncio.wait_for(reader.read_next(), 10) for _ in range(2)]
        with pytest.raises(TimeoutError):  # nothing else was parked
            await asyncio.wait_for(reader.read_next(), 2)
        await client.close()
        reasons = sorted(m.properties()["reason"] for m in parked)
        assert reasons == ["no price in force for the event's model", "undecodable usage event"]
        assert sorted(m.data() for m in parked) == sorted(poison)
    finally:
        proc.stop()


async def test_sigterm_flushes_the_batch_in_hand(billing_env: BillingEnv, publish: Publisher) -> None:
    """A batch still filling when SIGTERM arrives is written and acknowledged before the process
    exits: nothing waits for a redelivery after a deploy."""
    await set_price(billing_env.dsn, "m", PROMPT_PRICE, COMPLETION_PRICE, T0 - 1000)
    # batches close after 4 s or 100k events: the 1,000 events below sit in one open batch
    proc = await asyncio.to_thread(
        billing_env.start, UPLION_BILLING_BATCH_DELAY_MS="4000", UPLION_BILLING_BATCH_EVENTS="100000"
    )
    payloads, distinct = workload(1000, 0.0)
    await asyncio.to_thread(publish, payloads)
    await asyncio.sleep(1.0)
    conn = await asyncpg.connect(billing_env.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM usage_events") == 0  # still in the open batch
        await asyncio.to_thread(proc.stop)  # SIGTERM, then wait for the exit
        assert proc.popen.returncode == 0
        assert await conn.fetchval("SELECT count(*) FROM usage_events") == len(distinct)
    finally:
        await conn.close()
    assert backlog(billing_env) == 0  # and acknowledged
    await check_totals(billing_env, distinct)
