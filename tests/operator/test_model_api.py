"""The admin API's models in a cluster: the accounts service, with only deploy/accounts-rbac.yaml's
grants, creates, reads, replaces and deletes AIModel resources on the real API server, shows the
operator's status and the models' Events, and passes the API server's own refusals on as
INVALID_ARGUMENT. Real kube-apiserver, operator, PostgreSQL and Pulsar."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import yaml
from kubernetes import client

from tests.databases import new_database
from tests.kube_api import apply_documents, eventually
from uplion.accounts.cli import Client
from uplion.devstack.kube import Kube
from uplion.devstack.platform import bootstrap_admin, start_accounts
from uplion.devstack.postgres import Postgres
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import aimodel_pb2

from .conftest import ROOT, OperatorProc, get_model, managed_namespace


def accounts_kubeconfig(kube: Kube, namespace: str, path: Path) -> Path:
    """deploy/accounts-rbac.yaml applied in `namespace`, and its ServiceAccount's credentials."""
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "accounts-rbac.yaml").read_text()))
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    apply_documents(docs)
    token = client.CoreV1Api().create_namespaced_service_account_token(
        "uplion-accounts", namespace, {"spec": {"expirationSeconds": 86400}})  # fmt: skip
    cfg = json.loads(kube.kubeconfig.read_text())
    cfg["users"] = [{"name": "admin", "user": {"token": token.status.token}}]
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def cluster_admin(kube: Kube, postgres: Postgres, broker: Pulsar, run_dir: Path) -> Iterator[tuple[Client, str]]:
    dsn = new_database(postgres, "cluster_models")
    ns = managed_namespace()
    kubeconfig = accounts_kubeconfig(kube, ns, run_dir / "accounts.kubeconfig")
    accounts = start_accounts(run_dir, dsn, UPLION_MODEL_STORE="kubernetes", UPLION_MODELS_NAMESPACE=ns,
                              KUBECONFIG=str(kubeconfig), UPLION_PULSAR_ADMIN_URL=broker.admin_url)  # fmt: skip
    admin = Client(f"127.0.0.1:{accounts.port}", bootstrap_admin(dsn)["secret"])
    yield admin, ns
    admin.channel.close()
    accounts.stop()


def test_admins_manage_aimodels_in_the_cluster(cluster_admin: tuple[Client, str], operator_proc: OperatorProc) -> None:
    admin, ns = cluster_admin
    key = aimodel_pb2.SecretKeyRef(secret_name="openai", key="api-key")
    spec = aimodel_pb2.AIModelSpec(type="remote", model="cluster-gpt", base_url="https://api.example.test/v1",
                                   max_process_num=8, replicas=2, api_keys=[key])  # fmt: skip
    created = admin.call("CreateAIModel", aimodel_pb2.CreateAIModelRequest(
        model=aimodel_pb2.AIModel(name="cluster-gpt", spec=spec)))  # fmt: skip
    assert created.namespace == ns
    stored = get_model(ns, "cluster-gpt")["spec"]
    assert stored["baseURL"] == "https://api.example.test/v1"  # the CRD's own field names
    assert stored["apiKeys"] == [{"secretName": "openai", "key": "api-key"}]
    assert stored["replicas"] == 2

    # the operator's status shows through the API (no kubelet here: its workers never become ready)
    got = eventually(lambda: (m := admin.call("GetAIModel", aimodel_pb2.GetAIModelRequest(name="cluster-gpt")))
                     .status.state and m.status.replicas == 2 and m)  # fmt: skip
    assert got.status.state in ("Pending", "Failed")
    assert got.backlog == 0
    assert got.create_time.seconds > 0

    # what only the API server knows (the CRD's enum) comes back as INVALID_ARGUMENT with its words
    spec.image_pull_policy = "Sometimes"
    with pytest.raises(grpc.RpcError) as e:
        admin.call("UpdateAIModel", aimodel_pb2.UpdateAIModelRequest(name="cluster-gpt", spec=spec))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "imagePullPolicy" in (e.value.details() or "")
    spec.image_pull_policy = "IfNotPresent"
    spec.max_process_num = 16
    admin.call("UpdateAIModel", aimodel_pb2.UpdateAIModelRequest(name="cluster-gpt", spec=spec))
    assert get_model(ns, "cluster-gpt")["spec"]["maxProcessNum"] == 16

    # Events about the model (a worker's, here posted as one would be)
    model = get_model(ns, "cluster-gpt")
    now = datetime.now(UTC).isoformat()
    client.CoreV1Api().create_namespaced_event(ns, {
        "metadata": {"generateName": "cluster-gpt-"}, "type": "Warning", "reason": "ConfigurationError",
        "message": "the model cannot be loaded: test", "firstTimestamp": now, "lastTimestamp": now,
        "involvedObject": {"apiVersion": "uplion.io/v1alpha1", "kind": "AIModel", "name": "cluster-gpt",
                           "namespace": ns, "uid": model["metadata"]["uid"]},
        "source": {"component": "uplion-worker"}, "count": 1,
    })  # fmt: skip
    events = admin.call("ListAIModelEvents", aimodel_pb2.ListAIModelEventsRequest(name="cluster-gpt")).events
    assert any(e.reason == "ConfigurationError" and e.source == "uplion-worker" for e in events)

    listed = admin.call("ListAIModels", aimodel_pb2.ListAIModelsRequest())
    assert [m.name for m in listed.models] == ["cluster-gpt"]
    admin.call("DeleteAIModel", aimodel_pb2.DeleteAIModelRequest(name="cluster-gpt"))
    eventually(lambda: not client.CustomObjectsApi().list_namespaced_custom_object(
        "uplion.io", "v1alpha1", ns, "aimodels")["items"])  # fmt: skip
    with pytest.raises(grpc.RpcError) as e:
        admin.call("GetAIModel", aimodel_pb2.GetAIModelRequest(name="cluster-gpt"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
