"""The bootstrap for a local Envoy in front of one gateway (tests, benchmarks, run.sh)."""

from __future__ import annotations

from typing import Any

import yaml

from .filters import MAX_BODY_BYTES, Descriptor, edge_filters, router_filter

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def local_envoy_config(listen_port: int, gateway_port: int, descriptor_path: str) -> str:
    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": "uplion_edge",
        "codec_type": "AUTO",  # HTTP/1.1 for REST clients, HTTP/2 for gRPC clients, one port
        "stream_idle_timeout": "600s",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "uplion",
                    "domains": ["*"],
                    # streams must not be cut by the default 15 s route timeout; the gateway
                    # enforces each request's deadline itself
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "gateway", "timeout": "0s"}}],
                }
            ]
        },
        "http_filters": [*edge_filters(Descriptor(path=descriptor_path)), router_filter()],
    }
    config = {
        "static_resources": {
            "listeners": [
                {
                    "name": "uplion_edge",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "per_connection_buffer_limit_bytes": 2 * MAX_BODY_BYTES,
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "gateway",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "per_connection_buffer_limit_bytes": 2 * MAX_BODY_BYTES,
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "gateway",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": "127.0.0.1", "port_value": gateway_port}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        }
    }
    return str(yaml.safe_dump(config, sort_keys=False))
