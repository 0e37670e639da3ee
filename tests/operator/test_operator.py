"""The AIModel operator on a real API server: schema, children, scale subresource, KEDA's object,
Events → Failed → fix → Running, readiness, deletion and restarts."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pulsar
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube_api import apply_manifests, eventually
from uplion.devstack.pulsar import Pulsar
from uplion.worker.k8s_events import EventReporter

from .conftest import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorProc,
    aimodel,
    create_model,
    get_model,
    models,
)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"type": "cloud"}, "Unsupported value"),
        ({"model": "bad model!"}, "should match"),
        ({"replicas": -1}, "should be greater than or equal to 0"),
        ({"type": "remote", "baseURL": "https://api.example.com/v1"}, "needs apiKeys"),
        ({"type": "remote", "apiKeys": [{"secretName": "s", "key": "k"}]}, "needs baseURL"),
        ({"minReplicas": 3, "maxReplicas": 2}, "must not exceed"),
        ({"activationMsgBacklogThreshold": 1}, "needs msgBacklogThreshold"),
        ({"apiKey": "sk-plain-text"}, 'unknown field \\"spec.apiKey'),
        ({"apiKeys": [{"secretName": "s"}]}, "Required value"),
    ],
)
def test_schema_rejects_invalid_specs(kube: Any, namespace: str, spec: dict[str, Any], why: str) -> None:
    with pytest.raises(ApiException) as e:
        create_model(namespace, aimodel("bad", **spec))
    assert e.value.status in (400, 422)  # 400: strict field validation; 422: schema and CEL rules
    assert why in e.value.body


def _deployment(ns: str, name: str) -> client.V1Deployment:
    return eventually(lambda: client.AppsV1Api().read_namespaced_deployment(f"aimodel-{name}", ns))


def _env(dep: client.V1Deployment) -> dict[str, Any]:
    return {e.name: e for e in dep.spec.template.spec.containers[0].env}


def test_children_carry_the_spec(operator_proc: OperatorProc, namespace: str, broker: Pulsar) -> None:
    client.CoreV1Api().create_namespaced_secret(namespace, {"metadata": {"name": "keys"},
                                                            "stringData": {"a": "sk-a", "b": "sk-b"}})  # fmt: skip
    body = aimodel("gpt", type="remote", baseURL="https://api.example.com/v1", replicas=2, maxProcessNum=8,
                   apiKeys=[{"secretName": "keys", "key": "a"}, {"secretName": "keys", "key": "b"}],
                   msgBacklogThreshold=5, activationMsgBacklogThreshold=1, minReplicas=0, maxReplicas=4,
                   resources={"limits": {"cpu": "2"}}, env=[{"name": "EXTRA", "value": "1"}])  # fmt: skip
    created = create_model(namespace, body)
    dep = _deployment(namespace, "gpt")
    owner = dep.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("AIModel", "gpt", created["metadata"]["uid"], True)
    assert dep.spec.replicas == 2
    pod = dep.spec.template.spec
    assert pod.service_account_name == "aimodel-gpt"
    env = _env(dep)
    assert env["UPLION_MODEL"].value == "gpt"
    assert env["UPLION_MODEL_TYPE"].value == "remote"
    assert env["UPLION_MAX_PROCESS_NUM"].value == "8"
    assert env["UPLION_BASE_URL"].value == "https://api.example.com/v1"
    assert env["UPLION_PULSAR_URL"].value == broker.service_url
    assert env["UPLION_API_KEY_0"].value_from.secret_key_ref.name == "keys"
    assert env["UPLION_API_KEY_1"].value_from.secret_key_ref.key == "b"
    assert "sk-a" not in json.dumps(client.ApiClient().sanitize_for_serialization(dep))  # keys stay in the Secret
    assert env["EXTRA"].value == "1"
    assert pod.containers[0].resources.limits == {"cpu": "2"}
    role = client.RbacAuthorizationV1Api().read_namespaced_role("aimodel-gpt", namespace)
    assert role.rules[0].resources == ["events"]
    assert set(role.rules[0].verbs) == {"create"}  # workers post Events and nothing else
    binding = client.RbacAuthorizationV1Api().read_namespaced_role_binding("aimodel-gpt", namespace)
    assert binding.subjects[0].name == "aimodel-gpt"
    client.CoreV1Api().read_namespaced_service_account("aimodel-gpt", namespace)
    scaled = eventually(lambda: _scaled_object(namespace, "aimodel-gpt"))
    # exactly what KEDA's pulsar scaler reads, aimed at the AIModel's scale subresource; the broker
    # has authentication, so the trigger reads with the workers' token (test_worker_tokens.py)
    assert scaled["spec"] == {
        "scaleTargetRef": {"apiVersion": "uplion.io/v1alpha1", "kind": "AIModel", "name": "gpt"},
        "minReplicaCount": 0,
        "maxReplicaCount": 4,
        "triggers": [{"type": "pulsar", "metadata": {
            "adminURL": broker.admin_url,
            "topic": "persistent://public/default/model-gpt",
            "subscription": "model-gpt-subscription",
            "msgBacklogThreshold": "5",
            "activationMsgBacklogThreshold": "1",
            "isPartitionedTopic": "false",
            "authModes": "bearer",
        }, "authenticationRef": {"name": "aimodel-gpt", "kind": "TriggerAuthentication"}}],
    }  # fmt: skip
    assert scaled["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    # without a threshold the ScaledObject goes away, and KEDA's credentials with it
    removal = {"spec": {"msgBacklogThreshold": None, "activationMsgBacklogThreshold": None}}  # a merge patch
    models().patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gpt", removal)
    eventually(lambda: _gone(lambda: _scaled_object(namespace, "aimodel-gpt")))
    eventually(lambda: _gone(lambda: _trigger_auth(namespace, "aimodel-gpt")))


def _scaled_object(ns: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = models().get_namespaced_custom_object("keda.sh", "v1alpha1", ns, "scaledobjects", name)
    return out


def _trigger_auth(ns: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = models().get_namespaced_custom_object("keda.sh", "v1alpha1", ns, "triggerauthentications",
                                                                name)  # fmt: skip
    return out


def _gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as e:
        return bool(e.status == 404)
    return False


def test_scale_subresource_drives_the_deployment(operator_proc: OperatorProc, namespace: str) -> None:
    create_model(namespace, aimodel("scaled", replicas=1))
    _deployment(namespace, "scaled")
    api = models()
    api.patch_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "scaled", {"spec": {"replicas": 3}})
    assert get_model(namespace, "scaled")["spec"]["replicas"] == 3
    eventually(lambda: client.AppsV1Api().read_namespaced_deployment("aimodel-scaled", namespace).spec.replicas == 3)

    def scale_with_selector() -> dict[str, Any] | None:
        s: dict[str, Any] = api.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "scaled")
        return s if s["status"].get("selector") else None

    scale = eventually(scale_with_selector)
    assert scale["status"]["selector"] == "uplion.io/aimodel=scaled"
    assert scale["spec"]["replicas"] == 3


def _status(ns: str, name: str, state: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        s: dict[str, Any] = get_model(ns, name).get("status") or {}
        return s if s.get("state") == state else None

    return eventually(reached)


def _reporter(ns: str, name: str) -> EventReporter:
    """The worker's own event poster, configured the way the operator configures a worker pod."""
    dep = _deployment(ns, name)
    env = {k: v.value for k, v in _env(dep).items() if v.value is not None}
    env["UPLION_AIMODEL_NAMESPACE"] = ns
    reporter = EventReporter.from_env(env)
    assert reporter is not None
    return reporter


