"""Every Redis user in cluster mode against a real 3-master Redis Cluster: keys and revocation (accounts
→ authz), exact request limits across two limiter replicas with the undo of a partly counted request,
token reservations settled, spend mirrored by billing until the quota runs out, login throttling."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import openai

from uplion.core.credentials import limits_key, secret_hash, spend_key, token_key, user_key
from uplion.v1 import admin_pb2

from ..edge.test_ratelimit_edge import burst, wait_for_fresh_minute
from ..kube_api import eventually
from .conftest import MODEL, ClusterEdge

CHAT: dict[str, object] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def limit_user(edge: ClusterEdge, user_id: str, **limits: int) -> None:
    limits_ = admin_pb2.RateLimits(**limits)
    edge.admin.call("UpdateUser", admin_pb2.UpdateUserRequest(user_id=user_id, rate_limits=limits_))


def test_the_cluster_spreads_one_users_keys_over_one_slot(cluster_edge: ClusterEdge) -> None:
    r = cluster_edge.redis()
    user_id, _, key = cluster_edge.new_key()
    limit_user(cluster_edge, user_id, requests_per_minute=50)
    cluster_edge.sdk(key).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    eventually(lambda: r.exists(user_key(user_id), limits_key("user", user_id)) == 2, timeout=10, interval=0.05)
    keys = (user_key(user_id), spend_key("user", user_id), limits_key("user", user_id))
    slots = {r.keyslot(k) for k in keys}  # type: ignore[no-untyped-call]
    assert len(slots) == 1
    assert r.hget(token_key(secret_hash(key)), "user_id") == user_id
    # the keys of many users land on every master, so every node serves a share
    owners = {r.get_node_from_key(user_key(f"u_{i:016x}")).name for i in range(30)}  # type: ignore[no-untyped-call]
    assert len(owners) == 3
    r.close()


def test_keys_work_and_revocation_reaches_the_edge(cluster_edge: ClusterEdge) -> None:
    _, token_id, key = cluster_edge.new_key()
    sdk = cluster_edge.sdk(key)
    assert sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}]).choices
    cluster_edge.admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=token_id, disabled=True))

    def refused() -> bool:
        try:
            sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        except openai.AuthenticationError:
            return True
        return False

    eventually(refused, timeout=3, interval=0.05)  # authz's cache lives 0.5 s; the tombstone is on the cluster
    assert cluster_edge.authz.metric("uplion_authz_backend_failures_total", backend="redis") == 0
    assert cluster_edge.authz.metric("uplion_authz_lookups_total", source="redis") > 0


def test_a_key_unknown_to_redis_is_refilled_from_postgres(cluster_edge: ClusterEdge) -> None:
    user_id, _, key = cluster_edge.new_key()
    r = cluster_edge.redis()
    r.delete(token_key(secret_hash(key)))
    r.delete(user_key(user_id))
    assert cluster_edge.sdk(key).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    eventually(lambda: r.exists(token_key(secret_hash(key)), user_key(user_id)) == 2, timeout=10, interval=0.05)
    r.close()


async def test_exact_request_limit_across_two_replicas_and_refused_requests_count_nowhere(
    cluster_edge: ClusterEdge,
) -> None:
    user_id, token_id, key = cluster_edge.new_key()
    limit_user(cluster_edge, user_id, requests_per_minute=40)
    await asyncio.sleep(0.3)
    wait_for_fresh_minute()
    results = await burst(cluster_edge.url, key, 200, CHAT)
    statuses = [s for s, _, _ in results]
    assert statuses.count(200) == 40, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(429) == 160
    # the token's counter lives on another slot than the user's: the 160 requests the user's limit refused
    # were counted there first and undone, so it holds the 40 served requests only
    window = int(time.time()) // 60 * 60
    r = cluster_edge.redis()
    token_requests = r.get(f"uplion:rl:uplion:generic_key_requests|token_id_{{{token_id}}}:{window}")
    user_requests = r.get(f"uplion:rl:uplion:generic_key_requests|user_id_{{{user_id}}}:{window}")
    r.close()
    assert (int(token_requests or 0), int(user_requests or 0)) == (40, 40)


async def test_tokens_are_reserved_then_settled(cluster_edge: ClusterEdge) -> None:
    user_id, _, key = cluster_edge.new_key()
    limit_user(cluster_edge, user_id, tokens_per_minute=1500)
    await asyncio.sleep(0.3)
    wait_for_fresh_minute(25)
    body = {**CHAT, "max_tokens": 20, "stream": True, "stream_options": {"include_usage": True}}
    results = await burst(cluster_edge.url, key, 40, body)
    served = [b for s, _, b in results if s == 200]
    assert served
    assert any(s == 429 for s, _, _ in results)  # 40 reservations of ~45 tokens do not fit in 1,500 at once
    used = sum(int(b.decode().split('"total_tokens":')[-1].split("}")[0].strip(' "')) for b in served)
    r = cluster_edge.redis()
    counter = f"uplion:rl:uplion:generic_key_tokens|user_id_{{{user_id}}}:{int(time.time()) // 60 * 60}"
    eventually(lambda: int(r.get(counter) or 0) == used, timeout=10, interval=0.05)
    r.close()
    assert cluster_edge.ratelimit.metric("uplion_ratelimit_reservations_settled_total", result="settled") >= len(served)


def test_billing_mirrors_spend_until_the_quota_runs_out(cluster_edge: ClusterEdge) -> None:
    cluster_edge.admin.set_price(MODEL, 1000, 1000)
    user, created = cluster_edge.admin.create_user_with_token(
        f"{uuid.uuid4().hex[:8]}@cluster.test", quota=admin_pb2.Quota(limit_micro_credits=100)
    )
    sdk = cluster_edge.sdk(created.secret)
    refused = None
    for _ in range(200):
        try:
            sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "one two three"}])
        except openai.RateLimitError as e:
            if e.code == "quota_held":  # the rest is held by the previous request until billing applies it
                time.sleep(0.1)
                continue
            refused = e
            break
        time.sleep(0.03)
    assert refused is not None, "the quota never ran out"
    assert refused.code == "insufficient_quota"
    r = cluster_edge.redis()
    assert int(r.hget(spend_key("user", user.user_id), "credits") or 0) >= 100
    r.close()


def test_login_attempts_are_counted_on_the_cluster(cluster_edge: ClusterEdge) -> None:
    email = f"{uuid.uuid4().hex[:8]}@cluster.test"
    cluster_edge.admin.call("CreateUser", admin_pb2.CreateUserRequest(email=email, password="the-right-one"))
    statuses = [
        httpx.post(f"{cluster_edge.url}/admin/v1/login", json={"email": email, "password": f"guess-{i}"}).status_code
        for i in range(11)
    ]
    assert statuses == [401] * 10 + [429]
    r = cluster_edge.redis()  # counted on the cluster, not in the service's fallback memory
    assert any(key.endswith(":n") for key in r.scan_iter(match="uplion:login:*"))
    r.close()


def test_every_redis_user_documents_cluster_mode() -> None:
    root = Path(__file__).resolve().parents[2]
    for readme in ("authz/README.md", "accounts/README.md", "billing/README.md", "ratelimit/README.md"):
        assert "UPLION_REDIS_CLUSTER" in (root / readme).read_text(), f"{readme} does not document cluster mode"
