"""The admin API's permission rules and the login limiter's decisions, tested directly (no I/O)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from uplion.accounts.logins import (
    DEFAULT_TRUSTED_PROXIES,
    LoginLimiter,
    Throttle,
    address_key,
    client_address,
    parse_networks,
    peer_ip,
    throttled,
)
from uplion.accounts.rules import (
    DISABLED_BY_ADMIN,
    DISABLED_BY_OWNER,
    SCOPE_ADMIN,
    SCOPE_INFERENCE,
    Limits,
    Principal,
    Refused,
    TokenState,
    Via,
    disabled_by_after,
    may_roll_token,
    may_update_token,
    mint_limits,
    password_change_refusal,
    scope_refusal,
    within,
)
from uplion.v1 import admin_pb2

ADMIN = Principal("a", admin_pb2.ROLE_ADMIN)
MEMBER = Principal("m", admin_pb2.ROLE_MEMBER)
SOON = datetime(2031, 1, 1, tzinfo=UTC)
LATER = SOON + timedelta(days=30)
TRUSTED = parse_networks(DEFAULT_TRUSTED_PROXIES)


def member_with(token: Limits | None = None, user: Limits | None = None) -> Principal:
    via = Via.ADMIN_TOKEN if token is not None else Via.SESSION
    return Principal("m", admin_pb2.ROLE_MEMBER, via, token_id="tok_k" if token else "",
                     user_limits=user or Limits(), token_limits=token)  # fmt: skip


def refusal_param(call: object) -> str | None:
    with pytest.raises(Refused) as e:
        call()  # type: ignore[operator]
    return e.value.refusal.param


class TestScopes:
    def test_only_admin_scoped_tokens_reach_the_admin_api(self) -> None:
        assert scope_refusal(SCOPE_ADMIN) is None
        refusal = scope_refusal(SCOPE_INFERENCE)
        assert refusal is not None
        assert refusal.code == "insufficient_scope"
        assert "session" in refusal.message
        assert "admin-scoped" in refusal.message


class TestMinting:
    def test_admins_get_what_they_ask_for(self) -> None:
        asked = Limits(("x",), 10**12, None, LATER, {"requests_per_minute": 5})
        assert mint_limits(ADMIN, "someone", SCOPE_ADMIN, asked, sets_rate_limits=True) == asked

    def test_members_mint_only_for_themselves_and_never_rate_limits(self) -> None:
        assert refusal_param(lambda: mint_limits(MEMBER, "other", SCOPE_INFERENCE, Limits(), False)) == "user_id"
        assert refusal_param(lambda: mint_limits(MEMBER, "m", SCOPE_INFERENCE, Limits(), True)) == "rate_limits"

    def test_a_session_minted_key_stays_within_the_members_quota(self) -> None:
        me = member_with(user=Limits(limit_credits=1000, limit_tokens=50))
        too_much = Limits(limit_credits=1001)
        assert refusal_param(lambda: mint_limits(me, "m", SCOPE_INFERENCE, too_much, False)) == (
            "quota_limit_micro_credits"
        )
        assert refusal_param(lambda: mint_limits(me, "m", SCOPE_INFERENCE, Limits(limit_tokens=51), False)) == (
            "quota_limit_tokens"
        )
        ok = mint_limits(me, "m", SCOPE_INFERENCE, Limits(("echo",), 1000, 10), False)
        assert ok == Limits(("echo",), 1000, 10)
        # unset stays unset: the user's own limit applies at the edge anyway, and follows its top-ups
        assert mint_limits(me, "m", SCOPE_INFERENCE, Limits(), False) == Limits()

    def test_a_key_minted_with_a_restricted_token_inherits_and_cannot_exceed_it(self) -> None:
        bound = Limits(("echo",), 500, None, SOON, {"requests_per_minute": 7})
        me = member_with(token=bound, user=Limits(limit_credits=1000))
        inherited = mint_limits(me, "m", SCOPE_INFERENCE, Limits(), False)
        assert inherited == Limits(("echo",), 500, None, SOON, {"requests_per_minute": 7})
        wider_models = Limits(("echo", "gpt"))
        assert refusal_param(lambda: mint_limits(me, "m", SCOPE_INFERENCE, wider_models, False)) == "allowed_models"
        more_credits = Limits(limit_credits=501)
        assert refusal_param(lambda: mint_limits(me, "m", SCOPE_INFERENCE, more_credits, False)) == (
            "quota_limit_micro_credits"
        )
        later = Limits(expires_at=LATER)
        assert refusal_param(lambda: mint_limits(me, "m", SCOPE_INFERENCE, later, False)) == "expires_at"
        narrower = mint_limits(me, "m", SCOPE_INFERENCE, Limits(("echo",), 100, 5, SOON - timedelta(1)), False)
        assert narrower.limit_credits == 100
        assert narrower.rate_limits == {"requests_per_minute": 7}

    def test_members_create_admin_scoped_tokens_with_a_session_only(self) -> None:
        assert mint_limits(member_with(), "m", SCOPE_ADMIN, Limits(), False) == Limits()
        with_token = member_with(token=Limits())
        assert refusal_param(lambda: mint_limits(with_token, "m", SCOPE_ADMIN, Limits(), False)) == "scope"


class TestUpdatingTokens:
    restricted = TokenState("m", limits=Limits(("echo",), 100, 10, SOON, {"requests_per_minute": 5}))

    def test_admins_may_change_anything(self) -> None:
        lift = {"disabled": False, "allowed_models": [], "quota_limit_micro_credits": None, "expires_at": None,
                "rate_limits": "{}"}  # fmt: skip
        assert may_update_token(ADMIN, TokenState("m", disabled=True, disabled_by=DISABLED_BY_ADMIN), lift) is None

    def test_members_cannot_reenable_an_admin_disabled_token(self) -> None:
        by_admin = TokenState("m", disabled=True, disabled_by=DISABLED_BY_ADMIN)
        refusal = may_update_token(MEMBER, by_admin, {"disabled": False})
        assert refusal is not None
        assert refusal.param == "disabled"
        # disabling it again is harmless and does not turn the admin's disable into theirs
        assert may_update_token(MEMBER, by_admin, {"disabled": True}) is None
        assert disabled_by_after(MEMBER, by_admin, True) == DISABLED_BY_ADMIN
        # tokens disabled before disabled_by existed count as the admin's
        legacy = TokenState("m", disabled=True, disabled_by=None)
        assert may_update_token(MEMBER, legacy, {"disabled": False}) is not None

    def test_members_reenable_what_they_disabled(self) -> None:
        assert disabled_by_after(MEMBER, TokenState("m"), True) == DISABLED_BY_OWNER
        mine = TokenState("m", disabled=True, disabled_by=DISABLED_BY_OWNER)
        assert may_update_token(MEMBER, mine, {"disabled": False}) is None
        assert disabled_by_after(MEMBER, mine, False) is None
        assert disabled_by_after(ADMIN, mine, True) == DISABLED_BY_ADMIN

    @pytest.mark.parametrize(
        ("change", "param"),
        [
            ({"allowed_models": []}, "allowed_models"),  # empty: every model
            ({"allowed_models": ["echo", "gpt"]}, "allowed_models"),
            ({"quota_limit_micro_credits": None}, "quota_limit_micro_credits"),  # unlimited
            ({"quota_limit_micro_credits": 101}, "quota_limit_micro_credits"),
            ({"quota_limit_tokens": 11}, "quota_limit_tokens"),
            ({"expires_at": None}, "expires_at"),  # never
            ({"expires_at": LATER}, "expires_at"),
            ({"rate_limits": "{}"}, "rate_limits"),
        ],
    )
    def test_members_cannot_lift_restrictions(self, change: dict[str, object], param: str) -> None:
        refusal = may_update_token(MEMBER, self.restricted, change)
        assert refusal is not None
        assert refusal.param == param

    def test_members_may_tighten_and_rename(self) -> None:
        tighter = {"name": "n", "allowed_models": ["echo"], "quota_limit_micro_credits": 50,
                   "quota_limit_tokens": 0, "expires_at": SOON - timedelta(days=1), "disabled": True}  # fmt: skip
        assert may_update_token(MEMBER, self.restricted, tighter) is None
        unrestricted = TokenState("m")
        assert may_update_token(MEMBER, unrestricted, {"allowed_models": ["x"], "expires_at": SOON}) is None

    def test_members_touch_only_their_own_tokens(self) -> None:
        assert may_update_token(MEMBER, TokenState("other"), {"name": "x"}) is not None

    def test_rolling_with_a_restricted_token_cannot_hand_out_a_wider_key(self) -> None:
        k = member_with(token=Limits(("echo",)))
        wide = TokenState("m")
        narrow = TokenState("m", limits=Limits(("echo",)))
        assert may_roll_token(k, "tok_wide", wide) is not None
        assert may_roll_token(k, "tok_narrow", narrow) is None
        assert may_roll_token(k, "tok_k", wide) is None  # itself
        assert may_roll_token(k, "tok_adm", TokenState("m", SCOPE_ADMIN, limits=Limits(("echo",)))) is not None
        assert may_roll_token(member_with(), "tok_wide", wide) is None  # with a session
        assert may_roll_token(MEMBER, "tok_x", TokenState("other")) is not None
        assert within(Limits(rate_limits={"tokens_per_minute": 10}), Limits(rate_limits={"tokens_per_minute": 9}))
        assert not within(Limits(rate_limits={"tokens_per_minute": 10}), Limits())


class TestPasswords:
    def test_own_password_needs_the_current_one(self) -> None:
        missing = password_change_refusal(MEMBER, "m", True, current_given=False, current_ok=False)
        assert missing is not None
        assert missing.param == "current_password"
        wrong = password_change_refusal(MEMBER, "m", True, current_given=True, current_ok=False)
        assert wrong is not None
        assert wrong.code == "invalid_current_password"
        assert password_change_refusal(MEMBER, "m", True, current_given=True, current_ok=True) is None
        # admins too, for their own
        assert password_change_refusal(ADMIN, "a", True, current_given=False, current_ok=False) is not None

    def test_admins_reset_others_and_set_their_own_first_password(self) -> None:
        assert password_change_refusal(ADMIN, "m", True, current_given=False, current_ok=False) is None
        assert password_change_refusal(ADMIN, "a", False, current_given=False, current_ok=False) is None
        assert password_change_refusal(MEMBER, "m", False, current_given=False, current_ok=False) is not None
        assert password_change_refusal(MEMBER, "x", True, current_given=True, current_ok=True) is not None


class TestClientAddress:
    def test_peer_strings(self) -> None:
        assert peer_ip("ipv4:10.1.2.3:5000") == ipaddress.ip_address("10.1.2.3")
        assert peer_ip("ipv6:[::1]:5000") == ipaddress.ip_address("::1")
        assert peer_ip("ipv6:%5B2001:db8::7%5D:5000") == ipaddress.ip_address("2001:db8::7")
        assert peer_ip("unix:/tmp/s") is None

    def test_a_trusted_edge_says_who_the_client_is(self) -> None:
        headers = {"x-envoy-external-address": "203.0.113.9", "x-forwarded-for": "6.6.6.6, 203.0.113.9"}
        assert client_address("ipv4:127.0.0.1:1", headers, TRUSTED) == "203.0.113.9"
        # without Envoy's own header, the x-forwarded-for entry the edge appended (the last one)
        forwarded = {"x-forwarded-for": "6.6.6.6,203.0.113.9"}
        assert client_address("ipv4:10.0.0.5:1", forwarded, TRUSTED) == "203.0.113.9"
        assert client_address("ipv4:127.0.0.1:1", {}, TRUSTED) == "127.0.0.1"

    def test_anyone_else_is_their_own_peer_whatever_they_write(self) -> None:
        forged = {"x-envoy-external-address": "1.1.1.1", "x-forwarded-for": "1.1.1.1"}
        assert client_address("ipv4:203.0.113.50:1", forged, TRUSTED) == "203.0.113.50"
        assert client_address("ipv4:127.0.0.1:1", {"x-forwarded-for": "garbage"}, TRUSTED) == "127.0.0.1"
        assert client_address("unix:/x", forged, TRUSTED) == "local"

    def test_ipv6_clients_are_counted_per_64(self) -> None:
        assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
        assert address_key("192.0.2.1") == "192.0.2.1"
        assert address_key("::ffff:192.0.2.1") == "192.0.2.1"

    def test_bad_trusted_proxy_setting_is_named(self) -> None:
        with pytest.raises(ValueError, match="nope"):
            parse_networks("10.0.0.0/8,nope")


class TestLoginThrottle:
    def test_per_pair_then_per_address(self) -> None:
        assert throttled(10, 30, 10, 30) is None
        assert throttled(11, 11, 10, 30) == Throttle("email_address", first=True)
        assert throttled(12, 12, 10, 30) == Throttle("email_address", first=False)
        assert throttled(1, 31, 10, 30) == Throttle("address", first=True)

    async def test_the_in_process_limiter_keys_lockouts_by_email_and_address(self) -> None:
        limiter = LoginLimiter(None, per_pair=3, per_address=5)
        results = [await limiter.attempt("admin@x", "6.6.6.6") for _ in range(4)]
        assert results[:3] == [None, None, None]
        assert results[3] == Throttle("email_address", first=True)
        # the admin, elsewhere, is not locked out
        assert await limiter.attempt("admin@x", "192.0.2.7") is None
        # spraying other emails from the attacker's address runs into the per-address limit
        assert await limiter.attempt("b@x", "6.6.6.6") is None  # the address's 5th attempt
        assert await limiter.attempt("c@x", "6.6.6.6") == Throttle("address", first=True)
        # a success clears its pair and is not counted against the address
        await limiter.succeeded("admin@x", "192.0.2.7")
        assert [await limiter.attempt("admin@x", "192.0.2.7") for _ in range(3)] == [None, None, None]
