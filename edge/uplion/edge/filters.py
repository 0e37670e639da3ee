"""The edge's HTTP filter chain as data: one source for the local Envoy and the Istio EnvoyFilters."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

TRANSCODED_SERVICES = ["uplion.v1.InferenceService", "uplion.v1.AdminService"]
# Requests under these prefixes go to the accounts service, which authenticates them itself
# (sessions or API tokens, with roles); everything else needs an API key checked by ext_authz.
ADMIN_PREFIXES = ["/admin/", "/uplion.v1.AdminService/"]
# what the gateway serves (REST, native gRPC, health and reflection); every other path is the web
# console's when one is deployed
API_PREFIXES = ["/v1/", "/uplion.", "/grpc."]
# gRPC methods whose request is a stream (client- or bidi-streaming): server reflection, which
# grpcurl and other tools call before anything else. The Lua filter does not buffer their bodies (a
# streamed request does not end while its call waits for answers: buffering it would hold the call
# until its deadline) and reserves no tokens for them; ext_authz and the rate limiter run on their
# headers as on any request. Exact paths: the path names the method the server runs, so no unary
# inference RPC can be sent under one of these and escape the token estimate. A client- or
# bidi-streaming method added to proto/ must be added here (tests/edge/test_grpc_edge.py checks it).
STREAMING_REQUEST_METHODS = (
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)
# Answered without an API key (probes of load balancers and orchestrators): gRPC health checking.
# Exact paths, so no other method rides on the keyless route.
KEYLESS_METHODS = ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch")
AUTHZ_TIMEOUT = "1s"
MAX_BODY_BYTES = 8 * 1024 * 1024
# Request headers under this prefix are uplion's own: set by the edge (the Lua filter) and by
# ext_authz, read by the rate limiter and the services behind the edge. The Lua filter removes every
# one a client sent, first in the chain, except those listed here: a header uplion adds later cannot
# be forged by clients unless it is added here, deliberately.
TRUSTED_HEADER_PREFIX = "x-uplion-"
CLIENT_HEADERS = ("x-uplion-timeout",)  # may only shorten a request's deadline (the gateway takes the smallest)
# the client address Envoy determined, set by the Lua filter for authz's per-address budget
CLIENT_ADDRESS_HEADER = "x-uplion-client-address"
# the tokens a request may use (the Lua filter's estimate from its body): the rate limiter reserves
# them, and authz holds them (priced) against the caller's quota under Envoy's request id
TOKEN_ESTIMATE_HEADER = "x-uplion-token-estimate"  # noqa: S105 (a header name)
REQUEST_ID_HEADER = "x-request-id"
# Header bounds: all of a request's headers (Envoy's codec refuses more with 431 over HTTP/1.1 and
# resets the stream over HTTP/2), and any one header's name and value (the Lua filter: 431).
MAX_REQUEST_HEADERS_KB = 32
MAX_HEADER_BYTES = 8 * 1024
HEADERS_TOO_LARGE = (
    f"The request headers are too large: at most {MAX_REQUEST_HEADERS_KB} KiB in all and {MAX_HEADER_BYTES} bytes"
    " for any one header."
)


def client_may_send(header: str) -> bool:
    """Whether a request header a client sent reaches the filters and services behind the edge (the
    rule the Lua filter applies; header names arrive lowercase)."""
    return not header.startswith(TRUSTED_HEADER_PREFIX) or header in CLIENT_HEADERS


def lua_source() -> str:
    text = resources.files("uplion.edge").joinpath("openai_edge.lua").read_text()
    client_headers = " ".join(f'["{h}"] = true,' for h in CLIENT_HEADERS)
    streaming = " ".join(f'["{m}"] = true,' for m in STREAMING_REQUEST_METHODS)
    for name, value in (
        ("__MAX_BODY_BYTES__", str(MAX_BODY_BYTES)),
        ("__TRUSTED_PREFIX__", TRUSTED_HEADER_PREFIX),
        ("__CLIENT_HEADERS__", client_headers),
        ("__STREAMING_REQUESTS__", streaming),
        ("__CLIENT_ADDRESS_HEADER__", CLIENT_ADDRESS_HEADER),
        ("__TOKEN_ESTIMATE_HEADER__", TOKEN_ESTIMATE_HEADER),
        ("__MAX_HEADER_BYTES__", str(MAX_HEADER_BYTES)),
        ("__HEADERS_TOO_LARGE__", HEADERS_TOO_LARGE),
    ):
        text = text.replace(name, value)
    return text


@dataclass(frozen=True)
class Descriptor:
    """Where Envoy reads the descriptor set: a file path (local) or inline bytes (Istio)."""

    path: str | None = None
    inline_b64: str | None = None

    def as_config(self) -> dict[str, str]:
        if self.path:
            return {"proto_descriptor": self.path}
        if self.inline_b64:
            return {"proto_descriptor_bin": self.inline_b64}
        raise ValueError("descriptor needs a path or inline bytes")


def lua_filter() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": lua_source()},
        },
    }


def transcoder_filter(descriptor: Descriptor) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            **descriptor.as_config(),
            "services": TRANSCODED_SERVICES,
            "print_options": {
                "preserve_proto_field_names": True,
                "always_print_primitive_fields": True,
                "stream_sse_style_delimited": True,
            },
            "convert_grpc_status": True,
            "max_request_body_size": MAX_BODY_BYTES,
            "request_validation_options": {"reject_unknown_method": True},
            # a query string the contract does not name (Azure-style clients send ?api-version=...)
            # would make the transcoder pass the request through untranscoded, which the gRPC
            # gateway resets (a 503); OpenAI ignores such parameters, and so does the edge
            "ignore_unknown_query_parameters": True,
        },
    }


def ext_authz_filter(cluster: str) -> dict[str, Any]:
    """API keys and quotas checked by uplion's authz service (gRPC). If it cannot answer, requests
    are refused with 503 (the Lua filter gives the body OpenAI's shape; native gRPC clients get the
    matching gRPC status: UNAUTHENTICATED for a missing or wrong key); only the Authorization header and
    the client address the Lua filter set are sent to it, never the body (`with_request_body` is
    not set: a streamed request, such as server reflection, is checked on its headers alone), plus
    the request id and the token estimate, under which authz holds the request's bound against its
    quota."""
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster}, "timeout": AUTHZ_TIMEOUT},
            "failure_mode_allow": False,
            "status_on_error": {"code": "ServiceUnavailable"},
            "allowed_headers": {
                "patterns": [
                    {"exact": h}
                    for h in ("authorization", CLIENT_ADDRESS_HEADER, REQUEST_ID_HEADER, TOKEN_ESTIMATE_HEADER)
                ]
            },
        },
    }


def ext_authz_disabled() -> dict[str, Any]:
    """Per-route config turning ext_authz off (the admin routes, gRPC health checking)."""
    return {
        "envoy.filters.http.ext_authz": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "disabled": True,
        }
    }


def transcoder_disabled() -> dict[str, Any]:
    """Per-route config turning the gRPC-JSON transcoder off (the console's static files: its
    reject_unknown_method would answer 404 to every path that is not an RPC)."""
    return {
        "envoy.filters.http.grpc_json_transcoder": {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            "disabled": True,
        }
    }


RATELIMIT_DOMAIN = "uplion"
# The windows an account's own limits may set (admin API RateLimits); each is a rule of the default
# rate-limit config ("requests" and "tokens" are per minute).
RATE_WINDOWS = ("requests", "requests_per_hour", "requests_per_day", "tokens", "tokens_per_day")
RATELIMIT_TIMEOUT = "1s"  # a bound for overload; the service itself never waits more than 50 ms on Redis


def _header_entry(header: str, key: str) -> dict[str, Any]:
    return {"request_headers": {"header_name": header, "descriptor_key": key}}


def rate_limit_actions() -> list[dict[str, Any]]:
    """The descriptors each request sends: requests and tokens, per user and per token (the trusted
    headers ext_authz set; the Lua filter removed any a client sent), the token estimate as the
    token descriptors' hits, and Envoy's request id, under which the service records the
    reservation it settles when the request's usage event arrives. A request without those headers
    (the admin API, where ext_authz is off) sends no identity descriptor."""
    tokens = {"format": f"%REQ({TOKEN_ESTIMATE_HEADER})%"}
    out: list[dict[str, Any]] = []
    for window in RATE_WINDOWS:
        for header, key in (("x-uplion-user-id", "user_id"), ("x-uplion-token-id", "token_id")):
            entry: dict[str, Any] = {
                "actions": [{"generic_key": {"descriptor_value": window}}, _header_entry(header, key)]
            }
            if window.startswith("tokens"):
                entry["hits_addend"] = tokens
            out.append(entry)
    out.append({"actions": [_header_entry(REQUEST_ID_HEADER, "uplion_request_id")]})
    return out


def ratelimit_filter(cluster: str) -> dict[str, Any]:
    """uplion's rate-limit service (gRPC, RLS v3). Fails open if it cannot be reached in time; the
    service answers 429s with OpenAI-shaped bodies and x-ratelimit-* headers."""
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": RATELIMIT_DOMAIN,
            "request_type": "external",
            "timeout": RATELIMIT_TIMEOUT,
            "failure_mode_deny": False,
            "rate_limited_as_resource_exhausted": True,
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
                "transport_api_version": "V3",
            },
            "rate_limits": rate_limit_actions(),
        },
    }


def connection_manager_settings() -> dict[str, Any]:
    """HTTP connection manager settings of the edge (the local Envoy's, merged into Istio's gateway):
    the bound on request headers, and its 431 in OpenAI's shape (Envoy's codec answers it before
    any filter runs, so the Lua filter cannot shape it); every response, errors included, carries
    the request's `x-request-id` (the OpenAI SDKs expose it as `_request_id`)."""
    too_large = {
        "filter": {
            "status_code_filter": {
                "comparison": {"op": "EQ", "value": {"default_value": 431, "runtime_key": "uplion_edge.status_431"}}
            }
        },
        "body_format_override": {
            "json_format": {
                "error": {
                    "message": HEADERS_TOO_LARGE,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "request_headers_too_large",
                }
            },
            "content_type": "application/json",
        },
        "headers_to_add": [
            {"header": {"key": "x-should-retry", "value": "false"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
    }
    return {
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "local_reply_config": {"mappers": [too_large]},
        "always_set_request_id_in_response": True,
    }


def router_filter() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }


def edge_filters(
    descriptor: Descriptor, authz_cluster: str | None = None, ratelimit_cluster: str | None = None
) -> list[dict[str, Any]]:
    """Order matters: Lua sees requests first (it removes client-sent x-uplion-* headers before any
    filter reads one, and computes the token estimate) and responses last (so Envoy's own errors
    leave in OpenAI's shape); the key check sets the identity headers the rate limiter keys on; the
    transcoder comes last."""
    authz = [ext_authz_filter(authz_cluster)] if authz_cluster else []
    ratelimit = [ratelimit_filter(ratelimit_cluster)] if ratelimit_cluster else []
    return [lua_filter(), *authz, *ratelimit, transcoder_filter(descriptor)]
