"""Rate-limit services under test: uplion's and the reference envoyproxy/ratelimit, on real Redis."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

Entries = list[tuple[str, str]]


def request(domain: str, *descriptors: Entries, hits: int = 0, token_hits: dict[int, int] | None = None
            ) -> rls_pb2.RateLimitRequest:  # fmt: skip
    req = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
    for i, entries in enumerate(descriptors):
        d = req.descriptors.add()
        for k, v in entries:
            d.entries.append(ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v))
        if token_hits and i in token_hits:
            d.hits_addend.value = token_hits[i]
    return req


def caller(port: int) -> Callable[[rls_pb2.RateLimitRequest], rls_pb2.RateLimitResponse]:
    stub = rls_pb2_grpc.RateLimitServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    return lambda req: stub.ShouldRateLimit(req, timeout=5)
