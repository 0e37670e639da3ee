"""Per-model Pulsar worker tokens (docs/pulsar-auth.md, "In a cluster"): the operator, run with the
session broker's signing key and a superuser's token, mints each AIModel's token for
`uplion-worker-<model>`, stores it in a Secret the workers mount, hands it to KEDA, and grants and
revokes the role's permissions on the real broker, which runs with authentication and
authorization. A real Pulsar client with the token consumes its model's topic, is refused on
another model's, and is refused on its own once the AIModel is gone or renamed."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pulsar
import pytest
from google.protobuf import struct_pb2
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube_api import eventually
from uplion.core import pulsar_auth
from uplion.core.topics import Topics
from uplion.devstack.kube import Kube
from uplion.devstack.procs import spawn, wait_until
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import chat_pb2, task_pb2

from .conftest import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorProc,
    aimodel,
    create_model,
    get_model,
    managed_namespace,
    models,
    operator_env,
    spawn_operator,
)

TOPICS = Topics("public", "default")
REPLIES = Topics("public", "default", pulsar_auth.reply_namespace("default"))  # the operator's reply namespace
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def _model_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"  # model names are unique across the session's broker


def _token_secret(ns: str, name: str) -> client.V1Secret:
    return client.CoreV1Api().read_namespaced_secret(f"aimodel-{name}-pulsar-token", ns)


def _token_for(ns: str, name: str, key: bytes, model: str) -> str:
    """The token the model's Secret holds, once it is one for `model`'s role."""

    def current() -> str | None:
        token = base64.b64decode(_token_secret(ns, name).data["token"]).decode()
        return token if pulsar_auth.role_of(token, key) == pulsar_auth.worker_role(model) else None

    return eventually(current)


def _subscribe(broker: Pulsar, token: str, model: str) -> str:
    """Subscribe to `model`'s task topic on its workers' subscription as the holder of `token`:
    "ok", or the broker's refusal ("AuthorizationError")."""
    c = pulsar.Client(broker.service_url, authentication=pulsar.AuthenticationToken(token),
                      operation_timeout_seconds=15, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))  # fmt: skip
    try:
        c.subscribe(TOPICS.tasks(model), TOPICS.subscription(model), consumer_type=pulsar.ConsumerType.Shared).close()
        return "ok"
    except pulsar.AuthorizationError:
        return "AuthorizationError"
    finally:
        c.close()


def _produce(broker: Pulsar, token: str, topic: str) -> str:
    c = pulsar.Client(broker.service_url, authentication=pulsar.AuthenticationToken(token),
                      operation_timeout_seconds=15, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))  # fmt: skip
    try:
        c.create_producer(topic).close()
        return "ok"
    except pulsar.AuthorizationError:
        return "AuthorizationError"
    finally:
        c.close()


def _subscription_roles(broker: Pulsar, model: str) -> list[str]:
    """Who may use the model's durable subscription (Pulsar's subscription permissions)."""
    by_subscription = broker.admin_get("/admin/v2/namespaces/public/default/permissions/subscription")
    assert isinstance(by_subscription, dict)
    return sorted(by_subscription.get(TOPICS.subscription(model), []))


