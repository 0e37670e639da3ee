"""Rate limits at the edge: exact request counts across 4 rate-limit replicas behind Envoy, token
reservations that never let served tokens exceed the limit and are refunded, 429s in OpenAI's
shape with x-ratelimit-* headers, and a Redis outage that keeps decisions within the bound."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
import redis
from envoy.service.ratelimit.v3 import rls_pb2
from openai.types.chat import ChatCompletionMessageParam

from uplion.devstack.platform import start_edge
from uplion.devstack.ratelimit import RateLimit, start_ratelimit
from uplion.devstack.redis import start_redis
from uplion.v1 import admin_pb2

from ..ratelimit.conftest import caller, request
from .conftest import Edge


def wait_for_fresh_minute(margin_s: float = 20) -> None:
    """Fixed windows are minute-aligned: start a burst with enough of the minute left."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.5)


def limit_user(edge: Edge, user_id: str, **limits: int) -> None:
    edge.admin.call("UpdateUser", admin_pb2.UpdateUserRequest(user_id=user_id, rate_limits=admin_pb2.RateLimits(
        **limits)))  # fmt: skip


async def burst(url: str, key: str, n: int, body: dict[str, object]) -> list[tuple[int, dict[str, str], bytes]]:
    connector = aiohttp.TCPConnector(limit=n)
    headers = {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as s:

        async def one() -> tuple[int, dict[str, str], bytes]:
            async with s.post("/v1/chat/completions", json=body, headers=headers) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()

        return await asyncio.gather(*(one() for _ in range(n)))


@pytest.fixture
def four_replicas(edge: Edge, tmp_path: Path) -> Iterator[tuple[list[RateLimit], str]]:
    # this test's burst runs the load generator, Envoy, authz, 4 replicas, the gateway and Redis on 2 cores:
    # Redis, queued behind the burst, can answer later than 250 ms, and a decision that waits longer than
    # the bound fails open; the bound is raised from 50 ms to 1 s (exactness is what is tested here;
    # test_redis_outage_fails_open_within_the_bound tests the default bound)
    replicas = [start_ratelimit(tmp_path, edge.redis.url, UPLION_RATELIMIT_REDIS_TIMEOUT_MS="1000") for _ in range(4)]
    envoy, port = start_edge(tmp_path, edge.gateway.port, authz_port=edge.authz.port,
                             ratelimit_ports=tuple(r.port for r in replicas))  # fmt: skip
    yield replicas, f"http://127.0.0.1:{port}"
    envoy.stop()
    for r in replicas:
        r.stop()


async def test_exactly_the_limit_across_four_replicas(edge: Edge, four_replicas: tuple[list[RateLimit], str]) -> None:
    replicas, url = four_replicas
    user_id, _, key = edge.new_key()
    limit_user(edge, user_id, requests_per_minute=100)  # the account's own limit overrides the default
    await asyncio.sleep(0.3)
    wait_for_fresh_minute()
    body: dict[str, object] = {"model": "edge-echo", "messages": [{"role": "user", "content": "hi"}]}
    results = await burst(url, key, 1000, body)
    statuses = [s for s, _, _ in results]
    assert statuses.count(200) == 100, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(429) == 900
    served = [h for s, h, _ in results if s == 200]
    assert {h["x-ratelimit-limit-requests"] for h in served} == {"100"}
    assert sorted(int(h["x-ratelimit-remaining-requests"]) for h in served) == list(range(100))
    refused = next((h, b) for s, h, b in results if s == 429)
    assert refused[0]["x-ratelimit-remaining-requests"] == "0"
    assert int(refused[0]["retry-after"]) >= 1
    assert json.loads(refused[1])["error"]["code"] == "rate_limit_exceeded"
    assert all(r.metric("uplion_ratelimit_hits_total") > 0 for r in replicas)  # every replica decided


def test_sdk_sees_rate_limit_error_with_openai_headers(edge: Edge) -> None:
    user_id, _, key = edge.new_key()
    limit_user(edge, user_id, requests_per_minute=2)
    time.sleep(0.3)
    wait_for_fresh_minute(5)
    sdk = edge.sdk(key)
    for _ in range(2):
        raw = sdk.chat.completions.with_raw_response.create(
            model="edge-echo", messages=[{"role": "user", "content": "x"}]
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert "x-ratelimit-limit-tokens" in raw.headers
        assert raw.headers["ratelimit-limit"]
    with pytest.raises(openai.RateLimitError) as e:
        sdk.chat.completions.create(model="edge-echo", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "rate_limit_exceeded"
    assert e.value.type == "requests"
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def token_counter(edge: Edge, user_id: str) -> int:
    window = int(time.time()) // 60 * 60
    raw = redis.Redis.from_url(edge.redis.url).get(
        f"uplion:rl:uplion:generic_key_tokens|user_id_{{{user_id}}}:{window}"
    )
    return int(raw or 0)


async def test_tokens_are_reserved_then_settled(edge: Edge) -> None:
    user_id, _, key = edge.new_key()
    limit_user(edge, user_id, tokens_per_minute=2000)
    await asyncio.sleep(0.3)
    wait_for_fresh_minute(25)
    words = " ".join(f"w{i}" for i in range(10))
    body = {"model": "edge-echo", "messages": [{"role": "user", "content": words}], "max_tokens": 20, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    results = await burst(edge.url, key, 50, body)
    served = [b for s, _, b in results if s == 200]
    refused = [h for s, h, _ in results if s == 429]
    assert served
    assert refused  # 50 reservations of ~60 tokens do not fit in 2,000 at once
    assert all(h["x-ratelimit-remaining-tokens"] for h in refused)
    used = 0
    for b in served:  # the usage chunk each stream ended with, before `data: [DONE]`
        events = [line for line in b.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        tail = events[-2]
        assert '"total_tokens"' in tail
        used += int(tail.split('"total_tokens":')[1].split("}")[0].strip(' "'))
    assert used <= 2000
    # the reservations are settled by the usage events: the counter ends at what was really used
    deadline = time.monotonic() + 10
    while token_counter(edge, user_id) != used:
        assert time.monotonic() < deadline, f"counter {token_counter(edge, user_id)} != used {used}"
        await asyncio.sleep(0.1)
    assert edge.ratelimit.metric("uplion_ratelimit_reservations_settled_total", result="settled") >= len(served)
    # the refunded capacity serves more requests in the same window
    again = await burst(edge.url, key, 10, body)
    assert [s for s, _, _ in again].count(200) == 10


async def test_requests_the_gateway_refuses_release_their_reservation(edge: Edge) -> None:
    user_id, _, key = edge.new_key()
    await asyncio.sleep(0.3)
    wait_for_fresh_minute(15)
    refused = [
        {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 500_000},  # 404
        {"model": "edge-echo", "messages": [], "max_tokens": 500_000},  # 400
    ]
    for body in refused:
        [(status, headers, _)] = await burst(edge.url, key, 1, body)
        assert status in (400, 404)
        assert int(headers["x-ratelimit-remaining-tokens"]) < 2_000_000 - 500_000  # it was reserved
    # each refusal's REJECTED usage event releases the whole reservation
    deadline = time.monotonic() + 10
    while token_counter(edge, user_id) != 0:
        assert time.monotonic() < deadline, f"counter stayed at {token_counter(edge, user_id)}"
        await asyncio.sleep(0.1)


def test_redis_outage_fails_open_within_the_bound(tmp_path: Path) -> None:
    r = start_redis(tmp_path / "redis")
    config = tmp_path / "rules"
    config.mkdir()
    (config / "a.yaml").write_text("""
domain: open
descriptors: [{key: k, rate_limit: {unit: minute, requests_per_unit: 1}}]
""")
    (config / "b.yaml").write_text("""
domain: closed
failure_mode_deny: true
descriptors: [{key: k, rate_limit: {unit: minute, requests_per_unit: 1}}]
""")
    svc = start_ratelimit(tmp_path, r.url, config)
    try:
        call = caller(svc.port)
        ok, over = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
        assert call(request("open", [("k", "v")])).overall_code == ok
        assert call(request("open", [("k", "v")])).overall_code == over  # Redis counts
        r.proc.kill()
        took = []
        for domain, want in (("open", ok), ("closed", over)) * 10:
            t0 = time.monotonic()
            resp = call(request(domain, [("k", "v")]))
            took.append(time.monotonic() - t0)
            assert resp.overall_code == want
        assert max(took) < 0.1  # the 50 ms Redis bound plus the call itself
        assert svc.metric("uplion_ratelimit_redis_failures_total", mode="allow") >= 10
        assert svc.metric("uplion_ratelimit_redis_failures_total", mode="deny") >= 10
    finally:
        svc.stop()
        r.stop()


def test_config_errors_keep_the_last_good_rules(tmp_path: Path, edge: Edge) -> None:
    config = tmp_path / "rules"
    config.mkdir()
    (config / "d.yaml").write_text(
        "domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 1}}]\n"
    )
    svc = start_ratelimit(tmp_path, edge.redis.url, config, UPLION_RATELIMIT_RELOAD_S="0.1")
    try:
        call = caller(svc.port)
        value = f"v{time.time_ns()}"
        assert call(request("d", [("k", value)])).statuses[0].current_limit.requests_per_unit == 1
        (config / "d.yaml").write_text("domain: d\ndescriptors: [{key: k, rate_limit: {unit: fortnight}}]\n")
        time.sleep(0.5)
        assert call(request("d", [("k", value)])).statuses[0].current_limit.requests_per_unit == 1
        assert "invalid rate limit unit 'fortnight'" in svc.proc.log_path.read_text()
        (config / "d.yaml").write_text(
            "domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 7}}]\n"
        )
        deadline = time.monotonic() + 5
        while call(request("d", [("k", value)])).statuses[0].current_limit.requests_per_unit != 7:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        svc.stop()


def test_hour_and_day_limits_come_from_the_account(edge: Edge) -> None:
    user_id, _, key = edge.new_key()
    limit_user(edge, user_id, requests_per_hour=2)
    time.sleep(0.3)
    sdk = edge.sdk(key)
    msg: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x"}]
    for _ in range(2):
        sdk.chat.completions.create(model="edge-echo", messages=msg)
    with pytest.raises(openai.RateLimitError) as e:
        sdk.chat.completions.create(model="edge-echo", messages=msg)
    assert "per hour" in e.value.message
    # a token's own daily token budget: a request whose reservation does not fit is refused up front
    _, token_id2, key2 = edge.new_key()
    day = admin_pb2.RateLimits(tokens_per_day=100)
    edge.admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=token_id2, rate_limits=day))
    time.sleep(0.3)
    with pytest.raises(openai.RateLimitError) as tokens:  # ~4,100 tokens reserved without max_tokens
        edge.sdk(key2).chat.completions.create(model="edge-echo", messages=msg)
    assert tokens.value.type == "tokens"
    assert "per day" in tokens.value.message
    edge.sdk(key2).chat.completions.create(model="edge-echo", messages=msg, max_tokens=5)  # ~12 fits
