"""Bounded spend (issue 13, hole 7): concurrent requests cannot overshoot a quota by more than one
request's bound, because authz holds each admitted request's bound against the quota until billing
applies its usage (`uplion.core.quota`).

The HOLD script against a real Redis, then the whole path: Envoy → authz (holds) → the Go rate
limiter (releases the holds of requests it refuses) → gateway → Pulsar → an echo worker → billing
(applies usage, then releases) on this suite's PostgreSQL and Redis. Before holds, 200 concurrent
streams against a quota of a few requests were all admitted (spend was checked at admission only)."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis

from uplion.core.credentials import spend_key
from uplion.core.quota import HOLD, Hold, Subject, held_key, hold_args, hold_field
from uplion.devstack.platform import Service, start_authz, start_billing, start_edge, start_gateway, start_worker
from uplion.devstack.pulsar import Pulsar
from uplion.devstack.redis import Redis
from uplion.v1 import admin_pb2

from .conftest import SecurityEdge

TTL_MS = 60_000


def _hold(r: redis.Redis, s: Subject, request_id: str, hold: Hold, now_ms: int | None = None) -> list[int]:
    keys, argv = hold_args(s, hold_field(request_id), hold, now_ms or int(time.time() * 1000), TTL_MS)
    return [int(x) for x in r.eval(HOLD, 2, *keys, *argv)]


def test_the_hold_script_admits_while_spend_plus_holds_is_below_the_limit(redis_server: Redis) -> None:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    user = f"u_{uuid.uuid4().hex[:10]}"
    s = Subject("user", user, limit_credits=100, limit_tokens=None, spent_credits=0, spent_tokens=0)
    r.hset(spend_key("user", user), mapping={"credits": 30, "tokens": 0})
    assert _hold(r, s, "a", Hold(40, 10)) == [1, 1]  # 30 + 0 < 100
    assert _hold(r, s, "b", Hold(40, 10)) == [1, 2]  # 30 + 40 < 100
    assert _hold(r, s, "c", Hold(40, 10)) == [-1, 2]  # 30 + 80 >= 100: held by requests in flight
    r.hdel(held_key("user", user), hold_field("a"))  # billing released a's hold after adding its spend
    r.hincrby(spend_key("user", user), "credits", 25)
    assert _hold(r, s, "c", Hold(40, 10)) == [1, 2]  # 55 + 40 < 100: the last admitted may overshoot
    r.hset(spend_key("user", user), "credits", 100)
    assert _hold(r, s, "d", Hold(1, 1)) == [0, 2]  # spent alone: exhausted
    r.close()


def test_holds_expire_and_empty_ones_are_not_stored(redis_server: Redis) -> None:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    token = f"t_{uuid.uuid4().hex[:10]}"
    s = Subject("token", token, limit_credits=None, limit_tokens=50, spent_credits=0, spent_tokens=0)
    now = int(time.time() * 1000)
    assert _hold(r, s, "old", Hold(0, 60), now_ms=now - TTL_MS - 1) == [1, 1]
    # the old hold expired: it is dropped, not counted
    assert _hold(r, s, "new", Hold(0, 10), now_ms=now) == [1, 1]
    assert set(r.hgetall(held_key("token", token))) == {"new"}
    assert _hold(r, s, "bodiless", Hold(0, 0), now_ms=now) == [1, 1]  # a GET holds nothing
    assert "bodiless" not in r.hgetall(held_key("token", token))
    assert 0 < r.pttl(held_key("token", token)) <= TTL_MS
    r.close()


def test_a_subject_has_at_most_max_holds(redis_server: Redis) -> None:
    """Billing down: nothing is released; the holds a subject may have are bounded (the script reads
    them all on every check)."""
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    user = f"u_{uuid.uuid4().hex[:10]}"
    s = Subject("user", user, limit_credits=10**12, limit_tokens=None, spent_credits=0, spent_tokens=0)
    now = int(time.time() * 1000)
    for i in range(3):
        keys, argv = hold_args(s, f"r{i}", Hold(1, 1), now, TTL_MS, max_holds=3)
        assert [int(x) for x in r.eval(HOLD, 2, *keys, *argv)] == [1, i + 1]
    keys, argv = hold_args(s, "r3", Hold(1, 1), now, TTL_MS, max_holds=3)
    assert [int(x) for x in r.eval(HOLD, 2, *keys, *argv)] == [-1, 3]
    r.close()


def test_a_missing_spend_record_counts_what_authz_read(redis_server: Redis) -> None:
    """Redis restarted empty: the script uses the spend authz read (from PostgreSQL), never zero."""
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    user = f"u_{uuid.uuid4().hex[:10]}"
    s = Subject("user", user, limit_credits=100, limit_tokens=None, spent_credits=100, spent_tokens=0)
    assert _hold(r, s, "a", Hold(1, 1)) == [0, 0]
    r.close()


# ---- the whole path ----

MODEL = "quota-echo"
PRICE = 1000  # micro-credits per 1k tokens: a token costs 1
MAX_TOKENS = 16
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "one two three four"}],
    "max_tokens": MAX_TOKENS,
    "stream": True,
    "stream_options": {"include_usage": True},
}
STREAMS = 200


async def _billed(dsn: str, subject: str, column: str, subject_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, count(DISTINCT event_id) AS distinct_n, max(cost_micro_credits) AS max_cost,"
            f" max(prompt_tokens + completion_tokens) AS max_tokens,"
            f" (SELECT used_micro_credits FROM spend WHERE subject_kind = $2 AND subject_id = $1) AS spent,"
            f" (SELECT used_tokens FROM spend WHERE subject_kind = $2 AND subject_id = $1) AS spent_tokens"
            f" FROM usage_events WHERE {column} = $1",
            subject_id,
            subject,
        )
    finally:
        await conn.close()
    assert row is not None
    return row


async def _stream(client: httpx.AsyncClient, key: str) -> tuple[int, str]:
    """(status, the error code of a refusal or the text streamed)."""
    async with client.stream(
        "POST", "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
    ) as resp:
        body = await resp.aread()
    if resp.status_code != 200:
        return resp.status_code, json.loads(body)["error"]["code"]
    return 200, body.decode()


async def _until_served_or_spent(client: httpx.AsyncClient, key: str, rng: random.Random) -> tuple[int, str]:
    """One client's stream, retried while the rest of the quota is held by requests in flight (as the
    SDKs retry a 429 with retry-after), until it is served or the quota is used up."""
    for _ in range(60):
        status, text = await _stream(client, key)
        if (status, text) != (429, "quota_held"):
            return status, text
        await asyncio.sleep(0.25 + rng.random() / 2)
    return 429, "quota_held"


async def _storm(url: str, key: str) -> list[tuple[int, str]]:
    limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=STREAMS)
    rng = random.Random(13)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        return list(await asyncio.gather(*(_until_served_or_spent(client, key, rng) for _ in range(STREAMS))))


@dataclass(frozen=True)
class QuotaPath:
    url: str
    authz: Service


@pytest.fixture
def quota_path(security_edge: SecurityEdge, broker: Pulsar, tmp_path: Path) -> Iterator[QuotaPath]:
    """A gateway, a slow echo worker (each stream takes about half a second) and billing in their own
    Pulsar namespace, an authz that has read the model's price, and an Envoy in front of them with
    the suite's accounts service and rate limiter."""
    ns = f"quota_{uuid.uuid4().hex[:8]}"
    broker.create_namespace(ns)
    assert security_edge.ratelimit is not None
    services = [
        start_gateway(tmp_path, broker.service_url, [MODEL], UPLION_PULSAR_NAMESPACE=ns),
        start_worker(
            tmp_path, broker.service_url, MODEL, UPLION_PULSAR_NAMESPACE=ns, UPLION_ECHO_TOKEN_DELAY_MS="30",
            UPLION_MAX_PROCESS_NUM="32",
        ),
        start_billing(
            tmp_path, broker.service_url, security_edge.dsn, security_edge.redis_url,
            UPLION_BILLING_BATCH_DELAY_MS="50", UPLION_PULSAR_NAMESPACE=ns,
        ),
    ]  # fmt: skip
    security_edge.admin.set_price(MODEL, PRICE, PRICE)  # billing has created the price table
    authz = start_authz(tmp_path, security_edge.dsn, security_edge.redis_url)  # reads the price at start
    services.append(authz)
    envoy, port = start_edge(tmp_path, services[0].port, authz_port=authz.port,
                             accounts_port=security_edge.accounts.port,
                             ratelimit_ports=(security_edge.ratelimit.port,))  # fmt: skip
    assert authz.metric("uplion_authz_quota_max_price") >= PRICE
    yield QuotaPath(f"http://127.0.0.1:{port}", authz)
    envoy.stop()
    for svc in reversed(services):
        svc.stop()