def _refused_eventually(broker: Pulsar, token: str, model: str, timeout: float = 30) -> None:
    """The broker applies a revoke through its policy cache: a moment after the call at most."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _subscribe(broker, token, model) == "AuthorizationError":
            return
        time.sleep(0.5)
    raise AssertionError(f"the token is still accepted on {TOPICS.tasks(model)} after {timeout}s")


def _keda_reads_stats(broker: Pulsar, scaled: dict[str, Any], token: str) -> dict[str, Any]:
    """The request KEDA's pulsar scaler makes with `authModes: bearer` (kedacore/keda
    pkg/scalers/pulsar_scaler.go: the stats URL, `Authorization: Bearer`, `X-Pulsar-Auth-Method-Name`)."""
    meta = scaled["spec"]["triggers"][0]["metadata"]
    url = f"{meta['adminURL']}/admin/v2/persistent/{meta['topic'].removeprefix('persistent://')}/stats"
    headers = {"Authorization": f"Bearer {token}", "X-Pulsar-Auth-Method-Name": "token"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
        out: dict[str, Any] = json.loads(resp.read())
    return out


def _custom(ns: str, plural: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = models().get_namespaced_custom_object("keda.sh", "v1alpha1", ns, plural, name)
    return out


def _condition(ns: str, name: str, status: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        conditions = (get_model(ns, name).get("status") or {}).get("conditions") or []
        found = [c for c in conditions if c["type"] == "PulsarAccess" and c["status"] == status]
        return found[0] if found else None

    return eventually(reached, timeout=60)


def test_each_model_gets_its_own_token_grants_and_keda_credentials(
    operator_proc: OperatorProc, namespace: str, broker: Pulsar
) -> None:
    assert broker.auth is not None
    key = broker.auth.key_file.read_bytes()
    model, other = _model_name("tok"), _model_name("tok-other")
    created = create_model(namespace, aimodel("tok", model=model, type="echo", replicas=0, msgBacklogThreshold=3))
    create_model(namespace, aimodel("tok-other", model=other, type="echo", replicas=0))

    # the Secret: a token whose role is the model's workers', owned by the AIModel
    token = _token_for(namespace, "tok", key, model)
    assert pulsar_auth.role_of(token, key) == f"uplion-worker-{model}"
    secret = _token_secret(namespace, "tok")
    assert secret.metadata.owner_references[0].uid == created["metadata"]["uid"]
    granted = _condition(namespace, "tok", "True")
    assert granted["reason"] == "Granted"

    # the workers mount it and read it from the file; it is no env value anywhere
    dep = client.AppsV1Api().read_namespaced_deployment("aimodel-tok", namespace)
    pod = dep.spec.template.spec
    env = {e.name: e for e in pod.containers[0].env}
    assert "UPLION_PULSAR_TOKEN" not in env
    mount = next(m for m in pod.containers[0].volume_mounts if env["UPLION_PULSAR_TOKEN_FILE"].value.startswith(
        m.mount_path + "/"))  # fmt: skip
    volume = next(v for v in pod.volumes if v.name == mount.name)
    assert volume.secret.secret_name == "aimodel-tok-pulsar-token"
    assert env["UPLION_PULSAR_TOKEN_FILE"].value == f"{mount.mount_path}/{volume.secret.items[0].path}"
    assert volume.secret.items[0].key == "token"
    assert token not in json.dumps(client.ApiClient().sanitize_for_serialization(dep))

    # KEDA: the ScaledObject's trigger names a TriggerAuthentication that points at the Secret, and
    # the token there reads the stats KEDA reads
    scaled = eventually(lambda: _custom(namespace, "scaledobjects", "aimodel-tok"))
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["metadata"]["authModes"] == "bearer"
    auth = _custom(namespace, "triggerauthentications", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "bearerToken", "name": "aimodel-tok-pulsar-token",
                                                "key": "token"}]  # fmt: skip

    # the grants on the real broker: the token consumes its model's tasks (a message the superuser
    # produced arrives), and is refused on another model's topic
    su = pulsar.Client(broker.service_url, authentication=broker.authentication())
    worker = pulsar.Client(broker.service_url, authentication=pulsar.AuthenticationToken(token))
    try:
        consumer = worker.subscribe(TOPICS.tasks(model), TOPICS.subscription(model),
                                    consumer_type=pulsar.ConsumerType.Shared)  # fmt: skip
        su.create_producer(TOPICS.tasks(model)).send(b"a task")
        msg = consumer.receive(timeout_millis=15000)
        assert msg.data() == b"a task"
        consumer.acknowledge(msg)
        consumer.close()
    finally:
        worker.close()
        su.close()
    stats = _keda_reads_stats(broker, scaled, token)
    assert stats["subscriptions"][TOPICS.subscription(model)]["msgBacklog"] == 0
    assert _subscribe(broker, token, other) == "AuthorizationError"
    other_token = _token_for(namespace, "tok-other", key, other)
    assert _subscribe(broker, other_token, other) == "ok"
    elsewhere = {"spec": {"triggers": [{"metadata": {**trigger["metadata"], "topic": TOPICS.tasks(other)}}]}}
    with pytest.raises(urllib.error.HTTPError) as refused:  # nor another model's backlog
        _keda_reads_stats(broker, elsewhere, token)
    assert refused.value.code in (401, 403)

    # no operator log holds a token
    logs = list(operator_proc.log.parent.glob("operator*.log"))
    assert logs
    for log in logs:
        assert token not in log.read_text(), log

    role = pulsar_auth.worker_role(model)
    assert role in _subscription_roles(broker, model)
    assert _produce(broker, token, REPLIES.replies("gw-tok")) == "ok"

    # deleted: the grants are revoked before the AIModel goes (kopf's finalizer), the Secret follows it
    models().delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "tok")
    _refused_eventually(broker, token, model)
    assert _produce(broker, token, REPLIES.replies("gw-tok")) == "AuthorizationError"  # the reply namespace too
    assert _subscription_roles(broker, model) == [pulsar_auth.GATEWAY]  # the gateway keeps its place
    eventually(lambda: _gone(lambda: _token_secret(namespace, "tok")), timeout=60)
    assert _subscribe(broker, other_token, other) == "ok"  # the other model keeps its own
    broker.admin.revoke(pulsar_auth.worker_permissions(model, REPLIES))  # revoking again: nothing left to do


def _gone(read: Any) -> bool:
    try:
        read()
    except ApiException as e:
        return bool(e.status == 404)
    return False


def test_a_rename_moves_the_token_to_the_new_role_and_revokes_the_old(
    operator_proc: OperatorProc, namespace: str, broker: Pulsar
) -> None:
    assert broker.auth is not None
    key = broker.auth.key_file.read_bytes()
    before, after = _model_name("ren"), _model_name("ren-new")
    create_model(namespace, aimodel("ren", model=before, type="echo", replicas=0))
    old = _token_for(namespace, "ren", key, before)
    _condition(namespace, "ren", "True")
    assert _subscribe(broker, old, before) == "ok"
    digest = client.AppsV1Api().read_namespaced_deployment("aimodel-ren", namespace).spec.template.metadata.annotations

    models().patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "ren", {"spec": {"model": after}})
    new = _token_for(namespace, "ren", key, after)
    assert _subscribe(broker, new, after) == "ok"
    _refused_eventually(broker, old, before)  # the old role's grants are gone
    assert _subscribe(broker, new, before) == "AuthorizationError"

    def rolled() -> bool:
        dep = client.AppsV1Api().read_namespaced_deployment("aimodel-ren", namespace)
        return bool(dep.spec.template.metadata.annotations != digest)  # the workers restart with the new token

    eventually(rolled)


def test_a_worker_configured_as_the_operator_configures_its_pod_serves_with_its_token(
    operator_proc: OperatorProc, namespace: str, broker: Pulsar, kube: Kube, tmp_path: Path
) -> None:
    """The Deployment's settings as a worker process (no kubelet: the token Secret is "mounted" in a
    temporary folder): it connects with its own role, takes a task from its queue and answers on
    the reply namespace, the whole of what the operator granted it."""
    assert broker.auth is not None
    model = _model_name("served")
    create_model(namespace, aimodel("served", model=model, type="echo", replicas=0))
    token = _token_for(namespace, "served", broker.auth.key_file.read_bytes(), model)
    _condition(namespace, "served", "True")
    dep = client.AppsV1Api().read_namespaced_deployment("aimodel-served", namespace)
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env if e.value is not None}
    (tmp_path / "token").write_text(token)
    env.update({"UPLION_PULSAR_TOKEN_FILE": str(tmp_path / "token"), "UPLION_AIMODEL_NAMESPACE": namespace,
                "UPLION_WORKER_ID": "served-0", "UPLION_HEALTH_PORT": "0", "UPLION_METRICS_PORT": "0",
                "KUBECONFIG": str(kube.kubeconfig)})  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("UPLION_")}
    worker = spawn("worker", [sys.executable, "-m", "uplion.worker"], tmp_path / "worker.log", env={**base, **env})
    replies = REPLIES.replies(f"t-{uuid.uuid4().hex[:6]}")
    su = pulsar.Client(broker.service_url, authentication=broker.authentication())
    try:
        wait_until(worker, lambda: "serving model" in (tmp_path / "worker.log").read_text(errors="replace"), 120)
        reader = su.create_reader(replies, pulsar.MessageId.earliest)
        task = task_pb2.Task(task_id="t-1", model=model, reply_topic=replies,
                             chat=chat_pb2.ChatCompletionRequest(model=model, messages=[chat_pb2.ChatMessage(
                                 role="user", content=struct_pb2.Value(string_value="hello"))]))  # fmt: skip
        task.deadline.FromSeconds(int(time.time()) + 60)
        task.created_at.FromSeconds(int(time.time()))
        su.create_producer(TOPICS.tasks(model)).send(task.SerializeToString())
        event = task_pb2.TaskEvent.FromString(reader.read_next(timeout_millis=30000).data())
        assert (event.task_id, event.worker_id) == ("t-1", "served-0")
        assert event.WhichOneof("payload") == "result"
    finally:
        su.close()
        worker.stop(timeout=30)


def test_a_token_secret_deleted_by_hand_is_written_again(operator_proc: OperatorProc, namespace: str,
                                                         broker: Pulsar) -> None:  # fmt: skip
    assert broker.auth is not None
    key = broker.auth.key_file.read_bytes()
    model = _model_name("heal")
    create_model(namespace, aimodel("heal", model=model, type="echo", replicas=0))
    token = _token_for(namespace, "heal", key, model)
    # the operator watches the namespace's Secrets (its RoleBinding came with the namespace a moment ago)
    seen = '"name": "aimodel-heal-pulsar-token"'
    eventually(lambda: any("secret_changed" in line and seen in line
                           for line in operator_proc.log.read_text().splitlines()))  # fmt: skip
    client.CoreV1Api().delete_namespaced_secret("aimodel-heal-pulsar-token", namespace)
    assert _token_for(namespace, "heal", key, model) == token  # the same role, the same key: the same token


def test_grants_the_broker_refuses_are_reported_and_retried_never_a_crash(
    operator_proc: OperatorProc, kube: Kube, broker: Pulsar, run_dir: Path
) -> None:
    """A second operator (its own namespaces) whose token the broker does not take as a superuser:
    it writes the children anyway, sets PulsarAccess False (GrantFailed) with the broker's answer,
    posts a Warning Event, keeps retrying, and keeps running; a deletion then waits for the revoke."""
    assert broker.auth is not None
    bad = run_dir / "not-a-superuser.token"
    bad.write_text(broker.token("uplion-nobody"))
    env = {**operator_env(kube, broker, run_dir, managed="g-*"), "UPLION_PULSAR_TOKEN_FILE": str(bad),
           "UPLION_PULSAR_GRANT_RETRY_S": "1"}  # fmt: skip
    log = run_dir / "operator-g.log"
    proc = spawn_operator(env, log)
    ns = managed_namespace("g")
    try:
        create_model(ns, aimodel("refused", model=_model_name("refused"), type="echo", replicas=0))
        failed = _condition(ns, "refused", "False")
        assert failed["reason"] == "GrantFailed"
        assert "HTTP 401" in failed["message"] or "HTTP 403" in failed["message"]
        client.AppsV1Api().read_namespaced_deployment("aimodel-refused", ns)  # the children are written

        def warned() -> list[Any]:
            events = client.CoreV1Api().list_namespaced_event(ns).items
            return [e for e in events if e.reason == "PulsarGrantFailed" and e.type == "Warning"]

        assert "granted its topics" in eventually(warned, timeout=60)[0].message
        # retried: the attempts go on (kopf's log names each), and the process keeps running
        wait_until(proc, lambda: log.read_text().count("PulsarGrantFailed") >= 2, 60)
        assert proc.alive()
        # deleting waits for the revoke the broker refuses too (kopf's finalizer stays)
        models().delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "refused")
        eventually(lambda: get_model(ns, "refused")["metadata"].get("deletionTimestamp"))
        assert KOPF_FINALIZER in get_model(ns, "refused")["metadata"]["finalizers"]
    finally:
        proc.stop(timeout=20)
        # the escape hatch docs/pulsar-auth.md names: without the operator, drop its finalizer by hand
        try:
            models().patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "refused",
                                                    {"metadata": {"finalizers": None}})  # fmt: skip
        except ApiException as e:
            if e.status != 404:
                raise
