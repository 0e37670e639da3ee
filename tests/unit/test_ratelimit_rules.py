"""Rate-limit rules (envoyproxy/ratelimit's format), lookup and response headers, without I/O."""

from __future__ import annotations

import pytest

from uplion.ratelimit.headers import Status, openai_duration, response_headers
from uplion.ratelimit.rules import RuleError, find, parse
from uplion.ratelimit.service import RESERVATION_KEY, counter_key, override_for, plan

from ..ratelimit.conftest import request

RULES = """
domain: d
descriptors:
  - key: user_id
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: generic_key
    value: tokens
    descriptors:
      - key: user_id
        rate_limit: {unit: minute, requests_per_unit: 1000, algorithm: gcra}
  - key: path
    value: /v1/*
    rate_limit: {unit: second, requests_per_unit: 5}
  - key: free
    rate_limit: {unlimited: true}
"""


def test_lookup_follows_the_reference_rules() -> None:
    d = parse(RULES)
    m = find(d, [("user_id", "u1")])
    assert m is not None
    assert (m.limit.requests_per_unit, m.limit.unit) == (10, "minute")
    nested = find(d, [("generic_key", "tokens"), ("user_id", "u1")])
    assert nested is not None
    assert nested.limit.algorithm == "gcra"
    assert find(d, [("generic_key", "tokens")]) is None  # a node without a limit
    assert find(d, [("generic_key", "other"), ("user_id", "u1")]) is None
    wild = find(d, [("path", "/v1/chat")])
    assert wild is not None
    assert wild.limit.unit == "second"
    assert find(d, [("path", "/v2/chat")]) is None
    free = find(d, [("free", "x")])
    assert free is not None
    assert free.limit.unlimited


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("descriptors: []", "empty domain"),
        ("domain: d\ndescriptors: [{key: k, rate_limit: {unit: fortnight, requests_per_unit: 1}}]",
         "invalid rate limit unit"),
        ("domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, unlimited: true}}]", "should not specify"),
        ("domain: d\ndescriptors: [{key: k}, {key: k}]", "duplicate descriptor"),
        ("domain: d\ndescriptors: [{key: k, colour: red}]", "unknown key 'colour'"),
        ("domain: d\ndescriptors: [{value: v}]", "empty key"),
        ("domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 1, algorithm: magic}}]",
         "algorithm"),
        ("domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 1, name: a, replaces: "
         "[{name: a}]}}]", "same descriptor"),
        ("domain: [", "not valid YAML"),
    ],
)  # fmt: skip
def test_config_errors_are_clear(text: str, error: str) -> None:
    with pytest.raises(RuleError, match=error):
        parse(text, "f.yaml")


def test_plan_counts_tokens_from_descriptor_hits_and_records_the_reservation() -> None:
    d = parse(RULES)
    req = request("d", [("user_id", "u1")], [("generic_key", "tokens"), ("user_id", "u1")], [(RESERVATION_KEY, "r1")],
                  [("free", "x")], token_hits={1: 250})  # fmt: skip
    p = plan(d, req, 1_800_000_000)
    assert p.reservation == "r1"
    assert p.unlimited == {3}
    requests, tokens = p.hits
    assert (requests.kind, requests.hit.hits, requests.hit.reserve) == ("requests", 1, False)
    assert (tokens.kind, tokens.hit.hits, tokens.hit.reserve, tokens.hit.gcra) == ("tokens", 250, True, True)
    assert requests.hit.override_field == "rpm"
    assert tokens.hit.override_key == "uplion:limits:user:u1"
    assert tokens.hit.override_field == "tpm"


def test_keys_are_window_aligned_and_overrides_only_for_identities() -> None:
    d = parse(RULES)
    m = find(d, [("user_id", "u1")])
    assert m is not None
    assert counter_key("d", [("user_id", "u1")], m.limit, 1_800_000_059) == "uplion:rl:d:user_id_u1:1800000000"
    assert override_for([("path", "/v1/x")], "requests", m.limit) == ("", "")


def test_headers_follow_openai_and_the_ietf_draft() -> None:
    statuses = [Status("requests", False, 100, 7, 30_000, "minute"), Status("tokens", False, 1000, 900, 1500, "minute")]
    h = dict(response_headers(statuses, rejected=False))
    assert h["x-ratelimit-remaining-requests"] == "7"
    assert h["x-ratelimit-reset-requests"] == "30s"
    assert h["x-ratelimit-remaining-tokens"] == "900"
    assert h["ratelimit-remaining"] == "7"
    assert "retry-after" not in h
    refused = dict(response_headers([Status("tokens", True, 1000, 3, 61_000, "minute")], rejected=True))
    assert refused["retry-after"] == "61"
    assert openai_duration(20) == "20ms"
    assert openai_duration(360_000) == "6m0s"
    assert openai_duration(3_723_000) == "1h2m3s"
