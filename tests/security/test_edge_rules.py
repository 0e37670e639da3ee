"""The pure parts of the edge's header rules and of authz's per-address budget of unknown keys."""

from __future__ import annotations

import yaml

from uplion.authz.decision import throttled
from uplion.authz.service import deny_response
from uplion.authz.throttle import AddressBudget, Bucket, client_bucket, give_back, take
from uplion.core.addresses import address_bucket
from uplion.edge.filters import (
    CLIENT_ADDRESS_HEADER,
    CLIENT_HEADERS,
    MAX_HEADER_BYTES,
    MAX_REQUEST_HEADERS_KB,
    client_may_send,
    connection_manager_settings,
    ext_authz_filter,
    lua_source,
)
from uplion.edge.local import local_envoy_config


def test_clients_may_send_no_uplion_header_but_the_listed_ones() -> None:
    for name in ("x-uplion-user-id", "x-uplion-token-id", "x-uplion-tier", "x-uplion-allowed-models",
                 "x-uplion-token-estimate", CLIENT_ADDRESS_HEADER, "x-uplion-anything-added-later"):  # fmt: skip
        assert not client_may_send(name), name
    assert CLIENT_HEADERS == ("x-uplion-timeout",)
    for name in (*CLIENT_HEADERS, "authorization", "content-type", "x-request-id", "x-stainless-timeout"):
        assert client_may_send(name), name


def test_the_lua_filter_carries_the_same_rule_and_bounds() -> None:
    source = lua_source()
    assert "__" not in source.replace("__pairs", "")  # every placeholder filled in
    assert 'local PREFIX = "x-uplion-"' in source
    assert 'local CLIENT_HEADERS = { ["x-uplion-timeout"] = true, }' in source
    assert f"local MAX_HEADER_BYTES = {MAX_HEADER_BYTES} " in source
    assert f'local CLIENT_ADDRESS = "{CLIENT_ADDRESS_HEADER}"' in source
    # the strip runs before anything else the filter does with a request
    body = source[source.index("function envoy_on_request") :]
    assert body.index("strip_and_measure(headers)") < body.index("headers:get(")


def test_the_local_edge_bounds_headers_and_sends_authz_the_client_address() -> None:
    config = yaml.safe_load(local_envoy_config(1, 2, "d.pb", 3, 4, (5,)))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["use_remote_address"] is True
    assert hcm["max_request_headers_kb"] == MAX_REQUEST_HEADERS_KB
    assert hcm["local_reply_config"] == connection_manager_settings()["local_reply_config"]
    assert [f["name"] for f in hcm["http_filters"]][:2] == ["envoy.filters.http.lua", "envoy.filters.http.ext_authz"]
    allowed = ext_authz_filter("authz")["typed_config"]["allowed_headers"]["patterns"]
    # the key, the client address, and what names and sizes the request's quota hold
    assert allowed == [{"exact": h} for h in ("authorization", CLIENT_ADDRESS_HEADER, "x-request-id",
                                              "x-uplion-token-estimate")]  # fmt: skip


def test_client_addresses_bucket_by_ip_and_ipv6_by_64() -> None:
    assert address_bucket("203.0.113.9") == "203.0.113.9"
    assert address_bucket("203.0.113.9:4567") == "203.0.113.9"
    assert address_bucket("[2001:db8:1:2:3:4:5:6]:443") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert address_bucket("::ffff:198.51.100.4") == "198.51.100.4"
    for bad in (None, "", "not-an-address", "1.2.3", "[::1"):
        assert address_bucket(bad) == ""
    # the edge's header first, then the peer Envoy reports, then one shared bucket
    assert client_bucket("198.51.100.4", "10.0.0.1") == "198.51.100.4"
    assert client_bucket(None, "10.0.0.1") == "10.0.0.1"
    assert client_bucket("junk", "") == "unknown"


def test_token_bucket_allows_a_burst_then_refills_evenly() -> None:
    capacity, per_s = 3.0, 0.5
    bucket, wait = take(None, 100.0, capacity, per_s)
    assert (bucket, wait) == (Bucket(2.0, 100.0), 0.0)
    bucket, _ = take(bucket, 100.0, capacity, per_s)
    bucket, _ = take(bucket, 100.0, capacity, per_s)
    refused, wait = take(bucket, 100.0, capacity, per_s)
    assert refused.tokens == 0.0
    assert wait == 2.0  # one token every 2 s
    again, wait = take(refused, 101.0, capacity, per_s)
    assert wait == 1.0
    assert again.tokens == 0.5
    allowed, wait = take(again, 102.0, capacity, per_s)
    assert wait == 0.0
    assert allowed.tokens == 0.0
    full, _ = take(allowed, 10_000.0, capacity, per_s)  # never more than the burst
    assert full.tokens == capacity - 1
    assert give_back(Bucket(2.5, 1.0), capacity) == Bucket(3.0, 1.0)


def test_address_budget_counts_per_address_refunds_found_keys_and_stays_bounded() -> None:
    budget = AddressBudget(per_minute=2, max_addresses=3)
    assert budget.take("a", 0.0) == 0.0
    budget.give_back("a")  # the key existed: the lookup cost nothing
    assert [budget.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 30.0]
    assert budget.take("b", 0.0) == 0.0  # another address is not affected
    for address in ("c", "d", "e"):
        budget.take(address, 0.0)
    assert len(budget._buckets) == 3  # the least recently used are forgotten


def test_the_throttle_answer_is_openai_shaped_and_says_when_to_retry() -> None:
    deny = throttled(1.2)
    assert (deny.http_status, deny.type, deny.code, deny.retry_after_s) == (429, "requests", "rate_limit_exceeded", 2)
    response = deny_response(deny).denied_response
    headers = {h.header.key: h.header.value for h in response.headers}
    assert headers["retry-after"] == "2"
    assert "x-should-retry" not in headers
    assert response.status.code == 429
    assert '"code": "rate_limit_exceeded"' in response.body
