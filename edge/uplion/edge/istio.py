"""Istio resources for a cluster, generated from the same filter chain as the local Envoy.

    python -m uplion.edge.istio --out istio/manifests

The test command fails when istio/manifests differs from what this writes.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

import yaml

from .filters import (
    ADMIN_PREFIXES,
    API_PREFIXES,
    KEYLESS_METHODS,
    Descriptor,
    connection_manager_settings,
    lua_filter,
    ratelimit_filter,
    transcoder_filter,
)
from .local import HCM_TYPE

NAMESPACE = "uplion"
GATEWAY_SERVICE = "uplion-gateway"
GATEWAY_PORT = 50051
ACCOUNTS_SERVICE = "uplion-accounts"
ACCOUNTS_PORT = 50061
CONSOLE_SERVICE = "uplion-console"
CONSOLE_PORT = 8090
AUTHZ_PROVIDER = "uplion-ext-authz"
AUTHZ_SERVICE = "uplion-authz"
AUTHZ_PORT = 9001
RATELIMIT_SERVICE = "uplion-ratelimit"
RATELIMIT_PORT = 8081
METRICS_PORT = 9090  # every service's Prometheus /metrics (UPLION_METRICS_PORT in the chart)
TLS_SECRET = "uplion-tls"  # noqa: S105 (a Secret's name) kubernetes.io/tls Secret in istio-system: the ingress's certificate
# the identity of Istio's ingress gateway (istioctl's default profile; the `gateway` Helm chart
# names the ServiceAccount after its release)
INGRESS_PRINCIPAL = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
# the cluster Istio makes for a Kubernetes service
RATELIMIT_CLUSTER = f"outbound|{RATELIMIT_PORT}||{RATELIMIT_SERVICE}.{NAMESPACE}.svc.cluster.local"


def _gateway_and_routes() -> list[dict[str, Any]]:
    host = f"{GATEWAY_SERVICE}.{NAMESPACE}.svc.cluster.local"
    console = f"{CONSOLE_SERVICE}.{NAMESPACE}.svc.cluster.local"
    accounts = f"{ACCOUNTS_SERVICE}.{NAMESPACE}.svc.cluster.local"
    admin_routes = [
        {
            "match": [{"uri": {"prefix": p}} for p in ADMIN_PREFIXES],
            "route": [{"destination": {"host": accounts, "port": {"number": ACCOUNTS_PORT}}}],
        }
    ]
    return [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "uplion", "namespace": NAMESPACE},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [
                    {
                        "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                        "hosts": ["*"],
                        "tls": {"mode": "SIMPLE", "credentialName": TLS_SECRET, "minProtocolVersion": "TLSV1_2"},
                    },
                    # plain HTTP only redirects: keys never cross the network in clear text
                    {
                        "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                        "hosts": ["*"],
                        "tls": {"httpsRedirect": True},
                    },
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "uplion", "namespace": NAMESPACE},
            "spec": {
                "hosts": ["*"],
                "gateways": ["uplion"],
                "http": [
                    *admin_routes,
                    {
                        "match": [{"uri": {"prefix": p}} for p in API_PREFIXES],
                        "route": [{"destination": {"host": host, "port": {"number": GATEWAY_PORT}}}],
                        # no "timeout": Istio's default is none, so streams are not cut (the gateway
                        # bounds every request's deadline); Istio's CRD refuses "0s" (at least 1ms)
                    },
                    {  # the web console: every other path (public assets; it calls the APIs above)
                        "match": [{"uri": {"prefix": "/"}}],
                        "route": [{"destination": {"host": console, "port": {"number": CONSOLE_PORT}}}],
                    },
                ],
            },
        },
    ]


HCM_NAME = "envoy.filters.network.http_connection_manager"


def _patch(operation: str, value: dict[str, Any]) -> dict[str, Any]:
    hcm: dict[str, Any] = {"name": HCM_NAME}
    if operation == "INSERT_BEFORE":
        hcm["subFilter"] = {"name": "envoy.filters.http.router"}
    return {
        "applyTo": "HTTP_FILTER",
        "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": hcm}}},
        "patch": {"operation": operation, "value": value},
    }


def _connection_manager_patch() -> dict[str, Any]:
    """The gateway's HTTP connection manager gets the local Envoy's settings (header bounds, 431 body, x-request-id)."""
    settings = {"@type": HCM_TYPE, **connection_manager_settings()}
    return {
        "applyTo": "NETWORK_FILTER",
        "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": {"name": HCM_NAME}}}},
        "patch": {"operation": "MERGE", "value": {"typed_config": settings}},
    }


def _edge_envoyfilter(descriptor_b64: str) -> dict[str, Any]:
    # the same order as the local Envoy: Lua first (before Istio's ext_authz: it removes client-sent
    # x-uplion-* headers before any filter reads one, and its errors leave in OpenAI's shape too),
    # then (after ext_authz) the rate limiter, the transcoder last before the router
    patches = [
        _connection_manager_patch(),
        _patch("INSERT_FIRST", lua_filter()),
        _patch("INSERT_BEFORE", ratelimit_filter(RATELIMIT_CLUSTER)),
        _patch("INSERT_BEFORE", transcoder_filter(Descriptor(inline_b64=descriptor_b64))),
    ]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "uplion-openai-edge", "namespace": "istio-system"},
        "spec": {"workloadSelector": {"labels": {"istio": "ingressgateway"}}, "configPatches": patches},
    }


def _authorization() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "uplion-api-keys", "namespace": "istio-system"},
            "spec": {
                "selector": {"matchLabels": {"istio": "ingressgateway"}},
                "action": "CUSTOM",
                "provider": {"name": AUTHZ_PROVIDER},
                # every path the gateway serves, REST and native gRPC (server reflection included),
                # as on the local edge: not the admin API (it authenticates itself), not gRPC health
                # checking (probes carry no key), not the console's public files
                "rules": [
                    {
                        "to": [
                            {
                                "operation": {
                                    "paths": [f"{p}*" for p in API_PREFIXES],
                                    "notPaths": [*(f"{p}*" for p in ADMIN_PREFIXES), *KEYLESS_METHODS],
                                }
                            }
                        ]
                    }
                ],
            },
        }
    ]


def _allow(name: str, callers: list[str], port: int) -> dict[str, Any]:
    """An ALLOW policy on one service's pods: its API port only from `callers` (mTLS identities),
    its metrics port from any peer in the mesh; any other request to those pods is denied."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "action": "ALLOW",
            "rules": [
                {"from": [{"source": {"principals": callers}}], "to": [{"operation": {"ports": [str(port)]}}]},
                {"to": [{"operation": {"ports": [str(METRICS_PORT)]}}]},
            ],
        },
    }


