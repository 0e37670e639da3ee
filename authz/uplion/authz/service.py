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
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2
from opentelemetry.trace import Span
from prometheus_client import Counter

from uplion.core import logs, tracing
from uplion.core.credentials import secret_hash

from .cache import TtlCache
from .decision import Allow, Deny, Found, decide, precheck, throttled
from .holds import Holds, limited_subjects
from .lookup import Lookup, Throttled, Unavailable
from .throttle import CLIENT_ADDRESS_HEADER, client_bucket

log = logging.getLogger("uplion.authz")
DECISIONS = Counter("uplion_authz_decisions_total", "Check results", ["result"])
CACHE = Counter("uplion_authz_cache_total", "In-process cache hits and misses", ["outcome"])

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
TRUSTED = ("x-uplion-user-id", "x-uplion-token-id", "x-uplion-tier", "x-uplion-allowed-models")
# set by the edge before ext_authz runs: Envoy's request id, and the Lua filter's token estimate
REQUEST_ID_HEADER = "x-request-id"
ESTIMATE_HEADER = "x-uplion-token-estimate"
SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
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
    if d.retry_after_s:
        headers.append(_header("retry-after", str(d.retry_after_s)))
    elif d.http_status != 503 and d.type != "rate_limit_error":
        headers.append(_header("x-should-retry", "false"))  # retrying cannot help
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_RPC_CODE.get(d.http_status, code_pb2.UNAVAILABLE), message=d.message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=d.http_status),
            headers=headers,
            body=body,
        ),
    )


def _encoded(b: bytes) -> bytes:
    return b


Verdict = tuple[Found, Any, bytes, float | None, bool]


def _describe(span: Span | None, answer: bytes) -> None:
    """The decision on the check's span, read back from the answer it sent (tracing on only)."""
    if span is None:
        return
    response = external_auth_pb2.CheckResponse.FromString(answer)
    allowed = response.status.code == code_pb2.OK
    span.set_attribute("uplion.allowed", allowed)
    if allowed:
        for option in response.ok_response.headers:
            if option.header.key == "x-uplion-user-id":
                span.set_attribute("uplion.user_id", option.header.value)
    else:
        span.set_attribute("http.response.status_code", response.denied_response.status.code)
        tracing.fail(span, response.status.message or "denied")


class AuthorizationService:
    """Check, with each decision made once per cache entry: its encoded CheckResponse is reused for
    every request with the same key until the entry (or the key itself) expires. An admitted request
    of a quota-limited user or token also holds its bound against the quota (`holds.py`), every
    request."""

    def __init__(self, lookup: Lookup, cache: TtlCache[Found], fail_open: bool, holds: Holds | None = None) -> None:
        self.lookup = lookup
        self.cache = cache
        self.fail_open = fail_open
        self.holds = holds
        # secret hash -> (the Found it was decided from, counter to bump, encoded response, valid until,
        # whether an allowed request must hold its bound against a quota)
        self._verdicts: dict[bytes, Verdict] = {}
        self._hit, self._miss = CACHE.labels("hit"), CACHE.labels("miss")
        self._prechecked: dict[Deny, bytes] = {}

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The Check method, taking a CheckRequest and answering with already encoded bytes."""
        check = grpc.unary_unary_rpc_method_handler(
            self.check, request_deserializer=external_auth_pb2.CheckRequest.FromString, response_serializer=_encoded
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Check": check})

    async def check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        headers = request.attributes.request.http.headers
        logs.bind_request(request_id=headers.get(REQUEST_ID_HEADER, ""))  # this RPC's task checks one request
        if not tracing.enabled():
            return await self._check(headers, request)
        parent = tracing.context_from(context.invocation_metadata() or ())  # Envoy's ext_authz client span
        http = request.attributes.request.http
        attributes = {"uplion.request_id": headers.get(REQUEST_ID_HEADER), "url.path": http.path}
        with tracing.span("authz check", tracing.SERVER, parent, attributes) as span:
            answer = await self._check(headers, request)
            _describe(span, answer)
            return answer

    async def _check(self, headers: Any, request: external_auth_pb2.CheckRequest) -> bytes:
        checked = precheck(headers.get("authorization"))
        if isinstance(checked, Deny):
            DECISIONS.labels(str(checked.http_status)).inc()
            return self._static(checked)
        hash_ = secret_hash(checked)
        found = self.cache.peek(hash_)
        if found is None:
            # who pays if the key is unknown to Redis and must be looked up in PostgreSQL
            address = client_bucket(
                headers.get(CLIENT_ADDRESS_HEADER), request.attributes.source.address.socket_address.address
            )
            try:
                found, _ = await self.cache.get(hash_, lambda: self.lookup.find(hash_, address))
            except Throttled as e:
                DECISIONS.labels("429").inc()
                return self._encode(throttled(e.wait_s))
            except Unavailable as e:
                log.warning("key check failed %s", "open" if self.fail_open else "closed", extra={"error": str(e)})
                result = UNVERIFIED if self.fail_open else UNAVAILABLE
                DECISIONS.labels("allow" if isinstance(result, Allow) else "503").inc()
                return self._encode(result)
            self._miss.inc()
        else:
            self._hit.inc()
        now = time.time()
        verdict = self._verdicts.get(hash_)
        if verdict is None or verdict[0] is not found or (verdict[3] is not None and verdict[3] <= now):
            verdict = self._decide(checked, hash_, found, now)
        if verdict[4] and self.holds is not None:
            refused = await self.holds.hold(found, headers.get(REQUEST_ID_HEADER), headers.get(ESTIMATE_HEADER))
            if refused is not None:
                DECISIONS.labels("429").inc()
                return self._encode(refused)
        verdict[1].inc()
        return verdict[2]

    def _decide(self, secret: str, hash_: bytes, found: Found, now: float) -> Verdict:
        result = decide(secret, hash_, found, now)
        expires = found.token.expires_at if found.token is not None else None
        valid_until = expires if expires is not None and expires > now else None
        label = "allow" if isinstance(result, Allow) else str(result.http_status)
        held = isinstance(result, Allow) and bool(limited_subjects(found))
        verdict = (found, DECISIONS.labels(label), self._encode(result), valid_until, held)
        if len(self._verdicts) >= self.cache.max_entries:
            self._verdicts.clear()
        self._verdicts[hash_] = verdict
        return verdict

    @staticmethod
    def _encode(result: Allow | Deny) -> bytes:
        response = allow_response(result) if isinstance(result, Allow) else deny_response(result)
        return bytes(response.SerializeToString())

    def _static(self, deny: Deny) -> bytes:
        """Denials made before any lookup; the ones that name no key are encoded once."""
        if deny.code == "missing_api_key":
            cached = self._prechecked.get(deny)
            if cached is None:
                cached = self._prechecked[deny] = self._encode(deny)
            return cached
        return self._encode(deny)
