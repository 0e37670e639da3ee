"""The edge's key decisions and the admin API's pure parts, without any I/O."""

from __future__ import annotations

import asyncio

import jwt
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from uplion.accounts import usage
from uplion.accounts.rules import Principal, may_act_on_user
from uplion.accounts.security import SessionClaims, issue_session, read_session
from uplion.authz.cache import TtlCache
from uplion.authz.decision import MISSING, Allow, Deny, Found, decide, precheck
from uplion.authz.service import allow_response, deny_response
from uplion.core.credentials import (
    Spend,
    TokenRecord,
    UserRecord,
    new_secret,
    secret_hash,
    visible_prefix,
    well_formed,
)
from uplion.v1 import admin_pb2

SECRET = new_secret()
HASH = secret_hash(SECRET)
NOW = 1_800_000_000.0


def token(**kw: object) -> TokenRecord:
    base: dict[str, object] = dict(token_id="t", user_id="u", secret_hash=HASH, disabled=False, expires_at=None,
                                   allowed_models=(), limit_credits=None, limit_tokens=None, version=1)  # fmt: skip
    base.update(kw)
    return TokenRecord(**base)  # type: ignore[arg-type]


USER = UserRecord("u", "gold", False, None, None, 1)


def test_secrets_are_well_formed_random_and_shown_by_prefix_only() -> None:
    assert well_formed(SECRET)
    assert new_secret() != SECRET
    assert visible_prefix(SECRET) == SECRET[:12]
    assert not well_formed("upl-" + "x" * 39)
    assert not well_formed("sk-" + "x" * 40)


def test_precheck_refuses_missing_and_malformed_keys_without_lookup() -> None:
    assert precheck(None) == MISSING
    assert precheck("Basic abc") == MISSING
    assert precheck(f"Bearer {SECRET}") == SECRET
    assert precheck(f"bearer   {SECRET}  ") == SECRET
    bad = precheck("Bearer upl-short")
    assert isinstance(bad, Deny)
    assert bad.http_status == 401


@pytest.mark.parametrize(
    ("found", "status", "code"),
    [
        (Found(None), 401, "invalid_api_key"),
        (Found(token(secret_hash=b"x" * 32), USER), 401, "invalid_api_key"),
        (Found(token(), None), 401, "invalid_api_key"),
        (Found(token(disabled=True), USER), 401, "invalid_api_key"),
        (Found(token(expires_at=NOW), USER), 401, "invalid_api_key"),
        (Found(token(), UserRecord("u", "d", True, None, None, 1)), 401, "account_deactivated"),
        (Found(token(), UserRecord("u", "d", False, 10, None, 1), user_spend=Spend(10, 0)), 429, "insufficient_quota"),
        (Found(token(), UserRecord("u", "d", False, None, 0, 1)), 429, "insufficient_quota"),
        (Found(token(limit_credits=5), USER, token_spend=Spend(5, 0)), 429, "insufficient_quota"),
        (Found(token(limit_tokens=7), USER, token_spend=Spend(0, 8)), 429, "insufficient_quota"),
    ],
)
def test_denials(found: Found, status: int, code: str) -> None:
    result = decide(SECRET, HASH, found, NOW)
    assert isinstance(result, Deny)
    assert (result.http_status, result.code) == (status, code)
    assert SECRET not in result.message


def test_allow_carries_identity_and_allow_list() -> None:
    found = Found(token(allowed_models=("a", "b"), expires_at=NOW + 1, limit_credits=5), USER, token_spend=Spend(4, 0))
    assert decide(SECRET, HASH, found, NOW) == Allow("u", "t", "gold", ("a", "b"))
    resp = allow_response(Allow("u", "t", "gold", ()))
    headers = {h.header.key: (h.header.value, h.append_action) for h in resp.ok_response.headers}
    assert headers["x-uplion-user-id"][0] == "u"
    assert headers["x-uplion-allowed-models"][0] == "*"
    assert {action for _, action in headers.values()} == {2}  # OVERWRITE_IF_EXISTS_OR_ADD
    assert list(resp.ok_response.headers_to_remove) == ["authorization"]


def test_deny_response_is_openai_json() -> None:
    resp = deny_response(Deny(429, "no", "insufficient_quota", "insufficient_quota"))
    assert resp.denied_response.status.code == 429
    assert resp.denied_response.body == (
        '{"error": {"message": "no", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}'
    )


