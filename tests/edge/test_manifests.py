"""istio/manifests is what the generator writes from the current filters and descriptor."""

from __future__ import annotations

from pathlib import Path

import yaml

from uplion.edge.filters import lua_source, rate_limit_actions
from uplion.edge.istio import render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_istio_manifests_are_current() -> None:
    expected = render((ROOT / "gen" / "descriptor" / "uplion.pb").read_bytes())
    for name, text in expected.items():
        path = ROOT / "istio" / "manifests" / name
        assert path.read_text() == text, f"{path} is stale: run python -m uplion.edge.istio"


def test_envoyfilter_carries_the_same_filters_as_the_local_envoy() -> None:
    doc = yaml.safe_load((ROOT / "istio" / "manifests" / "envoyfilter-openai-edge.yaml").read_text())
    values = [p["patch"]["value"] for p in doc["spec"]["configPatches"]]
    names = ["envoy.filters.http.lua", "envoy.filters.http.ratelimit", "envoy.filters.http.grpc_json_transcoder"]
    assert [v["name"] for v in values] == names
    assert values[0]["typed_config"]["default_source_code"]["inline_string"] == lua_source()
    assert values[1]["typed_config"]["rate_limits"] == rate_limit_actions()
    assert values[1]["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"].startswith(
        "outbound|8081||uplion-ratelimit."
    )
    assert values[2]["typed_config"]["services"] == ["uplion.v1.InferenceService", "uplion.v1.AdminService"]
    operations = [p["patch"]["operation"] for p in doc["spec"]["configPatches"]]
    assert operations == ["INSERT_FIRST", "INSERT_BEFORE", "INSERT_BEFORE"]
