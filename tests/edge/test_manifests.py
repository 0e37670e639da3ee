"""istio/manifests is what the generator writes from the current filters and descriptor."""

from __future__ import annotations

from pathlib import Path

import yaml

from uplion.edge.filters import connection_manager_settings, lua_source, rate_limit_actions
from uplion.edge.istio import render
from uplion.edge.local import local_envoy_config

ROOT = Path(__file__).resolve().parents[2]


def test_committed_istio_manifests_are_current() -> None:
    expected = render((ROOT / "gen" / "descriptor" / "uplion.pb").read_bytes())
    for name, text in expected.items():
        path = ROOT / "istio" / "manifests" / name
        assert path.read_text() == text, f"{path} is stale: run python -m uplion.edge.istio"


def test_envoyfilter_carries_the_same_filters_as_the_local_envoy() -> None:
    doc = yaml.safe_load((ROOT / "istio" / "manifests" / "envoyfilter-openai-edge.yaml").read_text())
    patches = doc["spec"]["configPatches"]
    # the gateway's connection manager gets the local Envoy's header bounds and their 431 body
    hcm = patches[0]
    assert (hcm["applyTo"], hcm["patch"]["operation"]) == ("NETWORK_FILTER", "MERGE")
    merged = hcm["patch"]["value"]["typed_config"]
    assert merged["@type"].endswith("HttpConnectionManager")
    assert {k: v for k, v in merged.items() if k != "@type"} == connection_manager_settings()
    local = yaml.safe_load(local_envoy_config(1, 2, "d.pb", 3, 4, (5,)))
    local_hcm = local["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert {k: local_hcm[k] for k in connection_manager_settings()} == connection_manager_settings()
    values = [p["patch"]["value"] for p in patches[1:]]
    names = ["envoy.filters.http.lua", "envoy.filters.http.ratelimit", "envoy.filters.http.grpc_json_transcoder"]
    assert [v["name"] for v in values] == names
    assert values[0]["typed_config"]["default_source_code"]["inline_string"] == lua_source()
    assert values[1]["typed_config"]["rate_limits"] == rate_limit_actions()
    assert values[1]["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"].startswith(
        "outbound|8081||uplion-ratelimit."
    )
    assert values[2]["typed_config"]["services"] == ["uplion.v1.InferenceService", "uplion.v1.AdminService"]
    operations = [p["patch"]["operation"] for p in patches[1:]]
    # Lua first of all the gateway's filters: client-sent x-uplion-* headers are gone before Istio's
    # ext_authz or the rate limiter read any
    assert operations == ["INSERT_FIRST", "INSERT_BEFORE", "INSERT_BEFORE"]
    local_filters = [f["name"] for f in local_hcm["http_filters"]]
    assert local_filters[0] == "envoy.filters.http.lua"


def _istio_match(pattern: str, path: str) -> bool:
    """Istio's path match: exact, prefix (`abc*`), suffix (`*abc`) or any (`*`)."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return path.endswith(pattern[1:])
    return path == pattern


def test_the_same_paths_need_a_key_on_istio_and_on_the_local_envoy() -> None:
    """Istio's CUSTOM AuthorizationPolicy (ext_authz) covers exactly the paths for which the local
    Envoy's route keeps ext_authz on: server reflection needs a key, gRPC health checking does not,
    the admin API authenticates itself, the console's files are public."""
    policy = yaml.safe_load((ROOT / "istio" / "manifests" / "authorization-policy.yaml").read_text())
    [rule] = policy["spec"]["rules"]
    [operation] = [t["operation"] for t in rule["to"]]

    def istio_needs_key(path: str) -> bool:
        return any(_istio_match(p, path) for p in operation["paths"]) and not any(
            _istio_match(p, path) for p in operation.get("notPaths", [])
        )

    local = yaml.safe_load(local_envoy_config(1, 2, "d.pb", 3, 4, (5,), console_port=6))
    hcm = local["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]

    def local_needs_key(path: str) -> bool:
        for route in routes:
            match = route["match"]
            if match.get("path") == path or ("prefix" in match and path.startswith(match["prefix"])):
                authz = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {})
                return not authz.get("disabled", False)
        raise AssertionError(f"no route for {path}")

    needs_key = {
        "/v1/chat/completions": True,
        "/v1/models": True,
        "/uplion.v1.InferenceService/CreateChatCompletion": True,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": True,
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": True,
        "/grpc.health.v1.Health/Check": False,
        "/grpc.health.v1.Health/Watch": False,
        "/grpc.health.v1.Health/List": True,  # not a probe: only Check and Watch are keyless
        "/admin/v1/users": False,
        "/uplion.v1.AdminService/ListUsers": False,
        "/": False,
        "/assets/index.js": False,
    }
    assert {p: istio_needs_key(p) for p in needs_key} == needs_key
    assert {p: local_needs_key(p) for p in needs_key} == needs_key