def test_worker_events_fail_the_model_and_a_fix_brings_it_back(
    operator_proc: OperatorProc, namespace: str, kube: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    core = client.CoreV1Api()
    core.create_namespaced_secret(namespace, {"metadata": {"name": "k"}, "stringData": {"key": "sk-bad"}})
    create_model(namespace, aimodel("m1", type="remote", baseURL="https://api.example.com/v1", replicas=0,
                                    apiKeys=[{"secretName": "k", "key": "key"}]))  # fmt: skip
    _status(namespace, "m1", "Running")  # scaled to zero: nothing to wait for
    before = _reporter(namespace, "m1")
    before.post_now("AuthenticationError", "the provider refused the API key (401)")
    failed = _status(namespace, "m1", "Failed")
    assert failed["reason"] == "AuthenticationError"
    assert "401" in failed["message"]
    assert failed["conditions"][0]["type"] == "Ready"
    assert failed["conditions"][0]["status"] == "False"
    # fixing the Secret rolls the workers (new config digest) and clears the failure
    core.patch_namespaced_secret("k", namespace, {"stringData": {"key": "sk-good"}})
    running = _status(namespace, "m1", "Running")
    assert running.get("failure") is None
    after = _reporter(namespace, "m1")
    assert after.digest != before.digest
    # a late report from a worker that still had the old key changes nothing
    before.post_now("AuthenticationError", "old pod")
    assert get_model(namespace, "m1")["status"]["state"] == "Running"
    # a spec fix works the same way; and workers reporting healthy clear a failure too
    after.post_now("APIQuotaExceededError", "provider quota exhausted")
    _status(namespace, "m1", "Failed")
    after.post_now("Healthy", "serving again", warning=False)
    _status(namespace, "m1", "Running")
    after.post_now("ConfigurationError", "bad base URL")
    _status(namespace, "m1", "Failed")
    models().patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "m1",
                                            {"spec": {"baseURL": "https://api.example.org/v1"}})  # fmt: skip
    _status(namespace, "m1", "Running")


