"""Redis killed and started again empty (no persistence, as the local stack and a cache-only Redis run)
under the whole edge: inference keeps working through the outage (authz from PostgreSQL, the rate
limiter failing open), a key disabled and a quota used up before the outage stay refused throughout
and after it, billing sees the new server and rebuilds the spend mirror at once (not at its next
periodic reconcile, 60 s later), and the token records come back as keys are used.

Its own Redis and services: killing the session's Redis would disturb every other suite."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import openai
import pytest
import redis

from uplion.accounts.cli import Client
from uplion.core.credentials import secret_hash, spend_key, token_key
from uplion.devstack.platform import (
    Service,
    bootstrap_admin,
    start_accounts,
    start_authz,
    start_billing,
    start_edge,
    start_gateway,
    start_worker,
)
from uplion.devstack.postgres import Postgres
from uplion.devstack.pulsar import Pulsar
from uplion.devstack.ratelimit import start_ratelimit
from uplion.devstack.redis import Redis, start_redis
from uplion.v1 import admin_pb2

from ..databases import new_database
from ..kube_api import eventually

MODEL = "restart-echo"
MSG: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "one two three"}]


@dataclass
class Stack:
    url: str
    dsn: str
    redis: Redis
    admin: Client
    billing: Service
    authz: Service

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def stack(broker: Pulsar, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    d: Path = tmp_path_factory.mktemp("redis-restart")
    r = start_redis(d / "redis")
    ns = f"restart_{uuid.uuid4().hex[:8]}"
    broker.create_namespace(ns)
    dsn = new_database(postgres, "redis_restart")
    accounts = start_accounts(d, dsn, r.url)
    authz = start_authz(d, dsn, r.url)
    admin = Client(f"127.0.0.1:{accounts.port}", bootstrap_admin(dsn)["secret"])
    gw = start_gateway(d, broker.service_url, [MODEL], UPLION_PULSAR_NAMESPACE=ns)
    worker = start_worker(d, broker.service_url, MODEL, UPLION_PULSAR_NAMESPACE=ns)
    limiter = start_ratelimit(d, r.url, pulsar_url=broker.service_url, UPLION_PULSAR_NAMESPACE=ns)
    billing = start_billing(d, broker.service_url, dsn, r.url, UPLION_BILLING_BATCH_DELAY_MS="50",
                            UPLION_PULSAR_NAMESPACE=ns)  # fmt: skip
    envoy, port = start_edge(d, gw.port, authz_port=authz.port, accounts_port=accounts.port,
                             ratelimit_ports=(limiter.port,))  # fmt: skip
    yield Stack(f"http://127.0.0.1:{port}", dsn, r, admin, billing, authz)
    envoy.stop()
    for svc in [worker, gw, billing, limiter, authz, accounts]:
        svc.stop()
    r.stop()


def refused_with(sdk: openai.OpenAI, exc: type[openai.APIStatusError]) -> bool:
    try:
        sdk.chat.completions.create(model=MODEL, messages=MSG)
    except exc:
        return True
    return False


def out_of_quota(sdk: openai.OpenAI) -> bool:
    """Whether the key is refused because its quota is used up; a refusal because the rest of it is
    held by the previous request until billing applies its usage (`quota_held`) is retried."""
    for _ in range(50):
        try:
            sdk.chat.completions.create(model=MODEL, messages=MSG)
            return False
        except openai.RateLimitError as e:
            if e.code != "quota_held":
                return e.code == "insufficient_quota"
            time.sleep(0.1)
    return False


async def _spent(dsn: str, user_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT used_micro_credits FROM spend WHERE subject_kind = 'user' AND subject_id = $1", user_id
        )
    finally:
        await conn.close()
    return int(value or 0)


def test_refusals_survive_a_redis_restart_and_the_mirror_is_rebuilt_at_once(stack: Stack) -> None:
    stack.admin.set_price(MODEL, 1000, 1000)
    # a member who used up a small quota, a key an admin disabled, and a member in good standing
    spender, spent_key = stack.admin.create_user_with_token(
        f"{uuid.uuid4().hex[:8]}@restart.test", quota=admin_pb2.Quota(limit_micro_credits=60)
    )
    broke = stack.sdk(spent_key.secret)
    for _ in range(100):
        if out_of_quota(broke):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the quota never ran out")
    _, disabled = stack.admin.create_user_with_token(f"{uuid.uuid4().hex[:8]}@restart.test")
    stack.admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=disabled.token.token_id, disabled=True))
    _, good = stack.admin.create_user_with_token(f"{uuid.uuid4().hex[:8]}@restart.test")
    ok = stack.sdk(good.secret)
    assert ok.chat.completions.create(model=MODEL, messages=MSG).choices
    time.sleep(1)  # past authz's cache

    port = stack.redis.port
    stack.redis.proc.kill()
    # the outage: inference goes on from PostgreSQL; both refusals hold
    assert ok.chat.completions.create(model=MODEL, messages=MSG).choices
    assert refused_with(stack.sdk(disabled.secret), openai.AuthenticationError)
    assert out_of_quota(broke)

    stack.redis = start_redis(stack.redis.workdir, port=port)  # empty: no persistence
    r = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    # straight after the restart, before billing has rebuilt anything, nothing is let through that
    # was refused before (authz reads a limited user without a spend record from PostgreSQL)
    assert out_of_quota(broke)
    assert refused_with(stack.sdk(disabled.secret), openai.AuthenticationError)
    assert ok.chat.completions.create(model=MODEL, messages=MSG).choices
    spent = asyncio.run(_spent(stack.dsn, spender.user_id))
    wait_for_mirror(r, spender.user_id, spent)  # billing's write failed in the outage: it rebuilds
    # keys used once authz's breaker closed again (1 s after its last Redis failure) have their
    # records back in Redis, refilled from PostgreSQL: the disabled one as disabled
    deadline = time.monotonic() + 10
    while r.hget(token_key(secret_hash(good.secret)), "disabled") != "0" or (
        r.hget(token_key(secret_hash(disabled.secret)), "disabled") != "1"
    ):
        assert time.monotonic() < deadline, "the token records were not refilled"
        assert ok.chat.completions.create(model=MODEL, messages=MSG).choices
        assert refused_with(stack.sdk(disabled.secret), openai.AuthenticationError)
        time.sleep(0.3)
    r.close()

    # a restart nobody wrote through (no usage meanwhile): billing sees the new server by its run id
    # and rebuilds within seconds, not at its periodic reconcile 60 s later
    seen = stack.billing.metric("uplion_billing_redis_restarts_seen_total")
    stack.redis.proc.kill()
    stack.redis = start_redis(stack.redis.workdir, port=port)
    r = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    wait_for_mirror(r, spender.user_id, spent)
    assert stack.billing.metric("uplion_billing_redis_restarts_seen_total") > seen
    assert out_of_quota(broke)
    r.close()


def wait_for_mirror(r: redis.Redis, user_id: str, spent: int) -> None:
    """Until the spend mirror holds PostgreSQL's value again (rebuilt after the restart)."""
    eventually(lambda: int(r.hget(spend_key("user", user_id), "credits") or -1) == spent, timeout=10, interval=0.1)
