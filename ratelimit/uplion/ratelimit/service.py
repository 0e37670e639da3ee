"""envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit: find each descriptor's rule, decide
all of a request's limits in one Redis round trip, answer with statuses, headers and a 429 body."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from prometheus_client import Counter

from uplion.core.credentials import limit_field, limits_key

from .headers import Status, over_limit_body, response_headers, unavailable_body
from .limiter import Hit, Limiter, Outcome, Unavailable
from .loader import Rules
from .rules import UNITS, Domain, Limit, Match, Node, find

log = logging.getLogger("uplion.ratelimit")
SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
# A descriptor with this single entry names the request (Envoy's x-request-id): token reservations
# are recorded under it and settled when the request's usage event arrives.
RESERVATION_KEY = "uplion_request_id"
RESERVATION_PREFIX = "uplion:rl:resv:"
OVERRIDE_KEYS = {"user_id": "user", "token_id": "token"}  # whose account limits a descriptor names

HITS = Counter("uplion_ratelimit_hits_total", "Hits checked per rule", ["domain", "rule"])
OVER = Counter("uplion_ratelimit_over_limit_total", "Hits over the limit per rule", ["domain", "rule"])
NEAR = Counter("uplion_ratelimit_near_limit_total", "Hits allowed at or above 80% of the limit", ["domain", "rule"])
SHADOW = Counter("uplion_ratelimit_shadow_mode_total", "Over-limit hits let through by shadow_mode", ["domain", "rule"])
FAILURES = Counter("uplion_ratelimit_redis_failures_total", "Decisions made without Redis, by fail mode", ["mode"])

_UNIT_ENUM = {name: rls_pb2.RateLimitResponse.RateLimit.Unit.Value(name.upper()) for name in UNITS}
_UNIT_NAME = {v: k for k, v in _UNIT_ENUM.items()}
OK, OVER_LIMIT = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT


@dataclass(frozen=True)
class Planned:
    index: int  # the descriptor's position in the request
    rule: str
    limit: Limit
    shadow: bool
    kind: str  # "requests" or "tokens"
    hit: Hit


def counter_key(domain: str, entries: list[tuple[str, str]], limit: Limit, now_s: int) -> str:
    body = "|".join(f"{k}_{v}" for k, v in entries)
    if limit.algorithm == "gcra":
        return f"uplion:rl:g:{domain}:{body}:{limit.unit}"
    window = limit.window_s
    return f"uplion:rl:{domain}:{body}:{now_s // window * window}"


def override_for(entries: list[tuple[str, str]], kind: str, limit: Limit) -> tuple[str, str]:
    """Where an account's own limit for this rule lives: (hash key, field) such as
    ("uplion:limits:user:u_1", "rpm"); ("", "") for other descriptors."""
    key, value = entries[-1]
    subject = OVERRIDE_KEYS.get(key)
    if subject is None or not value:
        return "", ""
    return limits_key(subject, value), limit_field(kind, limit.unit)


@dataclass
class Plan:
    hits: list[Planned]
    reservation: str  # "" when the request named none
    unlimited: set[int]  # descriptors whose rule is `unlimited`


def plan(domain: Domain | None, request: rls_pb2.RateLimitRequest, now_s: int) -> Plan:
    """The hits to count for a request, its reservation id, its unlimited descriptors (pure)."""
    default_hits = max(1, request.hits_addend)
    planned: list[Planned] = []
    reservation = ""
    matches: list[tuple[int, list[tuple[str, str]], Match, bool]] = []
    for i, d in enumerate(request.descriptors):
        entries = [(e.key, e.value) for e in d.entries]
        if len(entries) == 1 and entries[0][0] == RESERVATION_KEY:
            reservation = entries[0][1]
            continue
        tokens = d.HasField("hits_addend")
        if d.HasField("limit"):  # a limit sent by Envoy overrides the config, as in the reference
            unit = _UNIT_NAME.get(d.limit.unit)
            if unit is None:
                continue
            match = Match(Node("override"), Limit(d.limit.requests_per_unit, unit))
        elif domain is None or (found := find(domain, entries)) is None:
            continue
        else:
            match = found
        matches.append((i, entries, match, tokens))
    replaced = {name for _, _, m, _ in matches for name in m.limit.replaces}
    unlimited = {i for i, _, m, _ in matches if m.limit.unlimited}
    for i, entries, m, tokens in matches:
        limit = m.limit
        if limit.unlimited or (limit.name and limit.name in replaced):
            continue
        d = request.descriptors[i]
        hits = d.hits_addend.value if tokens else default_hits
        kind = "tokens" if tokens else "requests"
        okey, ofield = override_for(entries, kind, limit)
        hit = Hit(
            key=counter_key(request.domain, entries, limit, now_s), limit=limit.requests_per_unit,
            window_ms=limit.window_s * 1000, gcra=limit.algorithm == "gcra", hits=hits, shadow=m.node.shadow_mode,
            override_key=okey, override_field=ofield, reserve=tokens and bool(reservation),
        )  # fmt: skip
        planned.append(Planned(i, m.node.path, limit, m.node.shadow_mode, kind, hit))
    return Plan(planned, reservation, unlimited)


def _header(k: str, v: str) -> base_pb2.HeaderValue:
    return base_pb2.HeaderValue(key=k, value=v)


UNLIMITED_REMAINING = 2**32 - 1  # what the reference reports for an unlimited descriptor


def respond(
    request: rls_pb2.RateLimitRequest, p: Plan, outcomes: list[Outcome], rejected: bool
) -> rls_pb2.RateLimitResponse:
    resp = rls_pb2.RateLimitResponse(overall_code=OVER_LIMIT if rejected else OK)
    by_index = {h.index: (h, o) for h, o in zip(p.hits, outcomes, strict=True)}
    statuses = []
    for i in range(len(request.descriptors)):
        status = resp.statuses.add(code=OK)
        if i in p.unlimited:
            status.limit_remaining = UNLIMITED_REMAINING
        if i not in by_index:
            continue
        h, o = by_index[i]
        status.code = OVER_LIMIT if o.over and not h.shadow else OK
        status.current_limit.requests_per_unit = o.limit
        status.current_limit.unit = _UNIT_ENUM[h.limit.unit]
        status.limit_remaining = o.remaining
        status.duration_until_reset.FromMilliseconds(o.reset_ms)
        if not h.shadow:
            statuses.append(Status(h.kind, o.over, o.limit, o.remaining, o.reset_ms, h.limit.unit))
    resp.response_headers_to_add.extend(_header(k, v) for k, v in response_headers(statuses, rejected))
    if rejected:
        resp.raw_body = over_limit_body(statuses).encode()
        resp.response_headers_to_add.append(_header("content-type", "application/json"))
    return resp


def record(domain: str, planned: list[Planned], outcomes: list[Outcome]) -> None:
    for p, o in zip(planned, outcomes, strict=True):
        HITS.labels(domain, p.rule).inc(p.hit.hits)
        if o.over:
            (SHADOW if p.shadow else OVER).labels(domain, p.rule).inc(p.hit.hits)
        elif o.limit and (o.limit - o.remaining) >= 0.8 * o.limit:
            NEAR.labels(domain, p.rule).inc(p.hit.hits)


class RateLimitService:
    def __init__(self, rules: Rules, limiter: Limiter) -> None:
        self.rules = rules
        self.limiter = limiter

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        method = grpc.unary_unary_rpc_method_handler(
            self.should_rate_limit,
            request_deserializer=rls_pb2.RateLimitRequest.FromString,
            response_serializer=rls_pb2.RateLimitResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"ShouldRateLimit": method})

    async def should_rate_limit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rls_pb2.RateLimitResponse:
        domain = self.rules.domains.get(request.domain)
        now = time.time()
        p = plan(domain, request, int(now))
        if not p.hits:
            return respond(request, p, [], False)
        ttl_ms = max((h.hit.window_ms for h in p.hits if h.hit.reserve), default=0)
        reservation = RESERVATION_PREFIX + p.reservation if p.reservation else ""
        try:
            rejected, outcomes = await self.limiter.decide(
                [h.hit for h in p.hits], int(now * 1000), reservation, ttl_ms
            )
        except Unavailable as e:
            deny = domain is not None and domain.failure_mode_deny
            FAILURES.labels("deny" if deny else "allow").inc()
            log.warning("redis unavailable; deciding without it", extra={"error": str(e), "deny": deny})
            resp = rls_pb2.RateLimitResponse(overall_code=OVER_LIMIT if deny else OK)
            resp.statuses.extend(rls_pb2.RateLimitResponse.DescriptorStatus(code=OK) for _ in request.descriptors)
            if deny:
                resp.raw_body = unavailable_body().encode()
                resp.response_headers_to_add.append(_header("content-type", "application/json"))
            return resp
        record(request.domain, p.hits, outcomes)
        return respond(request, p, outcomes, rejected)