def test_a_model_that_cannot_load_fails_its_aimodel_with_the_reason(
    operator_proc: OperatorProc, namespace: str, kube: Any, tmp_path: Path
) -> None:
    create_model(namespace, aimodel("badpath", replicas=0, modelPath="/nonexistent/model"))
    _status(namespace, "badpath", "Running")  # scaled to zero
    dep = _deployment(namespace, "badpath")
    env = {k: v.value for k, v in _env(dep).items() if v.value is not None}
    # the worker pod's settings, run here as a process (no kubelet); its ports are not needed, and
    # its Pulsar token Secret is "mounted" where the kubelet would not put it here
    token = client.CoreV1Api().read_namespaced_secret("aimodel-badpath-pulsar-token", namespace).data["token"]
    (tmp_path / "token").write_bytes(base64.b64decode(token))
    assert env["UPLION_PULSAR_TOKEN_FILE"] == "/var/run/secrets/uplion/pulsar/token"
    env.update({"UPLION_AIMODEL_NAMESPACE": namespace, "UPLION_HEALTH_PORT": "0", "UPLION_METRICS_PORT": "0",
                "KUBECONFIG": str(kube.kubeconfig), "UPLION_PULSAR_TOKEN_FILE": str(tmp_path / "token")})  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "uplion.worker"], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    failed = _status(namespace, "badpath", "Failed")
    assert failed["reason"] == "ConfigurationError"
    assert "/nonexistent/model" in failed["message"]


def test_readiness_moves_pending_to_running(operator_proc: OperatorProc, namespace: str) -> None:
    create_model(namespace, aimodel("ready", replicas=1))
    pending = _status(namespace, "ready", "Pending")
    assert pending["readyReplicas"] == 0
    core = client.CoreV1Api()
    pod = eventually(lambda: core.list_namespaced_pod(namespace, label_selector="uplion.io/aimodel=ready").items)[0]
    # play the kubelet: the pod runs and is ready
    now = "2026-01-01T00:00:00Z"
    core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}]}})  # fmt: skip
    running = _status(namespace, "ready", "Running")
    assert running["readyReplicas"] == 1
    assert running["observedGeneration"] == get_model(namespace, "ready")["metadata"]["generation"]


def test_delete_removes_every_child(operator_proc: OperatorProc, namespace: str) -> None:
    create_model(namespace, aimodel("gone", replicas=0, msgBacklogThreshold=3))
    _deployment(namespace, "gone")
    eventually(lambda: _trigger_auth(namespace, "aimodel-gone"))
    models().delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")
    apps, core, rbac = client.AppsV1Api(), client.CoreV1Api(), client.RbacAuthorizationV1Api()
    for read in (lambda: apps.read_namespaced_deployment("aimodel-gone", namespace),
                 lambda: core.read_namespaced_service_account("aimodel-gone", namespace),
                 lambda: rbac.read_namespaced_role("aimodel-gone", namespace),
                 lambda: rbac.read_namespaced_role_binding("aimodel-gone", namespace),
                 lambda: core.read_namespaced_secret("aimodel-gone-pulsar-token", namespace),
                 lambda: _trigger_auth(namespace, "aimodel-gone"),
                 lambda: _scaled_object(namespace, "aimodel-gone")):  # fmt: skip
        eventually(lambda r=read: _gone(r), timeout=60)  # type: ignore[misc]


