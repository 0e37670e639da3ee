"""Issue #13, the account-service escalations, each driven through the real edge over HTTP (where
it was found) and refused: inference keys cannot use the admin API (so cannot mint unrestricted
keys or set the account password), members cannot undo what an admin set on a token, a password
change needs the current password and ends sessions, and login limits cannot be used to lock an
admin out while spraying from one address is stopped. Logins land in the audit log."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from uplion.accounts.cli import Client
from uplion.accounts.cli import main as cli
from uplion.v1 import admin_pb2

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, SecurityEdge


def error(r: Any, status: int) -> dict[str, Any]:
    """The OpenAI-style error of a refused request, after checking its status."""
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- 1: a model-restricted key minted itself an unrestricted key -------------------------------


def test_a_model_restricted_key_cannot_mint_keys_or_use_the_admin_api(security_edge: SecurityEdge) -> None:
    edge = security_edge
    member = edge.member()
    restricted = edge.key(member.user_id, allowed_models=["sec-echo"]).secret
    assert edge.chat(restricted).status_code == 200
    assert error(edge.chat(restricted, "sec-other"), 403)["code"] == "model_not_allowed"
    with edge.http(restricted) as c:
        minted = c.post(f"/admin/v1/users/{member.user_id}/tokens", json={"name": "escape"})
        refused = error(minted, 403)
        assert refused["code"] == "insufficient_scope"
        assert "session" in refused["message"]
        assert "admin-scoped" in refused["message"]
        assert error(c.get(f"/admin/v1/users/{member.user_id}/tokens"), 403)["code"] == "insufficient_scope"
        assert error(c.get(f"/admin/v1/users/{member.user_id}"), 403)["code"] == "insufficient_scope"
    # over gRPC the same, as a status with a clear message
    with pytest.raises(grpc.RpcError) as e:
        Client(f"127.0.0.1:{edge.accounts.port}", restricted).call(
            "CreateToken", admin_pb2.CreateTokenRequest(name="x")
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "admin-scoped" in (e.value.details() or "")
    tokens = edge.admin.call("ListTokens", admin_pb2.ListTokensRequest(user_id=member.user_id)).tokens
    assert [t.name for t in tokens] == ["k"]  # nothing was minted


def test_a_members_session_minted_key_cannot_exceed_the_members_limits(security_edge: SecurityEdge) -> None:
    edge = security_edge
    member = edge.member(quota=admin_pb2.Quota(limit_micro_credits=1000, limit_tokens=100))
    session = edge.login(member.email, "member-password-1")
    path = f"/admin/v1/users/{member.user_id}/tokens"
    with edge.http(session) as c:
        over = error(c.post(path, json={"name": "big", "quota_limit_micro_credits": 10**9}), 403)
        assert over["param"] == "quota_limit_micro_credits"
        assert "1000" in over["message"]
        assert error(c.post(path, json={"name": "big", "quota_limit_tokens": 101}), 403)["param"] == (
            "quota_limit_tokens"
        )
        rates = c.post(path, json={"name": "fast", "rate_limits": {"requests_per_minute": 100000}})
        assert error(rates, 403)["param"] == "rate_limits"
        ok = c.post(path, json={"name": "small", "quota_limit_micro_credits": 500, "allowed_models": ["sec-echo"]})
        assert ok.status_code == 200, ok.text
        assert ok.json()["token"]["quota"]["limit_micro_credits"] == "500"
        assert ok.json()["token"]["scope"] == "TOKEN_SCOPE_INFERENCE"
        key = ok.json()["secret"]
        # an admin-scoped token the member made with their session: for the admin API only, and
        # what they mint with it stays inside its allow-list
        adm = c.post(path, json={"name": "ci", "scope": "TOKEN_SCOPE_ADMIN", "allowed_models": ["sec-echo"]})
        assert adm.status_code == 200, adm.text
        admin_scoped = adm.json()["secret"]
    assert edge.chat(key).status_code == 200
    assert error(edge.chat(admin_scoped), 401)["code"] == "invalid_api_key"  # not an inference key
    with edge.http(admin_scoped) as c:
        wider = c.post(path, json={"name": "wider", "allowed_models": ["sec-other"]})
        assert error(wider, 403)["param"] == "allowed_models"
        again = c.post(path, json={"name": "another-admin-token", "scope": "TOKEN_SCOPE_ADMIN"})
        assert error(again, 403)["param"] == "scope"
        inherited = c.post(path, json={"name": "child"})
        assert inherited.status_code == 200, inherited.text
        assert inherited.json()["token"]["allowed_models"] == ["sec-echo"]
        child = inherited.json()["secret"]
    assert edge.chat(child).status_code == 200
    assert error(edge.chat(child, "sec-other"), 403)["code"] == "model_not_allowed"


# --- 2: a member re-enabled (and widened) a token an admin disabled ------------------------------


def test_a_member_cannot_undo_what_an_admin_set_on_a_token(security_edge: SecurityEdge) -> None:
    edge = security_edge
    member = edge.member()
    soon = datetime.now(UTC) + timedelta(days=1)
    created = edge.key(member.user_id, allowed_models=["sec-echo"], quota_limit_micro_credits=100,
                       expires_at=_ts(soon))  # fmt: skip
    token_id, secret = created.token.token_id, created.secret
    edge.admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=token_id, disabled=True))
    session = edge.login(member.email, "member-password-1")
    far = _iso(datetime.now(UTC) + timedelta(days=3650))
    with edge.http(session) as c:
        # the reported request: re-enable and lift the allow-list, quota limit and expiry at once
        everything = {"disabled": False, "set_allowed_models": True, "allowed_models": [],
                      "quota_limit_micro_credits": -1, "expires_at": far}  # fmt: skip
        assert error(c.patch(f"/admin/v1/tokens/{token_id}", json=everything), 403)["param"] == "disabled"
        assert c.get(f"/admin/v1/tokens/{token_id}").json()["disabled_by_admin"] is True
        for change, param in [
            ({"disabled": False}, "disabled"),
            ({"set_allowed_models": True, "allowed_models": []}, "allowed_models"),
            ({"set_allowed_models": True, "allowed_models": ["sec-echo", "sec-other"]}, "allowed_models"),
            ({"quota_limit_micro_credits": -1}, "quota_limit_micro_credits"),  # -1: unlimited
            ({"quota_limit_micro_credits": 10**9}, "quota_limit_micro_credits"),
            ({"expires_at": far}, "expires_at"),
            ({"rate_limits": {"requests_per_minute": 5}}, "rate_limits"),
        ]:
            assert error(c.patch(f"/admin/v1/tokens/{token_id}", json=change), 403)["param"] == param, change
        # disabling it again changes nothing: it stays the admin's disable
        assert c.patch(f"/admin/v1/tokens/{token_id}", json={"disabled": True}).json()["disabled_by_admin"] is True
        assert error(c.patch(f"/admin/v1/tokens/{token_id}", json={"disabled": False}), 403)["param"] == "disabled"
        unchanged = c.get(f"/admin/v1/tokens/{token_id}").json()
    assert unchanged["disabled"] is True
    assert unchanged["allowed_models"] == ["sec-echo"]
    assert unchanged["quota"]["limit_micro_credits"] == "100"
    assert unchanged["expires_at"] == _iso(soon)
    assert error(edge.chat(secret), 401)["code"] == "invalid_api_key"
    # only an admin enables it again (each authz replica caches a key for up to 0.5 s)
    edge.admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=token_id, disabled=False))
    deadline = time.monotonic() + 3
    while edge.chat(secret).status_code != 200:
        assert time.monotonic() < deadline, "the re-enabled key was not accepted within 3 s"
        time.sleep(0.1)


def test_a_member_disables_and_reenables_their_own_token_and_may_tighten_it(security_edge: SecurityEdge) -> None:
    edge = security_edge
    member = edge.member()
    session = edge.login(member.email, "member-password-1")
    with edge.http(session) as c:
        mine = c.post(f"/admin/v1/users/{member.user_id}/tokens", json={"name": "mine"}).json()
        path = f"/admin/v1/tokens/{mine['token']['token_id']}"
        off = c.patch(path, json={"disabled": True})
        assert off.status_code == 200, off.text
        assert off.json()["disabled_by_admin"] is False
        on = c.patch(path, json={"disabled": False})
        assert on.status_code == 200, on.text
        tighter = c.patch(path, json={"name": "renamed", "set_allowed_models": True, "allowed_models": ["sec-echo"],
                                      "quota_limit_micro_credits": 50})  # fmt: skip
        assert tighter.status_code == 200, tighter.text
        assert tighter.json()["allowed_models"] == ["sec-echo"]
        # once narrowed, it cannot be widened again by the member
        widen = c.patch(path, json={"set_allowed_models": True, "allowed_models": []})
        assert error(widen, 403)["param"] == "allowed_models"
        # an admin's disable of the member's own token is the admin's
        token_id = mine["token"]["token_id"]
        edge.admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=token_id, disabled=True))
        assert error(c.patch(path, json={"disabled": False}), 403)["param"] == "disabled"
        # bad input gets a clear error
        bad = c.patch(path, json={"name": ""})
        assert error(bad, 400)["param"] == "name"


# --- 3: an API key set the account password and became the account --------------------------------


def test_password_change_needs_the_current_password_and_ends_sessions(security_edge: SecurityEdge) -> None:
    edge = security_edge
    old, new = "first-password-1", "second-password-2"
    member = edge.member(password=old)
    key = edge.key(member.user_id).secret
    with edge.http(key) as c:
        takeover = c.patch(f"/admin/v1/users/{member.user_id}", json={"password": "attacker-password"})
        assert error(takeover, 403)["code"] == "insufficient_scope"
    with edge.http() as c:
        assert error(c.post("/admin/v1/login", json={"email": member.email, "password": "attacker-password"}), 401)
    first, second = edge.login(member.email, old), edge.login(member.email, old)
    with edge.http(first) as c:
        path = f"/admin/v1/users/{member.user_id}"
        assert error(c.patch(path, json={"password": new}), 403)["code"] == "current_password_required"
        wrong = c.patch(path, json={"password": new, "current_password": "not-it-at-all"})
        assert error(wrong, 403)["code"] == "invalid_current_password"
        assert error(c.patch(path, json={"current_password": old}), 400)["param"] == "current_password"
        assert error(c.patch(path, json={"password": "short", "current_password": old}), 400)["param"] == "password"
        changed = c.patch(path, json={"password": new, "current_password": old})
        assert changed.status_code == 200, changed.text
    for ended in (first, second):  # every session of the user ends with the password change
        with edge.http(ended) as c:
            assert error(c.get(f"/admin/v1/users/{member.user_id}"), 401)["code"] == "invalid_api_key"
    with edge.http() as c:
        assert error(c.post("/admin/v1/login", json={"email": member.email, "password": old}), 401)
    third = edge.login(member.email, new)
    with edge.http(third) as c:
        assert c.get(f"/admin/v1/users/{member.user_id}").status_code == 200
        assert c.post("/admin/v1/logout", json={}).status_code == 200
        assert error(c.get(f"/admin/v1/users/{member.user_id}"), 401)["code"] == "invalid_api_key"
    # logout everywhere; an admin-scoped token is no session to log out of
    fourth, fifth = edge.login(member.email, new), edge.login(member.email, new)
    with edge.http(fourth) as c:
        assert c.post("/admin/v1/logout", json={"everywhere": True}).status_code == 200
    with edge.http(fifth) as c:
        assert error(c.get(f"/admin/v1/users/{member.user_id}"), 401)
    with edge.http(edge.admin_token) as c:
        assert error(c.post("/admin/v1/logout", json={}), 400)["code"] == "not_a_session"
        # an admin resets another user's password without theirs
        reset = c.patch(f"/admin/v1/users/{member.user_id}", json={"password": "reset-by-admin-3"})
        assert reset.status_code == 200, reset.text
    edge.login(member.email, "reset-by-admin-3")
    audit = edge.admin.call("ListAuditLog", admin_pb2.ListAuditLogRequest(page_size=1000)).entries
    text = " ".join(e.details_json for e in audit)
    for pw in (old, new, "attacker-password", "not-it-at-all", "reset-by-admin-3"):
        assert pw not in text
    assert {(e.action, e.target) for e in audit} >= {("user.logout", member.user_id), ("user.update", member.user_id)}


# --- 6: login limited per email only --------------------------------------------------------------


def test_login_limits_stop_spraying_and_cannot_lock_out_the_admin(security_edge: SecurityEdge) -> None:
    edge = security_edge
    attacker, admin_desk, sprayer = "127.0.0.66", "127.0.0.77", "127.0.0.88"
    with edge.http(address=attacker) as c:
        guesses = [c.post("/admin/v1/login", json={"email": ADMIN_EMAIL, "password": f"guess-{i}"}) for i in range(11)]
    assert [r.status_code for r in guesses] == [401] * 10 + [429]
    assert error(guesses[-1], 429)["code"] == "rate_limit_exceeded"
    # the real admin, from their own address, is not locked out
    session = edge.login(ADMIN_EMAIL, ADMIN_PASSWORD, address=admin_desk)
    with edge.http(session) as c:
        assert c.get("/admin/v1/users").status_code == 200
    # one address trying many emails is stopped after the per-address limit (30 a minute)...
    with edge.http(address=sprayer) as c:
        sprayed = [
            c.post("/admin/v1/login", json={"email": f"user{i}@security.test", "password": "Winter2026!"}).status_code
            for i in range(31)
        ]
        assert sprayed == [401] * 30 + [429]
        # ... whatever it writes into the forwarding headers (the edge sets them) ...
        spoof = {"x-forwarded-for": "198.51.100.1", "x-envoy-external-address": "198.51.100.1"}
        forged = c.post("/admin/v1/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, headers=spoof)
        assert error(forged, 429)["code"] == "rate_limit_exceeded"
    # ... while the admin still gets in from elsewhere
    edge.login(ADMIN_EMAIL, ADMIN_PASSWORD, address=admin_desk)

    # logins, good and bad, are in the audit log with the address the edge saw, never a password
    entries = edge.admin.call("ListAuditLog", admin_pb2.ListAuditLogRequest(page_size=1000)).entries
    seen = [(e.action, e.target, json.loads(e.details_json)) for e in entries]
    assert ("user.login", edge.admin_id, {"client_address": admin_desk}) in seen
    failed = [d for a, t, d in seen if a == "user.login_failed" and t == edge.admin_id]
    assert failed.count({"client_address": attacker, "reason": "wrong_password"}) == 10
    assert ("user.login_failed", "user0@security.test", {"client_address": sprayer, "reason": "unknown_email"}) in seen
    throttled = [(t, d) for a, t, d in seen if a == "user.login_throttled"]
    assert (ADMIN_EMAIL, {"client_address": attacker, "limit": "email_address"}) in throttled
    assert ("user30@security.test", {"client_address": sprayer, "limit": "address"}) in throttled
    assert len([t for t, d in throttled if d["client_address"] == sprayer]) == 1  # once per window, not per try
    dump = json.dumps([e.details_json for e in entries])
    assert ADMIN_PASSWORD not in dump
    assert "Winter2026!" not in dump
    assert "guess-" not in dump


# --- the CLI flow of the README keeps working with the admin token ---------------------------------


def test_cli_with_the_admin_token_and_with_an_inference_key(
    security_edge: SecurityEdge, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    edge = security_edge
    # the admin token (bootstrap-admin's, the run command's) is for the admin API only
    assert error(edge.chat(edge.admin_token), 401)["code"] == "invalid_api_key"
    monkeypatch.setenv("UPLION_ACCOUNTS", f"127.0.0.1:{edge.accounts.port}")
    monkeypatch.setenv("UPLION_ADMIN_TOKEN", edge.admin_token)
    assert cli(["--json", "users", "create", "carol@security.test", "--token", "laptop"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["token"]["scope"] == "TOKEN_SCOPE_INFERENCE"
    assert edge.chat(created["secret"]).status_code == 200
    # that key is for inference: as the CLI's credential it is refused, saying what is accepted
    monkeypatch.setenv("UPLION_ADMIN_TOKEN", created["secret"])
    assert cli(["users", "create", "mallory@security.test", "--token", "x"]) == 1
    refused = json.loads(capsys.readouterr().err)["error"]
    assert refused["code"] == "insufficient_scope"
    assert "session" in refused["message"]


def _ts(dt: datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.FromDatetime(dt.replace(microsecond=0))
    return ts
