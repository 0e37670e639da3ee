"""One mapping from an AIModel spec to worker settings: the operator's Deployment and the local
runner's process environment agree for every spec of a set (pod-only identity aside), and specs
the CRD would refuse are refused locally with the same rules."""

from __future__ import annotations

from typing import Any

import pytest

from uplion.core.aimodels import Platform, local_secret_variable, resolve_env, spec_problems
from uplion.devstack.local_models import desired
from uplion.operator.children import deployment

PLATFORM = Platform("pulsar://broker:6650", "http://broker:8080")
SECRETS = {"UPLION_SECRET_OPENAI_API_KEY": "sk-a", "UPLION_SECRET_POOL_SECOND": "sk-b"}
POD_ONLY = {"UPLION_WORKER_ID", "UPLION_AIMODEL_NAMESPACE", "UPLION_AIMODEL_UID", "UPLION_HEALTH_PORT",
            "UPLION_METRICS_PORT", "UPLION_WORKER_JOURNAL_DIR"}  # fmt: skip
SPECS: list[dict[str, Any]] = [
    {"type": "echo", "model": "echo"},
    {"type": "echo", "model": "echo-fast", "maxProcessNum": 16, "replicas": 3},
    {"type": "local", "model": "minilm", "modelPath": "package:all-MiniLM-L6-v2"},
    {"type": "remote", "model": "gpt-4o-mini", "baseURL": "https://api.openai.com/v1", "maxProcessNum": 32,
     "apiKeys": [{"secretName": "openai", "key": "api-key"}, {"secretName": "pool", "key": "second"}]},
    {"type": "remote", "model": "alias", "baseURL": "http://vllm:8000/v1", "upstreamModel": "meta/llama-3",
     "apiKeys": [{"secretName": "openai", "key": "api-key"}],
     "env": [{"name": "UPLION_UPSTREAM_TIMEOUT_S", "value": "30"}, {"name": "UPLION_MODEL", "value": "evil"}]},
]  # fmt: skip


def pod_secret(name: str, key: str) -> str | None:
    """What the kubelet would put in the variable: the same key the local stack reads from its env."""
    return SECRETS.get(local_secret_variable(name, key))


@pytest.mark.parametrize("spec", SPECS, ids=[s["model"] for s in SPECS])
def test_operator_and_local_runner_give_workers_the_same_settings(spec: dict[str, Any]) -> None:
    body = {"metadata": {"name": spec["model"], "namespace": "models", "uid": "u-1"}, "spec": spec}
    container = deployment(body, PLATFORM, "digest")["spec"]["template"]["spec"]["containers"][0]
    in_cluster = resolve_env(container["env"], pod_secret, {})
    local = desired(body, PLATFORM, SECRETS)
    assert {k: v for k, v in in_cluster.items() if k not in POD_ONLY} == {
        k: v for k, v in local.env.items() if k not in POD_ONLY
    }
    assert local.env["UPLION_MODEL"] == spec["model"]  # the platform's settings win over spec.env
    assert local.replicas == spec.get("replicas", 1)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"type": "gpu", "model": "m"}, "spec.type"),
        ({"type": "echo", "model": "bad name"}, "spec.model"),
        ({"type": "remote", "model": "r", "apiKeys": [{"secretName": "s", "key": "k"}]}, "baseURL"),
        ({"type": "remote", "model": "r", "baseURL": "https://x/v1"}, "apiKeys"),
        ({"type": "echo", "model": "m", "minReplicas": 3, "maxReplicas": 2}, "minReplicas"),
        ({"type": "echo", "model": "m", "maxProcessNum": 0}, "maxProcessNum"),
        ({"type": "echo", "model": "m", "activationMsgBacklogThreshold": 1}, "msgBacklogThreshold"),
        ({"type": "echo", "model": "m", "env": [{"name": "1BAD"}]}, "env[0]"),
    ],
)
def test_specs_the_crd_refuses_are_refused_locally(spec: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in spec_problems(spec))
    assert spec_problems({"type": "echo", "model": "fine"}) == []


def test_output_caps_come_from_the_spec_with_the_crds_default() -> None:
    from uplion.core.aimodels import DEFAULT_MAX_OUTPUT_TOKENS, limits_of

    assert limits_of({"type": "echo", "model": "m"}).max_output_tokens == DEFAULT_MAX_OUTPUT_TOKENS == 4096
    assert limits_of({"type": "echo", "model": "m", "maxOutputTokens": 7}).max_output_tokens == 7
    assert any("maxOutputTokens" in p for p in spec_problems({"type": "echo", "model": "m", "maxOutputTokens": 0}))
