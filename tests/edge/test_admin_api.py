"""The admin API (gRPC, and REST through Envoy): roles, secrets shown once, audit, login limits."""

from __future__ import annotations

import hashlib
import uuid

import asyncpg
import grpc
import httpx
import pytest

from uplion.accounts.cli import Client
from uplion.v1 import admin_pb2

from .conftest import Edge


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@admin.test"


def _member(edge: Edge, password: str = "correct horse") -> tuple[admin_pb2.User, Client]:
    """A member and an admin-API client logged in as them (session token from Login)."""
    user = edge.admin.call("CreateUser", admin_pb2.CreateUserRequest(email=_email(), password=password))
    target = f"127.0.0.1:{edge.accounts.port}"
    session = Client(target, "").call("Login", admin_pb2.LoginRequest(email=user.email, password=password))
    return user, Client(target, session.session_token)


def _denied(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()  # type: ignore[operator]
    code: grpc.StatusCode = e.value.code()
    return code


def test_members_act_on_themselves_only(edge: Edge) -> None:
    other, _ = _member(edge)
    me, client = _member(edge)
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert _denied(lambda: client.call("ListUsers", admin_pb2.ListUsersRequest())) == denied
    assert _denied(lambda: client.call("ListTokens", admin_pb2.ListTokensRequest(user_id=other.user_id))) == denied
    assert _denied(lambda: client.call("GetUser", admin_pb2.GetUserRequest(user_id=other.user_id))) == denied
    assert _denied(lambda: client.call("CreateUser", admin_pb2.CreateUserRequest(email=_email()))) == denied
    assert (
        _denied(lambda: client.call("TopUpQuota", admin_pb2.TopUpQuotaRequest(user_id=me.user_id, tokens=9))) == denied
    )
    promote = admin_pb2.UpdateUserRequest(user_id=me.user_id, role=admin_pb2.ROLE_ADMIN)
    assert _denied(lambda: client.call("UpdateUser", promote)) == denied
    raise_limit = admin_pb2.UpdateUserRequest(user_id=me.user_id, quota_limit_tokens=10**9)
    assert _denied(lambda: client.call("UpdateUser", raise_limit)) == denied
    assert _denied(lambda: client.call("ListAuditLog", admin_pb2.ListAuditLogRequest())) == denied
    # their own things are theirs to manage
    mine = client.call("CreateToken", admin_pb2.CreateTokenRequest(name="mine"))
    assert mine.token.user_id == me.user_id
    assert [t.token_id for t in client.call("ListTokens", admin_pb2.ListTokensRequest()).tokens] == [
        mine.token.token_id
    ]
    theirs = edge.admin.call("CreateToken", admin_pb2.CreateTokenRequest(user_id=other.user_id, name="theirs"))
    assert _denied(lambda: client.call("GetToken", admin_pb2.GetTokenRequest(token_id=theirs.token.token_id))) == denied
    assert (
        _denied(lambda: client.call("RollToken", admin_pb2.RollTokenRequest(token_id=theirs.token.token_id))) == denied
    )
    assert client.call("GetUser", admin_pb2.GetUserRequest()).user_id == me.user_id
    # no credential, or a revoked one: unauthenticated
    anon = Client(f"127.0.0.1:{edge.accounts.port}", "")
    assert _denied(lambda: anon.call("ListTokens", admin_pb2.ListTokensRequest())) == grpc.StatusCode.UNAUTHENTICATED


async def test_secrets_are_shown_once_and_stored_only_as_hashes(edge: Edge) -> None:
    user = edge.admin.call("CreateUser", admin_pb2.CreateUserRequest(email=_email(), password="s3cret-pass"))
    created = edge.admin.call("CreateToken", admin_pb2.CreateTokenRequest(user_id=user.user_id, name="k"))
    secret = created.secret
    assert secret.startswith("upl-")
    assert created.token.prefix == secret[:12]
    rolled = edge.admin.call("RollToken", admin_pb2.RollTokenRequest(token_id=created.token.token_id))
    listed = edge.admin.call("ListTokens", admin_pb2.ListTokensRequest(user_id=user.user_id))
    got = edge.admin.call("GetToken", admin_pb2.GetTokenRequest(token_id=created.token.token_id))
    audit = edge.admin.call("ListAuditLog", admin_pb2.ListAuditLogRequest(page_size=1000))
    for msg in (listed, got, audit):
        wire = msg.SerializeToString()
        for s in (secret, rolled.secret):
            assert s.encode() not in wire
            assert s[12:].encode() not in wire
    conn = await asyncpg.connect(edge.dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM api_tokens WHERE token_id = $1", created.token.token_id)
        user_row = await conn.fetchrow("SELECT * FROM users WHERE user_id = $1", user.user_id)
        assert row is not None
        assert user_row is not None
        dump = " ".join(str(v) for v in row.values())
        users = " ".join(str(v) for v in user_row.values())
        audit_dump = str(await conn.fetch("SELECT details::text FROM audit_log"))
    finally:
        await conn.close()
    assert bytes(row["secret_hash"]) == hashlib.sha256(rolled.secret.encode()).digest()
    for s in (secret, rolled.secret, secret[12:], rolled.secret[12:]):
        assert s not in dump
        assert s not in audit_dump
    assert "s3cret-pass" not in users
    assert "$argon2id$" in users  # the password is an argon2id hash


def test_every_change_is_audited_with_its_actor(edge: Edge) -> None:
    admin_id = edge.admin.call("GetUser", admin_pb2.GetUserRequest()).user_id
    user, member = _member(edge)
    token = member.call("CreateToken", admin_pb2.CreateTokenRequest(name="audited"))
    edge.admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=token.token.token_id, disabled=True))
    edge.admin.call("SetModelPrice", admin_pb2.SetModelPriceRequest(model="audit-m", prompt_micro_credits_per_1k=5))
    edge.admin.call("DeleteUser", admin_pb2.DeleteUserRequest(user_id=user.user_id))
    entries = edge.admin.call("ListAuditLog", admin_pb2.ListAuditLogRequest(page_size=1000)).entries
    seen = {(e.action, e.target, e.actor_user_id) for e in entries}
    assert ("user.create", user.user_id, admin_id) in seen
    assert ("token.create", token.token.token_id, user.user_id) in seen
    assert ("token.update", token.token.token_id, admin_id) in seen
    assert ("price.set", "audit-m", admin_id) in seen
    assert ("user.delete", user.user_id, admin_id) in seen


