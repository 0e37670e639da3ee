"""Issue #13, item 5: `x-uplion-*` request headers are uplion's own (identity, token estimate, client
address). The edge removes every one a client sends, on every route and first in the chain, so the
rate limiter's descriptors and the services behind the edge only ever see what the edge and authz
set; headers are bounded in size (431 in OpenAI's shape), and no header value, however large, makes
a Redis key name. Asserted on what arrives: the rate limiter's counters and Redis keys, and a
recording gRPC server behind the same edge configuration (`echo_edge`)."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import httpx
import pytest
import redis
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from .conftest import MSG, EchoEdge, SecurityEdge

# every x-uplion-* header the edge or authz sets, what a client may send, and names nobody uses yet
SET_BY_THE_EDGE = {"x-uplion-client-address", "x-uplion-token-estimate"}
SET_BY_AUTHZ = {"x-uplion-user-id", "x-uplion-token-id", "x-uplion-tier", "x-uplion-allowed-models"}
CLIENT_HEADERS = {"x-uplion-timeout"}
FORGED_ESTIMATE = "987654321"
# the edge's documented bounds (uplion.edge.filters): all request headers, and any one header
MAX_REQUEST_HEADERS_KB = 32
MAX_HEADER_BYTES = 8 * 1024


def forged(tag: str) -> dict[str, str]:
    return {
        "x-uplion-user-id": f"forged-user-{tag}",
        "x-uplion-token-id": f"forged-token-{tag}",
        "x-uplion-tier": "enterprise",
        "x-uplion-allowed-models": "*",
        "x-uplion-token-estimate": FORGED_ESTIMATE,
        "x-uplion-client-address": "203.0.113.7",
        "x-uplion-not-invented-yet": tag,  # a header uplion may add one day is not forgeable either
        "X-Uplion-Mixed-Case": tag,
        "x-uplion-timeout": "30",  # the one a client may send: it can only shorten the deadline
    }


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


def redis_keys(edge: SecurityEdge) -> list[str]:
    client = redis.Redis.from_url(edge.redis_url)
    try:
        return [k.decode(errors="replace") for k in client.scan_iter(count=1000)]
    finally:
        client.close()


def rate_limiter_hits(edge: SecurityEdge) -> float:
    assert edge.ratelimit is not None
    return edge.ratelimit.metric("uplion_ratelimit_hits_total")


def test_forged_headers_on_admin_routes_reach_neither_the_rate_limiter_nor_the_service(
    security_edge: SecurityEdge, echo_edge: EchoEdge
) -> None:
    edge, tag = security_edge, uuid.uuid4().hex
    before = rate_limiter_hits(edge)
    login = {"email": f"nobody-{tag}@security.test", "password": "not-the-password"}
    with edge.http(edge.admin_token) as c:
        assert c.get("/admin/v1/users", headers=forged(tag)).status_code == 200
    with edge.http() as c:
        assert error(c.post("/admin/v1/login", json=login, headers=forged(tag)), 401)
    # ext_authz is off on these routes, so no identity descriptor: nothing was counted
    assert rate_limiter_hits(edge) == before
    assert [k for k in redis_keys(edge) if tag in k] == []

    with echo_edge.http(edge.admin_token) as c:
        assert c.get("/admin/v1/users", headers=forged(tag)).status_code == 200
        assert c.post("/admin/v1/login", json=login, headers=forged(tag)).status_code == 200
    for method in ("/uplion.v1.AdminService/ListUsers", "/uplion.v1.AdminService/Login"):
        seen = echo_edge.recorder.last(method).uplion_headers()
        assert set(seen) == SET_BY_THE_EDGE | CLIENT_HEADERS, seen
        assert seen["x-uplion-client-address"] == "127.0.0.1"
        assert seen["x-uplion-token-estimate"] != FORGED_ESTIMATE
        assert seen["x-uplion-timeout"] == "30"


def test_forged_headers_on_inference_routes_are_replaced_or_removed(
    security_edge: SecurityEdge, echo_edge: EchoEdge
) -> None:
    edge, tag = security_edge, uuid.uuid4().hex
    member = edge.member()
    key = edge.key(member.user_id)
    chat = {"model": "sec-echo", "messages": MSG}
    with edge.http(key.secret) as c:
        r = c.post("/v1/chat/completions", json=chat, headers=forged(tag))
        assert r.status_code == 200, r.text
    with edge.http() as c:  # no key: refused before the rate limiter, nothing counted
        assert error(c.post("/v1/chat/completions", json=chat, headers=forged(tag)), 401)["code"] == "missing_api_key"
    keys = redis_keys(edge)
    assert [k for k in keys if tag in k] == []
    assert any(f"user_id_{{{member.user_id}}}:" in k for k in keys), "the real caller was counted"
    assert any(f"token_id_{{{key.token.token_id}}}:" in k for k in keys)

    # what the gateway receives, over REST and native gRPC
    with echo_edge.http(key.secret) as c:
        assert c.post("/v1/chat/completions", json=chat, headers=forged(tag)).status_code == 200
    rest = echo_edge.recorder.last("/uplion.v1.InferenceService/HttpChatCompletions").uplion_headers()
    host = echo_edge.url.removeprefix("http://")
    with grpc.insecure_channel(host) as channel:
        list_models = channel.unary_unary("/uplion.v1.InferenceService/ListModels", None, None)
        metadata = (*((k.lower(), v) for k, v in forged(tag).items()), ("authorization", f"Bearer {key.secret}"))
        list_models(b"", metadata=metadata, timeout=10)
    native = echo_edge.recorder.last("/uplion.v1.InferenceService/ListModels").uplion_headers()
    for seen in (rest, native):
        assert set(seen) == SET_BY_THE_EDGE | SET_BY_AUTHZ | CLIENT_HEADERS, seen
        assert seen["x-uplion-user-id"] == member.user_id
        assert seen["x-uplion-token-id"] == key.token.token_id
        assert seen["x-uplion-tier"] == "default"
        assert seen["x-uplion-allowed-models"] == "*"
        assert seen["x-uplion-client-address"] == "127.0.0.1"
        assert seen["x-uplion-token-estimate"] != FORGED_ESTIMATE
        assert seen["x-uplion-timeout"] == "30"


def test_oversized_headers_are_431_in_openai_shape_and_make_no_redis_key(security_edge: SecurityEdge) -> None:
    edge, tag = security_edge, uuid.uuid4().hex
    chat = {"model": "sec-echo", "messages": MSG}
    login = {"email": f"nobody-{tag}@security.test", "password": "not-the-password"}
    over_all = MAX_REQUEST_HEADERS_KB * 1024 + 1000  # all headers: Envoy's codec refuses them
    over_one = MAX_HEADER_BYTES + 1000  # within the total, one header too large: the Lua filter
    cases = [
        ("/admin/v1/login", login, {"x-uplion-user-id": tag + "x" * over_all}),
        ("/admin/v1/login", login, {"x-uplion-user-id": tag + "x" * over_one}),
        ("/v1/chat/completions", chat, {"x-uplion-token-id": tag + "x" * over_one}),
        ("/v1/chat/completions", chat, {"authorization": "Bearer upl-" + tag + "x" * over_one}),
        ("/v1/chat/completions", chat, {"x-anything": tag + "x" * over_one}),
    ]
    for path, body, headers in cases:
        with edge.http() as c:
            r = c.post(path, json=body, headers=headers)
        refused = error(r, 431)
        assert refused["code"] == "request_headers_too_large"
        assert refused["type"] == "invalid_request_error"
        assert f"{MAX_REQUEST_HEADERS_KB} KiB" in refused["message"]
        assert r.headers["x-should-retry"] == "false"
        assert r.headers["content-type"] == "application/json"
    # within the bounds, a forged header is simply removed
    with edge.http() as c:
        assert error(c.post("/admin/v1/login", json=login, headers={"x-uplion-user-id": tag + "x" * 7000}), 401)
    # native gRPC clients get a gRPC status saying the same
    with grpc.insecure_channel(edge.url.removeprefix("http://")) as channel:
        login_rpc = channel.unary_unary("/uplion.v1.AdminService/Login", None, None)
        with pytest.raises(grpc.RpcError) as refused_rpc:
            login_rpc(b"", metadata=(("x-uplion-user-id", tag + "x" * over_one),), timeout=10)
    assert refused_rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request headers are too large" in (refused_rpc.value.details() or "")
    keys = redis_keys(edge)
    assert [k for k in keys if tag in k] == []
    assert max(len(k) for k in keys) < 256


def test_the_rate_limiter_hashes_long_descriptor_values_out_of_redis_key_names(security_edge: SecurityEdge) -> None:
    """Behind the edge no client value reaches a descriptor; the service bounds key names anyway."""
    edge, tag = security_edge, uuid.uuid4().hex
    assert edge.ratelimit is not None
    huge = f"{tag}-" + "v" * 40_000

    def entries(*kv: str) -> ratelimit_pb2.RateLimitDescriptor:
        pairs = zip(kv[0::2], kv[1::2], strict=True)
        return ratelimit_pb2.RateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in pairs]
        )

    request = rls_pb2.RateLimitRequest(
        domain="uplion",
        descriptors=[
            entries("generic_key", "requests", "user_id", huge),
            entries("generic_key", "tokens", "token_id", huge),
            entries("uplion_request_id", huge),
        ],
    )
    with grpc.insecure_channel(f"127.0.0.1:{edge.ratelimit.port}") as channel:
        reply = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=10)
    assert reply.overall_code == rls_pb2.RateLimitResponse.OK
    keys = redis_keys(edge)
    assert [k for k in keys if tag in k] == []
    counted = [k for k in keys if "sha256:" in k]
    assert len(counted) >= 2
    assert max(len(k) for k in counted) < 256
