"""Issue #13, item 6 (unauthenticated part): a key nobody has costs authz a PostgreSQL lookup, so a
burst of random keys from one client address is refused with 429 once that address used its
budget (UPLION_AUTHZ_UNKNOWN_KEYS_PER_ADDRESS_PER_MINUTE, 30 by default), and the lookups stop;
valid keys from the same address are still served, and other addresses are not affected. The
address is the one the edge saw: forwarding headers and a forged x-uplion-client-address change
nothing."""

from __future__ import annotations

import time

import httpx

from uplion.core.credentials import new_secret

from .conftest import MSG, SecurityEdge
from .test_edge_headers import error

BUDGET = 30  # authz's default: the security edge runs authz with its packaged settings
CHAT = {"model": "sec-echo", "messages": MSG}


def postgres_lookups(edge: SecurityEdge) -> float:
    assert edge.authz is not None
    return edge.authz.metric("uplion_authz_lookups_total", source="postgres")


def chat(c: httpx.Client, key: str, **headers: str) -> httpx.Response:
    return c.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}", **headers})


def test_random_keys_from_one_address_get_429_after_its_budget_and_stop_reaching_postgres(
    security_edge: SecurityEdge,
) -> None:
    edge = security_edge
    assert edge.authz is not None
    attacker, neighbour, elsewhere = "127.0.0.50", "127.0.0.50", "127.0.0.51"
    valid = edge.key(edge.member().user_id).secret
    before, throttled_before = postgres_lookups(edge), edge.authz.metric("uplion_authz_throttled_total")
    guesses = [new_secret() for _ in range(BUDGET + 20)]
    started = time.monotonic()
    with edge.http(address=attacker) as c:
        statuses = [chat(c, g) for g in guesses]
    elapsed = time.monotonic() - started
    codes = [r.status_code for r in statuses]
    # the budget refills at BUDGET per minute: a few more may pass while the burst runs
    allowed_401 = BUDGET + int(elapsed * BUDGET / 60) + 1
    assert codes[:BUDGET] == [401] * BUDGET
    assert codes.count(401) <= allowed_401
    assert codes[-10:] == [429] * 10
    refused = statuses[-1]
    body = error(refused, 429)
    assert body["code"] == "rate_limit_exceeded"
    assert body["type"] == "requests"
    assert "unknown API keys" in body["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert "x-should-retry" not in refused.headers  # retrying after retry-after can help
    assert error(statuses[0], 401)["code"] == "invalid_api_key"
    # PostgreSQL saw at most the budget, not one query per guess
    looked_up = postgres_lookups(edge) - before
    assert BUDGET <= looked_up <= allowed_401
    assert edge.authz.metric("uplion_authz_throttled_total") - throttled_before == codes.count(429)

    with edge.http(address=attacker) as c:
        # neither forwarding headers nor a forged client address move the attacker to a fresh budget
        spoofed = {"x-forwarded-for": "198.51.100.9", "x-envoy-external-address": "198.51.100.9",
                   "x-uplion-client-address": "198.51.100.9"}  # fmt: skip
        assert error(chat(c, new_secret(), **spoofed), 429)["code"] == "rate_limit_exceeded"
        # a guess already answered is known to Redis as unknown: still 401, and no query
        during = postgres_lookups(edge)
        assert error(chat(c, guesses[0]), 401)["code"] == "invalid_api_key"
        assert postgres_lookups(edge) == during
    # a legitimate client behind the same address is not starved
    with edge.http(address=neighbour) as c:
        assert chat(c, valid).status_code == 200
    # another address has its own budget: its unknown keys are 401, its valid keys work
    with edge.http(address=elsewhere) as c:
        assert error(chat(c, new_secret()), 401)["code"] == "invalid_api_key"
        assert chat(c, valid).status_code == 200
    assert postgres_lookups(edge) - before <= allowed_401 + 1