def test_top_ups_are_idempotent_by_key(edge: Edge) -> None:
    user = edge.admin.call("CreateUser", admin_pb2.CreateUserRequest(
        email=_email(), quota=admin_pb2.Quota(limit_micro_credits=100)))  # fmt: skip
    top = admin_pb2.TopUpQuotaRequest(user_id=user.user_id, micro_credits=50, idempotency_key="order-42")
    assert edge.admin.call("TopUpQuota", top).limit_micro_credits == 150
    assert edge.admin.call("TopUpQuota", top).limit_micro_credits == 150  # the retry applied nothing
    unlimited = edge.admin.call("CreateUser", admin_pb2.CreateUserRequest(email=_email()))
    no_limit = admin_pb2.TopUpQuotaRequest(user_id=unlimited.user_id, micro_credits=5)
    assert _denied(lambda: edge.admin.call("TopUpQuota", no_limit)) == grpc.StatusCode.FAILED_PRECONDITION


def test_rest_admin_api_through_envoy(edge: Edge) -> None:
    email, password = _email(), "rest-password"
    edge.admin.call("CreateUser", admin_pb2.CreateUserRequest(email=email, password=password,
                                                             role=admin_pb2.ROLE_ADMIN))  # fmt: skip
    r = httpx.post(f"{edge.url}/admin/v1/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    session = r.json()["session_token"]
    users = httpx.get(f"{edge.url}/admin/v1/users", headers={"authorization": f"Bearer {session}"})
    assert users.status_code == 200
    assert email in [u["email"] for u in users.json()["users"]]
    anon = httpx.get(f"{edge.url}/admin/v1/users")
    assert anon.status_code == 401
    assert set(anon.json()["error"]) == {"message", "type", "param", "code"}
    _, member = _member(edge)
    forbidden = httpx.get(
        f"{edge.url}/admin/v1/users", headers={"authorization": f"Bearer {member.metadata[0][1][7:]}"}
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "permission_denied"
    bad = httpx.post(f"{edge.url}/admin/v1/login", json={"email": email, "password": "wrong"})
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_login"


def test_login_attempts_are_rate_limited(edge: Edge) -> None:
    """Per email and client address (tests/security covers other addresses and spraying)."""
    email = _email()
    edge.admin.call("CreateUser", admin_pb2.CreateUserRequest(email=email, password="the-right-one"))
    statuses = [
        httpx.post(f"{edge.url}/admin/v1/login", json={"email": email, "password": f"guess-{i}"}).status_code
        for i in range(12)
    ]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]
    # even the right password is refused from this address until the window passes
    right = httpx.post(f"{edge.url}/admin/v1/login", json={"email": email, "password": "the-right-one"})
    assert right.status_code == 429
