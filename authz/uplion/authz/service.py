"""envoy.service.auth.v3.Authorization/Check: API keys and quotas, for Envoy and Istio CUSTOM authz.

Allowed requests go on with trusted headers that overwrite whatever the client sent (user id, token
id, tier, model allow-list) and without the key itself. Denials carry OpenAI-style JSON bodies."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2
from prometheus_client import Counter

from uplion.core.credentials import secret_hash

from .cache import TtlCache
from .decision import Allow, Deny, Found, decide, precheck
from .lookup import Lookup, Unavailable

log = logging.getLogger("uplion.authz")
DECISIONS = Counter("uplion_authz_decisions_total", "Check results", ["result"])
CACHE = Counter("uplion_authz_cache_total", "In-process cache hits and misses", ["outcome"])

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
TRUSTED = ("x-uplion-user-id", "x-uplion-token-id", "x-uplion-tier", "x-uplion-allowed-models")
_RPC_CODE = {401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED, 429: code_pb2.RESOURCE_EXHAUSTED}

UNAVAILABLE = Deny(
    503, "The API key could not be checked right now; try again shortly.", "api_error", "authz_unavailable"
)
# when failing open, requests go on as this caller (billing and limits can tell them apart)
UNVERIFIED = Allow("unverified", "unverified", "unverified", ())


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value), append_action=OVERWRITE)


def allow_response(a: Allow) -> external_auth_pb2.CheckResponse:
    values = (a.user_id, a.token_id, a.tier, ",".join(a.allowed_models) or "*")
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[_header(k, v) for k, v in zip(TRUSTED, values, strict=True)],
            headers_to_remove=["authorization"],
        ),
    )


def deny_response(d: Deny) -> external_auth_pb2.CheckResponse:
    body = json.dumps({"error": {"message": d.message, "type": d.type, "param": None, "code": d.code}})
    headers = [_header("content-type", "application/json")]
    if d.http_status != 503 and d.type != "rate_limit_error":
        headers.append(_header("x-should-retry", "false"))  # retrying cannot help
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_RPC_CODE.get(d.http_status, code_pb2.UNAVAILABLE), message=d.message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=d.http_status),
            headers=headers,
            body=body,
        ),
    )


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, lookup: Lookup, cache: TtlCache[Found], fail_open: bool) -> None:
        self.lookup = lookup
        self.cache = cache
        self.fail_open = fail_open

    async def decide(self, authorization: str | None) -> Allow | Deny:
        checked = precheck(authorization)
        if isinstance(checked, Deny):
            return checked
        hash_ = secret_hash(checked)
        try:
            found, cached = await self.cache.get(hash_.hex(), lambda: self.lookup.find(hash_))
        except Unavailable as e:
            log.warning("key check failed closed" if not self.fail_open else "key check failed open",
                        extra={"error": str(e)})  # fmt: skip
            return UNVERIFIED if self.fail_open else UNAVAILABLE
        CACHE.labels("hit" if cached else "miss").inc()
        return decide(checked, hash_, found, time.time())

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> external_auth_pb2.CheckResponse:
        authorization = request.attributes.request.http.headers.get("authorization")
        result = await self.decide(authorization)
        if isinstance(result, Allow):
            DECISIONS.labels("allow").inc()
            return allow_response(result)
        DECISIONS.labels(str(result.http_status)).inc()
        return deny_response(result)