def _applied_at(obj: Any) -> tuple[int, Any]:
    """The generation and the time of the operator's last server-side apply that changed something
    (an apply that changes nothing leaves both; the controllers' status writes touch neither)."""
    times = [m.time for m in obj.metadata.managed_fields if (m.manager, m.operation) == ("uplion-operator", "Apply")]
    return obj.metadata.generation, times


def test_restart_converges_without_duplicates(operator_proc: OperatorProc, namespace: str) -> None:
    create_model(namespace, aimodel("steady", replicas=0, msgBacklogThreshold=2))
    _deployment(namespace, "steady")
    _status(namespace, "steady", "Running")
    core = client.CoreV1Api()
    token = eventually(lambda: core.read_namespaced_secret("aimodel-steady-pulsar-token", namespace))
    before = _applied_at(client.AppsV1Api().read_namespaced_deployment("aimodel-steady", namespace))
    operator_proc.restart()
    # the new process resumed this model (its reconcile ran again)
    resumed = '"name": "steady"'
    eventually(lambda: any("Resuming is processed" in line and resumed in line
                           for line in operator_proc.log.read_text().splitlines()))  # fmt: skip
    _status(namespace, "steady", "Running")
    deps = client.AppsV1Api().list_namespaced_deployment(namespace).items
    assert [d.metadata.name for d in deps] == ["aimodel-steady"]
    assert _applied_at(deps[0]) == before  # re-applying the same children changed nothing
    again = core.read_namespaced_secret("aimodel-steady-pulsar-token", namespace)
    assert again.metadata.resource_version == token.metadata.resource_version  # a valid token is not rewritten
    scaled = models().list_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects")["items"]
    assert [s["metadata"]["name"] for s in scaled] == ["aimodel-steady"]


def test_backlog_keda_reads_exists_and_grows(broker: Pulsar, kube: Any) -> None:
    """The number KEDA's pulsar scaler reads, where it reads it, on the real broker, while nothing
    consumes: /admin/v2/persistent/<tenant>/<ns>/<topic>/stats → subscriptions[<sub>].msgBacklog."""
    from uplion.core.aimodels import Platform
    from uplion.operator.children import scaled_object

    body = {"metadata": {"name": "backlog", "namespace": "x", "uid": "u"},
            "spec": {"type": "local", "model": "backlog-probe", "msgBacklogThreshold": 5}}  # fmt: skip
    so = scaled_object(body, Platform(broker.service_url, broker.admin_url))
    assert so is not None
    meta = so["spec"]["triggers"][0]["metadata"]
    topic = urlparse(meta["topic"])  # persistent://tenant/ns/name
    url = f"{meta['adminURL']}/admin/v2/persistent/{topic.netloc}{topic.path}/stats"
    c = pulsar.Client(broker.service_url, authentication=broker.authentication())
    c.subscribe(meta["topic"], meta["subscription"], consumer_type=pulsar.ConsumerType.Shared).close()
    producer = c.create_producer(meta["topic"])

    def backlog() -> int:
        # as KEDA's scaler with `authModes: bearer` would send it on a broker with authentication
        with urllib.request.urlopen(urllib.request.Request(url, headers=broker.admin_headers()), timeout=5) as r:
            return int(json.loads(r.read())["subscriptions"][meta["subscription"]]["msgBacklog"])

    try:
        start = backlog()
        for i in range(7):
            producer.send(f"task {i}".encode())
        assert eventually(lambda: backlog() >= start + 7)
    finally:
        c.close()


def test_deploy_manifests_apply_to_the_api_server(kube: Any) -> None:
    """deploy/operator.yaml and deploy/gateway-rbac.yaml are accepted as written (this session's
    throwaway API server keeps them; nothing runs them without a kubelet). The operator's own
    tests run it with exactly this RBAC (conftest.operator_kubeconfig)."""
    root = Path(__file__).resolve().parents[2] / "deploy"
    applied = apply_manifests(root / "operator.yaml") + apply_manifests(root / "gateway-rbac.yaml")
    assert {"ClusterRole", "ClusterRoleBinding", "RoleBinding", "Deployment", "ServiceAccount"} <= set(applied)
