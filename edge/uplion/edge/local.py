"""The bootstrap for a local Envoy in front of the gateway, the accounts service and the authz
service (tests, benchmarks, run.sh)."""

from __future__ import annotations

from typing import Any

import yaml

from .filters import (
    ADMIN_PREFIXES,
    API_PREFIXES,
    KEYLESS_METHODS,
    MAX_BODY_BYTES,
    Descriptor,
    connection_manager_settings,
    edge_filters,
    ext_authz_disabled,
    router_filter,
    transcoder_disabled,
)

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
H2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


def _cluster(name: str, *ports: int, http2: bool = True) -> dict[str, Any]:
    """A loopback upstream (gRPC over HTTP/2 unless `http2` is False), round robin over its ports."""
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}} for port in ports
    ]
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "per_connection_buffer_limit_bytes": 2 * MAX_BODY_BYTES,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = H2_OPTIONS
    return cluster


def tracing_settings(cluster: str, service_name: str = "uplion-edge") -> dict[str, Any]:
    """The connection manager's tracing (docs/tracing.md): OpenTelemetry over OTLP/gRPC to
    `cluster`, W3C trace context (a client's `traceparent` is joined, else a trace begins here).
    Every request is sampled; Envoy spans its ext_authz and rate-limit calls and, with
    `spawn_upstream_span`, its call to the upstream, passing each its own span as parent."""
    provider = {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster}, "timeout": "1s"},
        "service_name": service_name,
    }
    return {
        "tracing": {
            "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": provider},
            "spawn_upstream_span": True,
        }
    }


def local_envoy_config(
    listen_port: int,
    gateway_port: int,
    descriptor_path: str,
    authz_port: int | None = None,
    accounts_port: int | None = None,
    ratelimit_ports: tuple[int, ...] = (),
    console_port: int | None = None,
    otlp_port: int | None = None,
) -> str:
    """Without `authz_port` no key is checked (benchmarks of the bare transcoding path). With
    `console_port` every path outside the APIs goes to the web console (public assets: no key).
    gRPC health checking (`KEYLESS_METHODS`) reaches the gateway without a key. With `otlp_port`
    (an OpenTelemetry collector's OTLP/gRPC port on loopback) every request is traced."""
    routes: list[dict[str, Any]] = []
    clusters = [_cluster("gateway", gateway_port)]
    if accounts_port:
        clusters.append(_cluster("accounts", accounts_port))
        routes += [
            {"match": {"prefix": p}, "route": {"cluster": "accounts"}, "typed_per_filter_config": ext_authz_disabled()}
            for p in ADMIN_PREFIXES
        ]
    if authz_port:
        clusters.append(_cluster("authz", authz_port))
    if ratelimit_ports:
        clusters.append(_cluster("ratelimit", *ratelimit_ports))
    # streams must not be cut by the default 15 s route timeout; the gateway enforces each
    # request's deadline itself
    to_gateway = {"cluster": "gateway", "timeout": "0s"}
    if authz_port:
        # exact paths: nothing else reaches the gateway without a key
        routes += [
            {"match": {"path": m}, "route": to_gateway, "typed_per_filter_config": ext_authz_disabled()}
            for m in KEYLESS_METHODS
        ]
    if otlp_port:
        clusters.append(_cluster("otel_collector", otlp_port))
    if console_port:
        clusters.append(_cluster("console", console_port, http2=False))
        routes += [{"match": {"prefix": p}, "route": to_gateway} for p in API_PREFIXES]
        # static files: no key, and no gRPC-JSON transcoding (its reject_unknown_method answers 404 to
        # every path that is not an RPC)
        routes.append({"match": {"prefix": "/"}, "route": {"cluster": "console"},
                       "typed_per_filter_config": {**ext_authz_disabled(), **transcoder_disabled()}})  # fmt: skip
    else:
        routes.append({"match": {"prefix": "/"}, "route": to_gateway})
    filters = edge_filters(
        Descriptor(path=descriptor_path), "authz" if authz_port else None, "ratelimit" if ratelimit_ports else None
    )
    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": "uplion_edge",
        "codec_type": "AUTO",  # HTTP/1.1 for REST clients, HTTP/2 for gRPC clients, one port
        "stream_idle_timeout": "600s",
        # the edge faces clients: it sets x-envoy-external-address and appends the peer to
        # x-forwarded-for itself, so services behind it (the accounts service's login limits) see
        # the real client address, never one a client wrote into those headers
        "use_remote_address": True,
        **connection_manager_settings(),  # header size bounds and their 431 in OpenAI's shape, x-request-id
        **(tracing_settings("otel_collector") if otlp_port else {}),
        "route_config": {"virtual_hosts": [{"name": "uplion", "domains": ["*"], "routes": routes}]},
        "http_filters": [*filters, router_filter()],
    }
    listener = {
        "name": "uplion_edge",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
        "per_connection_buffer_limit_bytes": 2 * MAX_BODY_BYTES,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    config = {"static_resources": {"listeners": [listener], "clusters": clusters}}
    return str(yaml.safe_dump(config, sort_keys=False))