def _mesh_security() -> list[dict[str, Any]]:
    """Inside the cluster nothing may act as a user: mTLS is required between uplion's pods, and only
    the ingress gateway reaches the gateway, the accounts service and the console; only the ingress
    and the gateway reach authz and the rate limiter. The services that serve nothing (billing, the
    settler, the operator, workers) accept only metrics scrapes."""
    gateway = f"cluster.local/ns/{NAMESPACE}/sa/{GATEWAY_SERVICE}"
    peer = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": NAMESPACE}, "spec": {"mtls": {"mode": "STRICT"}}}  # fmt: skip
    # namespace-wide (Istio's workload selector has matchLabels only): ALLOW policies add up, so the
    # services above keep their callers and every other workload (billing, the settler, the
    # operator) accepts metrics scrapes only
    quiet = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "uplion-metrics-only", "namespace": NAMESPACE},
        "spec": {"action": "ALLOW", "rules": [{"to": [{"operation": {"ports": [str(METRICS_PORT)]}}]}]},
    }
    return [
        peer,
        _allow(GATEWAY_SERVICE, [INGRESS_PRINCIPAL], GATEWAY_PORT),
        _allow(ACCOUNTS_SERVICE, [INGRESS_PRINCIPAL], ACCOUNTS_PORT),
        _allow(CONSOLE_SERVICE, [INGRESS_PRINCIPAL], CONSOLE_PORT),
        _allow(AUTHZ_SERVICE, [INGRESS_PRINCIPAL, gateway], AUTHZ_PORT),
        _allow(RATELIMIT_SERVICE, [INGRESS_PRINCIPAL, gateway], RATELIMIT_PORT),
        quiet,
    ]


def mesh_config_snippet() -> dict[str, Any]:
    """The MeshConfig `extensionProviders` entry naming uplion's ext_authz service (gRPC)."""
    return {
        "extensionProviders": [
            {
                "name": AUTHZ_PROVIDER,
                "envoyExtAuthzGrpc": {
                    "service": f"{AUTHZ_SERVICE}.{NAMESPACE}.svc.cluster.local",
                    "port": AUTHZ_PORT,
                    "timeout": "0.5s",
                    "failOpen": False,
                    "statusOnError": "503",
                },
            }
        ]
    }


def render(descriptor: bytes) -> dict[str, str]:
    b64 = base64.b64encode(descriptor).decode()
    header = "# Generated by `python -m uplion.edge.istio`; do not edit (the test command checks it).\n"

    def docs(items: list[dict[str, Any]]) -> str:
        return header + "---\n".join(yaml.safe_dump(i, sort_keys=False) for i in items)

    return {
        "gateway.yaml": docs(_gateway_and_routes()),
        "envoyfilter-openai-edge.yaml": docs([_edge_envoyfilter(b64)]),
        "authorization-policy.yaml": docs(_authorization()),
        "mesh-security.yaml": docs(_mesh_security()),
        "meshconfig-extension-providers.yaml": header + yaml.safe_dump({"meshConfig": mesh_config_snippet()}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[3]
    parser.add_argument("--out", type=Path, default=root / "istio" / "manifests")
    parser.add_argument("--descriptor", type=Path, default=root / "gen" / "descriptor" / "uplion.pb")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in render(args.descriptor.read_bytes()).items():
        (args.out / name).write_text(text)


if __name__ == "__main__":
    main()
