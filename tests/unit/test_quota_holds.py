"""The pure parts of quota holds (`uplion.core.quota`, `uplion.authz.holds`); the script itself runs
against a real Redis in tests/security/test_quota_bound.py."""

from __future__ import annotations

import hashlib

from uplion.authz.decision import Found
from uplion.authz.holds import estimate_of, limited_subjects
from uplion.core.credentials import Spend, TokenRecord, UserRecord, spend_key
from uplion.core.quota import Hold, Subject, held_key, hold_args, hold_field, hold_for


def test_a_hold_is_the_estimate_priced_at_the_highest_price_rounded_up() -> None:
    assert hold_for(1001, 1000) == Hold(1001, 1001)
    assert hold_for(1, 30) == Hold(1, 1)  # 0.03 rounds up: a hold is never less than the cost
    assert hold_for(10, 0) == Hold(0, 10)  # no price known: tokens only
    assert hold_for(-5, 10) == Hold(0, 0)


def test_hold_fields_are_named_as_the_rate_limiter_names_key_parts() -> None:
    """ratelimit/internal/decide.KeyPart: the limiter deletes the holds of requests it refuses."""
    assert hold_field("3f2a-uuid") == "3f2a-uuid"
    for raw in ("x" * 129, "sha256:short", "a{b}c"):
        assert hold_field(raw) == "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    assert hold_field("y" * 128) == "y" * 128


def test_holds_share_their_subjects_slot() -> None:
    s = Subject("user", "u_1", 100, None, 5, 0)
    keys, argv = hold_args(s, "rid", Hold(7, 8), now_ms=1000, ttl_ms=60_000)
    assert keys == [held_key("user", "u_1"), spend_key("user", "u_1")] == ["uplion:quota:held:user:{u_1}",
                                                                          "uplion:spend:user:{u_1}"]  # fmt: skip
    assert argv == ["rid", "1000", "60000", "7", "8", "100", "", "5", "0", "1024"]


def _found(user_lc: int | None, token_lt: int | None) -> Found:
    token = TokenRecord("t_1", "u_1", b"h", False, None, (), None, token_lt, 1)
    user = UserRecord("u_1", "default", False, user_lc, None, 1)
    return Found(token, user, Spend(3, 4), Spend(5, 6))


def test_only_limited_subjects_are_held_token_first() -> None:
    assert limited_subjects(_found(None, None)) == []
    assert limited_subjects(_found(100, 50)) == [
        Subject("token", "t_1", None, 50, 5, 6),
        Subject("user", "u_1", 100, None, 3, 4),
    ]


def test_the_estimate_comes_from_the_edge_or_the_default() -> None:
    assert estimate_of("120", 8192) == 120
    assert estimate_of(None, 8192) == 8192
    assert estimate_of("", 8192) == 8192
    assert estimate_of("lots", 8192) == 8192
    assert estimate_of("-3", 8192) == 0
