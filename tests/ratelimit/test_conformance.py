"""uplion's rate-limit service against the reference envoyproxy/ratelimit (built from the Go module
proxy): same Redis, same config file, same request sequence; identical decisions, except where
uplion deliberately differs (rejected hits are not counted), which is shown explicitly."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from uplion.devstack.platform import Service
from uplion.devstack.ratelimit import start_ratelimit, start_reference_ratelimit
from uplion.devstack.redis import Redis

from .conftest import caller, request

CONFIG = """
domain: conformance
descriptors:
  - key: user_id
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: generic_key
    value: premium
    descriptors:
      - key: user_id
        rate_limit: {unit: hour, requests_per_unit: 8}
  - key: path
    value: /v1/chat*
    rate_limit: {unit: hour, requests_per_unit: 4}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: free
    rate_limit: {unit: unlimited}
  - key: client
    descriptors:
      - key: tier
        value: gold
        rate_limit: {unit: day, requests_per_unit: 6, name: gold}
      - key: tier
        rate_limit: {unit: day, requests_per_unit: 3, replaces: [{name: gold}]}
"""
# the reference wants `unlimited: true` without a unit; both read this same file
CONFIG = CONFIG.replace("rate_limit: {unit: unlimited}", "rate_limit: {unlimited: true}")

Call = Callable[[rls_pb2.RateLimitRequest], rls_pb2.RateLimitResponse]


@pytest.fixture(scope="module")
def both(redis_server: Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Call, Call]]:
    d = tmp_path_factory.mktemp("conformance")
    (d / "config").mkdir()
    (d / "config" / "conformance.yaml").write_text(CONFIG)
    ours = start_ratelimit(d, redis_server.url, d / "config")
    reference: Service = start_reference_ratelimit(d, redis_server.port, CONFIG)
    # epoch-aligned windows: keep the whole sequence inside one hour on both
    if 3600 - time.time() % 3600 < 30:
        time.sleep(3600 - time.time() % 3600 + 1)
    yield caller(ours.port), caller(reference.port)
    ours.stop()
    reference.stop()


def decisions(resp: rls_pb2.RateLimitResponse) -> tuple[object, ...]:
    """What must match. `limit_remaining` of a refused descriptor is left out: the reference says 0,
    uplion says what is really left (a smaller request could still fit; see docs/ratelimit.md)."""
    over = rls_pb2.RateLimitResponse.OVER_LIMIT
    return (
        resp.overall_code,
        tuple((s.code, s.current_limit.requests_per_unit, s.current_limit.unit,
               None if s.code == over else s.limit_remaining) for s in resp.statuses),
    )  # fmt: skip


SEQUENCE: list[tuple[str, rls_pb2.RateLimitRequest, int]] = [
    ("per-key default limit", request("conformance", [("user_id", "a")]), 7),
    ("nested key_value then key", request("conformance", [("generic_key", "premium"), ("user_id", "b")]), 10),
    ("wildcard value", request("conformance", [("path", "/v1/chat/completions")]), 5),
    ("no rule for this value", request("conformance", [("path", "/v1/embeddings")]), 3),
    ("shadow mode never refuses", request("conformance", [("shadow", "x")]), 4),
    ("unlimited", request("conformance", [("free", "x")]), 3),
    ("two descriptors crossing together", request("conformance", [("user_id", "c")], [("user_id", "d")]), 7),
    ("unknown key", request("conformance", [("nothing", "x")]), 2),
    ("intermediate node without a limit", request("conformance", [("generic_key", "premium")]), 2),
    ("hits_addend 2", request("conformance", [("user_id", "e")], hits=2), 3),
    ("replaces", request("conformance", [("client", "x"), ("tier", "gold")], [("client", "x"), ("tier", "silver")]),
     5),
    ("unknown domain", request("elsewhere", [("user_id", "a")]), 2),
]  # fmt: skip


def test_same_decisions_as_the_reference(both: tuple[Call, Call]) -> None:
    ours, reference = both
    seen_over = 0
    for label, req, times in SEQUENCE:
        for i in range(times):
            a, b = ours(req), reference(req)
            assert decisions(a) == decisions(b), f"{label}, request {i + 1}: uplion {a} vs reference {b}"
            for x, y in zip(a.statuses, b.statuses, strict=True):
                if y.HasField("duration_until_reset"):
                    assert abs(x.duration_until_reset.seconds - y.duration_until_reset.seconds) <= 2
            seen_over += a.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    assert seen_over >= 8  # the sequence did reach the limits


def test_deliberate_difference_rejected_hits_are_not_counted(both: tuple[Call, Call]) -> None:
    """3 of 5 used, then a request for 3 more is refused by both; the reference counts the refused
    hits anyway (6 of 5), so a following request for 1 is refused there and allowed by uplion."""
    ours, reference = both
    first = request("conformance", [("user_id", "f")], hits=3)
    big = request("conformance", [("user_id", "f")], hits=3)
    small = request("conformance", [("user_id", "f")], hits=1)
    for call in (ours, reference):
        assert call(first).overall_code == rls_pb2.RateLimitResponse.OK
        assert call(big).overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    assert reference(small).overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    after = ours(small)
    assert after.overall_code == rls_pb2.RateLimitResponse.OK
    assert after.statuses[0].limit_remaining == 1


def test_deliberate_difference_a_refused_request_counts_no_descriptor(both: tuple[Call, Call]) -> None:
    """One descriptor over, the other not: the reference still counts the other one."""
    ours, reference = both
    for _ in range(5):
        for call in (ours, reference):
            call(request("conformance", [("user_id", "g")]))
    mixed = request("conformance", [("user_id", "g")], [("user_id", "h")])
    for call in (ours, reference):
        assert call(mixed).overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    h_alone = request("conformance", [("user_id", "h")])
    assert ours(h_alone).statuses[0].limit_remaining == 4  # h untouched by the refused request
    assert reference(h_alone).statuses[0].limit_remaining == 3