def test_records_round_trip_through_redis_fields() -> None:
    t = token(expires_at=NOW, allowed_models=("m1", "m2"), limit_credits=0, limit_tokens=9)
    assert TokenRecord.from_fields(t.fields()) == t
    assert UserRecord.from_fields(USER.fields()) == USER


async def test_cache_single_flight_and_expiry() -> None:
    cache: TtlCache[int] = TtlCache(ttl_s=0.05, max_entries=2)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return calls

    results = await asyncio.gather(*(cache.get(b"k", load) for _ in range(10)))
    assert calls == 1
    assert {v for v, _ in results} == {1}
    await asyncio.sleep(0.06)
    assert (await cache.get(b"k", load)) == (2, False)
    for key in (b"a", b"b", b"c"):
        await cache.get(key, load)
    assert len(cache._entries) <= 2


def test_sessions_are_signed_and_expire() -> None:
    secret = "s" * 40
    tok, _ = issue_session(secret, "u1", "ses_1", 60)
    assert read_session(secret, tok) == SessionClaims("u1", "ses_1")
    assert read_session("t" * 40, tok) is None
    # a session token from before sessions had rows (no `sid`) is no longer accepted
    legacy = jwt.encode({"sub": "u1", "typ": "uplion-session", "exp": int(NOW) + 10**9}, secret, algorithm="HS256")
    assert read_session(secret, legacy) is None
    old, _ = issue_session(secret, "u1", "ses_1", 60, now=NOW - 3600)
    assert read_session(secret, old) is None
    assert may_act_on_user(Principal("u1", admin_pb2.ROLE_MEMBER), "u1")
    assert not may_act_on_user(Principal("u1", admin_pb2.ROLE_MEMBER), "u2")
    assert may_act_on_user(Principal("a", admin_pb2.ROLE_ADMIN), "u2")


def test_usage_query_uses_daily_rows_for_whole_days_and_raw_rows_otherwise() -> None:
    req = admin_pb2.QueryUsageRequest(
        user_id="u", group_by=[admin_pb2.USAGE_GROUP_BY_MODEL, admin_pb2.USAGE_GROUP_BY_DAY]
    )
    req.start.CopyFrom(Timestamp(seconds=86400 * 20000))
    sql, args = usage.build(req)
    assert "FROM usage_daily" in sql
    assert "GROUP BY 1, 2" in sql
    assert args[0] == "u"
    req.end.CopyFrom(Timestamp(seconds=86400 * 20000 + 3600))
    sql, _ = usage.build(req)
    assert "FROM usage_events" in sql
    assert "'; DROP" not in usage.build(admin_pb2.QueryUsageRequest(model="'; DROP TABLE users; --"))[0]


def test_what_redis_holds_answers_alone_only_when_token_and_owner_are_there() -> None:
    from uplion.authz.lookup import found_from_redis, owner_keys

    token = {"v": "3", "token_id": "t_1", "user_id": "u_1", "hash": "00", "disabled": "0", "models": ""}
    user = {"v": "2", "user_id": "u_1", "tier": "default", "disabled": "0"}
    assert found_from_redis({}, {}, {}, {}) is None  # unknown to Redis: PostgreSQL decides
    assert found_from_redis({"v": "4", "gone": "1"}, {}, {}, {}) == Found(None)
    assert found_from_redis(token, {}, {}, {}) is None  # the owner's record is missing
    assert found_from_redis(token, {"v": "5", "gone": "1"}, {}, {}) is None
    # a subject with a quota limit and no spend hash: a restarted Redis, billing has not rebuilt yet
    assert found_from_redis(token, {**user, "lc": "100"}, {}, {}) is None
    assert found_from_redis({**token, "lt": "5"}, user, {"credits": "0"}, {}) is None
    assert found_from_redis({**token, "lt": "5"}, user, {}, {"tokens": "0"}) is not None
    found = found_from_redis(token, user, {"credits": "7", "tokens": "1"}, {})
    assert found is not None
    assert found.token is not None
    assert (found.token.user_id, found.user_spend.credits, found.token_spend.credits) == ("u_1", 7, 0)
    # the owner's keys share the user's hash tag, the token's spend the token's
    keys = ["uplion:authz:user:{u_1}", "uplion:spend:user:{u_1}", "uplion:spend:token:{t_1}"]
    assert owner_keys("u_1", "t_1") == keys
