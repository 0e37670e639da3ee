"""Requests through Envoy → gateway → usage events on Pulsar → billing → PostgreSQL and Redis →
quota exhausted → the next request is refused by authz with `insufficient_quota`."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import openai
import redis

from uplion.core.credentials import spend_key
from uplion.devstack.platform import start_billing, start_edge, start_gateway, start_worker
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import admin_pb2, usage_pb2

from .conftest import Edge


async def _billed(dsn: str, user_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, sum(prompt_tokens) AS p, sum(completion_tokens) AS c,"
            " sum(cost_micro_credits) AS cost, max(cost_micro_credits) AS max_cost,"
            " (SELECT used_micro_credits FROM spend WHERE subject_kind = 'user'"
            " AND subject_id = $1) AS spent FROM usage_events WHERE user_id = $1",
            user_id,
        )
    finally:
        await conn.close()
    assert row is not None
    return row


async def _kinds(dsn: str, user_id: str) -> set[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            r["kind"] for r in await conn.fetch("SELECT DISTINCT kind FROM usage_events WHERE user_id = $1", user_id)
        }
    finally:
        await conn.close()


LIMIT = 200  # micro-credits; at 1,000 per 1k tokens every token costs 1


def test_billing_exhausts_the_quota_and_authz_refuses(edge: Edge, broker: Pulsar, tmp_path: Path) -> None:
    ns = f"e2e_{uuid.uuid4().hex[:8]}"
    broker.create_namespace(ns)
    model = "e2e-echo"
    gw = start_gateway(tmp_path, broker.service_url, [model], UPLION_PULSAR_NAMESPACE=ns)
    worker = start_worker(tmp_path, broker.service_url, model, UPLION_PULSAR_NAMESPACE=ns)
    billing = start_billing(tmp_path, broker.service_url, edge.dsn, edge.redis.url, UPLION_BILLING_BATCH_DELAY_MS="50",
                            UPLION_PULSAR_NAMESPACE=ns)  # fmt: skip
    envoy, port = start_edge(tmp_path, gw.port, authz_port=edge.authz.port, accounts_port=edge.accounts.port)
    try:
        edge.admin.set_price(model, 1000, 1000)
        user, created = edge.admin.create_user_with_token(
            f"{uuid.uuid4().hex[:8]}@e2e.test", quota=admin_pb2.Quota(limit_micro_credits=LIMIT)
        )
        sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=created.secret, max_retries=0)
        # authz holds each request's bound at the highest price it has read (every 2 s)
        deadline = time.monotonic() + 10
        while edge.authz.metric("uplion_authz_quota_max_price") < 1000:
            assert time.monotonic() < deadline, "authz did not read the price"
            time.sleep(0.1)
        served, refused = 0, None
        for i in range(300):
            try:
                if i % 2:  # the Responses API is billed and limited as chat is (this gateway stores none)
                    sdk.responses.create(model=model, input="one two three", store=False)
                else:
                    sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "one two three"}])
                served += 1
            except openai.RateLimitError as e:
                if e.code == "quota_held":  # the rest is held by the previous request until billing applies it
                    time.sleep(0.1)
                    continue
                refused = e
                break
            time.sleep(0.03)
        assert refused is not None, "the quota never ran out"
        assert refused.code == "insufficient_quota"
        assert refused.status_code == 429

        # every served request is billed once (the last may still be in billing's batch), the refused one never
        deadline = time.monotonic() + 10
        while (raw := asyncio.run(_billed(edge.dsn, user.user_id)))["n"] < served:
            assert time.monotonic() < deadline, f"billed {raw['n']} of {served}"
            time.sleep(0.1)
        spent = raw["spent"]
        assert raw["n"] == served
        assert spent == raw["cost"] >= LIMIT
        # one request at a time: each is admitted only while spend plus the holds of unbilled requests is below
        # the limit (uplion.core.quota), so the overshoot is at most the last request's cost
        assert spent - LIMIT <= raw["max_cost"]
        mirrored = redis.Redis.from_url(edge.redis.url).hget(spend_key("user", user.user_id), "credits")
        assert int(mirrored or 0) == spent

        # the usage API's totals equal the raw rows'
        by_model = edge.admin.call("QueryUsage", admin_pb2.QueryUsageRequest(
            user_id=user.user_id, group_by=[admin_pb2.USAGE_GROUP_BY_MODEL, admin_pb2.USAGE_GROUP_BY_DAY]))  # fmt: skip
        assert sum(r.requests for r in by_model.rows) == served
        assert sum(r.prompt_tokens for r in by_model.rows) == raw["p"]
        assert sum(r.completion_tokens for r in by_model.rows) == raw["c"]
        assert sum(r.cost_micro_credits for r in by_model.rows) == raw["cost"]
        assert {r.model for r in by_model.rows} == {model}
        assert asyncio.run(_kinds(edge.dsn, user.user_id)) == {
            usage_pb2.REQUEST_KIND_CHAT_COMPLETION,
            usage_pb2.REQUEST_KIND_RESPONSE,
        }
        me = edge.admin.call("GetUser", admin_pb2.GetUserRequest(user_id=user.user_id))
        assert me.quota.used_micro_credits == spent

        # a top-up lets the key through again
        edge.admin.call("TopUpQuota", admin_pb2.TopUpQuotaRequest(user_id=user.user_id, micro_credits=1000))
        deadline = time.monotonic() + 2
        while True:
            try:
                sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "again"}])
                break
            except openai.RateLimitError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        envoy.stop()
        for svc in (billing, worker, gw):
            svc.stop()
