"""Inside the cluster nothing may act as a user (issue #13, hole 4): the mesh manifests require
mTLS and let only the written callers reach each service's API port; the ingress serves HTTPS and
plain HTTP only redirects. Read from the generated istio/manifests (what a cluster applies; the
deploy tests apply them to a real API server and run istioctl analyze on them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
INGRESS = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
GATEWAY = "cluster.local/ns/uplion/sa/uplion-gateway"
# service -> (API port, who may call it): the written list the manifests may not exceed
CALLERS = {
    "uplion-gateway": ("50051", {INGRESS}),
    "uplion-accounts": ("50061", {INGRESS}),
    "uplion-console": ("8090", {INGRESS}),
    "uplion-authz": ("9001", {INGRESS, GATEWAY}),
    "uplion-ratelimit": ("8081", {INGRESS, GATEWAY}),
}


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "istio" / "manifests" / name).read_text()) if d]


def test_mtls_is_strict_for_the_whole_namespace() -> None:
    peer = [d for d in docs("mesh-security.yaml") if d["kind"] == "PeerAuthentication"]
    assert len(peer) == 1
    assert peer[0]["metadata"]["namespace"] == "uplion"
    assert "selector" not in peer[0]["spec"]
    assert peer[0]["spec"]["mtls"] == {"mode": "STRICT"}


def test_each_api_port_admits_only_its_written_callers() -> None:
    policies = {d["metadata"]["name"]: d for d in docs("mesh-security.yaml") if d["kind"] == "AuthorizationPolicy"}
    for service, (port, callers) in CALLERS.items():
        spec = policies[service]["spec"]
        assert spec["action"] == "ALLOW"
        assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": service}
        api_rules = [r for r in spec["rules"] if port in r["to"][0]["operation"]["ports"]]
        assert len(api_rules) == 1, service
        assert set(api_rules[0]["from"][0]["source"]["principals"]) == callers, service
        # the only other rule opens the metrics port, never the API port
        others = [r for r in spec["rules"] if r is not api_rules[0]]
        assert [r["to"][0]["operation"]["ports"] for r in others] == [["9090"]]
    quiet = policies["uplion-metrics-only"]["spec"]
    assert quiet["rules"] == [{"to": [{"operation": {"ports": ["9090"]}}]}]


def test_the_ingress_serves_https_and_http_only_redirects() -> None:
    gateway = next(d for d in docs("gateway.yaml") if d["kind"] == "Gateway")
    servers = {s["port"]["protocol"]: s for s in gateway["spec"]["servers"]}
    assert set(servers) == {"HTTPS", "HTTP"}
    assert servers["HTTPS"]["tls"]["mode"] == "SIMPLE"
    assert servers["HTTPS"]["tls"]["credentialName"] == "uplion-tls"
    assert servers["HTTP"]["tls"] == {"httpsRedirect": True}
