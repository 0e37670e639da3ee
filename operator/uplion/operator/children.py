"""What an AIModel becomes (pure functions of its spec): a ServiceAccount, Role and RoleBinding
that let its workers post Events, a Deployment of workers, and (with msgBacklogThreshold) a KEDA
ScaledObject that scales the AIModel itself through its scale subresource, so KEDA and the
operator never both own the Deployment's replicas."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from uplion.core.aimodels import API_VERSION, KIND, Platform, worker_env

MODEL_LABEL = "uplion.io/aimodel"
SECRETS_ANNOTATION = "uplion.io/secret-versions"
DEFAULT_MAX_REPLICAS = 10
Manifest = dict[str, Any]


def child_name(name: str) -> str:
    return f"aimodel-{name}"


def owner_reference(body: Manifest) -> Manifest:
    meta = body["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"], "controller": True,
            "blockOwnerDeletion": True}  # fmt: skip


def _meta(body: Manifest, name: str | None = None) -> Manifest:
    meta = body["metadata"]
    return {
        "name": name or child_name(meta["name"]),
        "namespace": meta["namespace"],
        "labels": {
            "app.kubernetes.io/name": "uplion-worker",
            "app.kubernetes.io/managed-by": "uplion-operator",
            MODEL_LABEL: meta["name"],
        },
        "ownerReferences": [owner_reference(body)],
    }


def selector(body: Manifest) -> str:
    return f"{MODEL_LABEL}={body['metadata']['name']}"


def service_account(body: Manifest) -> Manifest:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(body)}


def role(body: Manifest) -> Manifest:
    """Workers may post Events (about their AIModel), nothing else."""
    rules = [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(body), "rules": rules}


def role_binding(body: Manifest) -> Manifest:
    name = child_name(body["metadata"]["name"])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(body),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": body["metadata"]["namespace"]}],
    }


def secret_versions(body: Manifest, versions: dict[str, str]) -> str:
    """A digest of the referenced Secrets' resourceVersions: it changes when a key is fixed, which
    rolls the workers (env from Secrets is read only at start)."""
    names = sorted({k["secretName"] for k in body["spec"].get("apiKeys", [])})
    data = json.dumps({n: versions.get(n, "") for n in names}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def deployment(body: Manifest, platform: Platform, secret_digest: str) -> Manifest:
    spec, name = body["spec"], body["metadata"]["name"]
    labels = {MODEL_LABEL: name, "app.kubernetes.io/name": "uplion-worker"}
    default_image = platform.worker_local_image if spec["type"] == "local" else platform.worker_image
    container: Manifest = {
        "name": "worker",
        "image": spec.get("image") or default_image,
        "env": worker_env(body, platform),
        "ports": [{"name": "health", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
        "readinessProbe": {"grpc": {"port": 8080}, "periodSeconds": 5},
    }
    container["env"] += [
        {"name": "UPLION_HEALTH_PORT", "value": "8080"},
        {"name": "UPLION_METRICS_PORT", "value": "9090"},
    ]
    if spec.get("imagePullPolicy"):
        container["imagePullPolicy"] = spec["imagePullPolicy"]
    if spec.get("resources"):
        container["resources"] = spec["resources"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(body),
        "spec": {
            "replicas": spec.get("replicas", 1),
            "selector": {"matchLabels": {MODEL_LABEL: name}},
            "template": {
                "metadata": {"labels": labels, "annotations": {SECRETS_ANNOTATION: secret_digest}},
                "spec": {
                    "serviceAccountName": child_name(name),
                    # workers drain in-flight tasks on SIGTERM (unacknowledged ones are redelivered)
                    "terminationGracePeriodSeconds": 60,
                    "containers": [container],
                },
            },
        },
    }


def scaled_object(body: Manifest, platform: Platform) -> Manifest | None:
    """KEDA's pulsar scaler on the model's queue, targeting the AIModel (None without a threshold)."""
    spec = body["spec"]
    if "msgBacklogThreshold" not in spec:
        return None
    topics = platform.topics
    model = spec["model"]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(body),
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": body["metadata"]["name"]},
            "minReplicaCount": spec.get("minReplicas", 0),
            "maxReplicaCount": spec.get("maxReplicas", DEFAULT_MAX_REPLICAS),
            "triggers": [
                {
                    "type": "pulsar",
                    "metadata": {
                        "adminURL": platform.pulsar_admin_url,
                        "topic": topics.tasks(model),
                        "subscription": topics.subscription(model),
                        "msgBacklogThreshold": str(spec["msgBacklogThreshold"]),
                        "activationMsgBacklogThreshold": str(spec.get("activationMsgBacklogThreshold", 0)),
                        "isPartitionedTopic": "false",
                    },
                }
            ],
        },
    }