def _settled(dsn: str, subject: str, column: str, subject_id: str, served: int, r: redis.Redis) -> asyncpg.Record:
    """Waits until every served request is billed and every hold released."""
    deadline = time.monotonic() + 20
    while True:
        row = asyncio.run(_billed(dsn, subject, column, subject_id))
        holds = r.hgetall(held_key(subject, subject_id))
        if row["n"] >= served and not holds:
            return row
        assert time.monotonic() < deadline, f"billed {row['n']} of {served}; holds left: {len(holds)}"
        time.sleep(0.2)


@pytest.mark.parametrize("limited", ["user credits", "token tokens"])
def test_200_concurrent_streams_overshoot_a_small_quota_by_at_most_one_request(
    security_edge: SecurityEdge, quota_path: QuotaPath, limited: str
) -> None:
    if limited == "user credits":
        limit = 300  # about 15 requests' worth, each holding ~50 credits
        user = security_edge.member(quota=admin_pb2.Quota(limit_micro_credits=limit))
        key = security_edge.key(user.user_id).secret
        subject, column, subject_id, spent_field = "user", "user_id", user.user_id, "spent"
    else:
        limit = 300
        user = security_edge.member()
        created = security_edge.key(user.user_id, quota_limit_tokens=limit)
        key = created.secret
        subject, column, subject_id, spent_field = "token", "token_id", created.token.token_id, "spent_tokens"

    results = asyncio.run(_storm(quota_path.url, key))
    codes = Counter(code if status != 200 else "served" for status, code in results)
    served = [text for status, text in results if status == 200]
    # each of the 200 was served or refused for a used-up quota (no other error, none left waiting)
    assert set(codes) == {"served", "insufficient_quota"}, codes
    assert all(text.rstrip().endswith("data: [DONE]") for text in served)

    r = redis.Redis.from_url(security_edge.redis_url, decode_responses=True)
    row = _settled(security_edge.dsn, subject, column, subject_id, len(served), r)
    r.close()
    # every admitted stream billed exactly once, none of the refused ones
    assert row["n"] == row["distinct_n"] == len(served)
    spent = row[spent_field]
    one_request = row["max_cost"] if subject == "user" else row["max_tokens"]
    # the quota was used up (the refusals say so), and overshot by less than one request: a request
    # is admitted only while spend + holds < limit, and its hold covers what it can cost
    assert limit <= spent < limit + one_request, (spent, limit, one_request, codes)
    # every admitted request held its bound (none was let through unheld for want of Redis)
    assert quota_path.authz.metric("uplion_authz_quota_holds_total", result="unheld") == 0
    assert quota_path.authz.metric("uplion_authz_quota_holds_total", result="held_ok") >= len(served)


def test_a_request_the_rate_limiter_refuses_releases_its_holds(
    security_edge: SecurityEdge, quota_path: QuotaPath
) -> None:
    user = security_edge.member(quota=admin_pb2.Quota(limit_micro_credits=100_000))
    key = security_edge.key(user.user_id, rate_limits=admin_pb2.RateLimits(requests_per_minute=1)).secret
    r = redis.Redis.from_url(security_edge.redis_url, decode_responses=True)

    async def two() -> list[tuple[int, str]]:
        async with httpx.AsyncClient(base_url=quota_path.url, timeout=60) as client:
            return [await _stream(client, key), await _stream(client, key)]

    (first, _), (second, code) = asyncio.run(two())
    assert (first, second, code) == (200, 429, "rate_limit_exceeded")
    # the served request's hold goes when billing applies its usage; the refused one's at once (no
    # usage event would ever release it: it never reached the gateway)
    _settled(security_edge.dsn, "user", "user_id", user.user_id, 1, r)
    r.close()
