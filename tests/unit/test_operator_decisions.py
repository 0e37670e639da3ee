"""The operator's decisions as pure functions: children from a spec, status from observations."""

from __future__ import annotations

from typing import Any

from uplion.core.aimodels import Platform, worker_env
from uplion.operator.children import deployment, scaled_object, secret_versions
from uplion.operator.status import Observed, compute, failure_from_event, failure_still_holds, spec_digest

PLATFORM = Platform("pulsar://p:6650", "http://p:8080")


def body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "u1", "generation": 2},
            "spec": {"type": "local", "model": "m", **spec}}  # fmt: skip


def test_the_operators_settings_win_over_extra_env() -> None:
    env = {e["name"]: e for e in worker_env(body(env=[{"name": "UPLION_MODEL", "value": "evil"},
                                                      {"name": "X", "value": "1"}]), PLATFORM)}  # fmt: skip
    assert env["UPLION_MODEL"]["value"] == "m"
    assert env["X"]["value"] == "1"


def test_remote_keys_come_from_secrets_only() -> None:
    b = body(type="remote", baseURL="https://x/v1", apiKeys=[{"secretName": "s", "key": "k1"}])
    env = {e["name"]: e for e in worker_env(b, PLATFORM)}
    assert env["UPLION_API_KEY_0"]["valueFrom"]["secretKeyRef"] == {"name": "s", "key": "k1"}
    assert "value" not in env["UPLION_API_KEY_0"]


def test_secret_changes_change_the_pod_template() -> None:
    b = body(type="remote", baseURL="https://x/v1", apiKeys=[{"secretName": "s", "key": "k1"}])
    one, two = secret_versions(b, {"s": "10"}), secret_versions(b, {"s": "11"})
    assert one != two
    assert deployment(b, PLATFORM, one)["spec"]["template"] != deployment(b, PLATFORM, two)["spec"]["template"]


def test_no_threshold_no_scaledobject_and_scale_to_zero_by_default() -> None:
    assert scaled_object(body(), PLATFORM) is None
    so = scaled_object(body(msgBacklogThreshold=10), PLATFORM)
    assert so is not None
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["scaleTargetRef"]["kind"] == "AIModel"


def test_replica_changes_do_not_clear_a_failure_but_spec_changes_do() -> None:
    spec = {"type": "local", "model": "m", "replicas": 1}
    failure = failure_from_event({"reason": "ConfigurationError", "message": "x"}, spec, "v1", "t")
    assert failure_still_holds(failure, {**spec, "replicas": 5}, "v1")  # KEDA scaled it: still broken
    assert not failure_still_holds(failure, {**spec, "modelPath": "/m"}, "v1")
    assert not failure_still_holds(failure, spec, "v2")  # a Secret changed
    assert spec_digest(spec) == spec_digest({**spec, "replicas": 0})


def test_states() -> None:
    spec = {"type": "local", "model": "m", "replicas": 2}

    def state(ready: int, failure: dict[str, Any] | None = None, **over: Any) -> str:
        o = Observed(3, {**spec, **over}, "v", 2, ready, failure)
        return str(compute(o, "sel", "now")["state"])

    assert state(0) == "Pending"
    assert state(1) == "Running"
    assert state(0, replicas=0) == "Running"
    failure = failure_from_event({"reason": "AuthenticationError", "message": "401"}, spec, "v", "t")
    assert state(2, failure) == "Failed"
    status = compute(Observed(3, spec, "v", 2, 2, failure), "sel", "now")
    assert (status["reason"], status["observedGeneration"], status["selector"]) == ("AuthenticationError", 3, "sel")
    kept = compute(Observed(3, spec, "v", 2, 2, None), "sel", "later",
                   [{"type": "Ready", "status": "True", "lastTransitionTime": "before"}])  # fmt: skip
    assert kept["conditions"][0]["lastTransitionTime"] == "before"


def test_worker_events_name_the_model_and_the_config_they_are_about() -> None:
    from uplion.worker.k8s_events import DIGEST_ANNOTATION, EventReporter

    assert EventReporter.from_env({}) is None  # not running for an AIModel: nothing to report
    env = {"UPLION_AIMODEL_NAME": "m", "UPLION_AIMODEL_NAMESPACE": "ns", "UPLION_AIMODEL_UID": "u1",
           "UPLION_CONFIG_DIGEST": "d1", "UPLION_WORKER_ID": "w"}  # fmt: skip
    r = EventReporter.from_env(env)
    assert r is not None
    e = r.body("AuthenticationError", "401 from the provider", warning=True)
    assert e["involvedObject"] == {"apiVersion": "uplion.io/v1alpha1", "kind": "AIModel", "name": "m",
                                   "namespace": "ns", "uid": "u1"}  # fmt: skip
    assert (e["type"], e["reason"]) == ("Warning", "AuthenticationError")
    assert e["metadata"]["annotations"][DIGEST_ANNOTATION] == "d1"
    assert r.body("Healthy", "ok", warning=False)["type"] == "Normal"


def test_the_oldest_live_aimodel_owns_a_model_name() -> None:
    from uplion.operator.ownership import queue_owner

    def m(ns: str, name: str, model: str, created: str, deleting: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"namespace": ns, "name": name, "creationTimestamp": created}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-02T00:00:00Z"
        return {"metadata": meta, "spec": {"model": model}}

    models = [
        m("b", "x", "gpt", "2026-01-01T00:00:02Z"),
        m("a", "y", "gpt", "2026-01-01T00:00:02Z"),
        m("c", "z", "gpt", "2026-01-01T00:00:01Z", deleting=True),
        m("d", "w", "other", "2025-01-01T00:00:00Z"),
    ]
    assert queue_owner("gpt", models) == ("a", "y")  # same age: namespace order; a deleting one serves nothing
    assert queue_owner("other", models) == ("d", "w")
    assert queue_owner("none", models) is None
    # the AIModel serving a name keeps it, even against an older one asking for it later
    models[0]["metadata"]["annotations"] = {"uplion.io/serves-model": "gpt"}
    assert queue_owner("gpt", [*models, m("0", "old", "gpt", "2020-01-01T00:00:00Z")]) == ("b", "x")
