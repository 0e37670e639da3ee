"""What a request's metadata tells the gateway, read in one pass (a pure function of the pairs).

The edge sets the caller (ext_authz, after it checks the API key: user, token, tier and the key's
model allow-list; Envoy overwrites client-sent values) and Envoy's request id. HTTP clients cannot
send a gRPC deadline: the OpenAI SDKs send their own timeout (seconds) as x-stainless-timeout, and
any client may send x-uplion-timeout; the smallest of those and the gRPC deadline bounds the request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from uplion.core.tracing import TRACE_HEADERS
from uplion.v1 import common_pb2

CALLER_HEADERS = {"x-uplion-user-id": "user_id", "x-uplion-token-id": "token_id", "x-uplion-tier": "tier"}
ALLOWED_MODELS_HEADER = "x-uplion-allowed-models"
REQUEST_ID_HEADER = "x-request-id"
TIMEOUT_HEADERS = ("x-uplion-timeout", "x-stainless-timeout")


@dataclass
class RequestMeta:
    caller: common_pb2.Caller = field(default_factory=common_pb2.Caller)
    allowed_models: frozenset[str] | None = None  # None: every model (no edge, or no allow-list)
    edge_request_id: str = ""
    timeout_s: float | None = None  # the client's, if it gave one
    trace: dict[str, str] = field(default_factory=dict)  # W3C trace context from the edge (traceparent)

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, Any]], time_remaining: float | None) -> RequestMeta:
        meta = cls()
        timeouts = [time_remaining] if time_remaining is not None else []
        for key, value in pairs:
            if not isinstance(value, str):
                continue
            if key in CALLER_HEADERS:
                setattr(meta.caller, CALLER_HEADERS[key], value)
            elif key == ALLOWED_MODELS_HEADER:
                listed = value.strip()
                meta.allowed_models = None if listed in ("", "*") else frozenset(m.strip() for m in listed.split(","))
            elif key == REQUEST_ID_HEADER:
                meta.edge_request_id = value[:128]
            elif key in TRACE_HEADERS:
                meta.trace[key] = value
            elif key in TIMEOUT_HEADERS:
                try:
                    seconds = float(value)
                except ValueError:
                    continue
                if seconds > 0:
                    timeouts.append(seconds)
        meta.timeout_s = min(timeouts) if timeouts else None
        return meta

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext[Any, Any]) -> RequestMeta:
        return cls.parse(context.invocation_metadata() or (), context.time_remaining())

    def allows(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models
