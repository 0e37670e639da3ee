"""What an AIModel becomes (pure functions of its spec): a ServiceAccount, Role and RoleBinding
that let its workers post Events, a Deployment of workers, and (with msgBacklogThreshold) a KEDA
ScaledObject that scales the AIModel itself through its scale subresource, so KEDA and the
operator never both own the Deployment's replicas.

With Pulsar worker tokens on (settings.Settings.tokens): a Secret holding the token of the model's
role, mounted into the workers as a file (`UPLION_PULSAR_TOKEN_FILE`), and a KEDA
TriggerAuthentication handing the same token to the ScaledObject's pulsar trigger (`authModes:
bearer`), which reads the topic's stats with it."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from uplion.core.aimodels import API_VERSION, KIND, Platform, worker_env

MODEL_LABEL = "uplion.io/aimodel"
SECRETS_ANNOTATION = "uplion.io/secret-versions"
# names, not secrets (noqa S105): where the workers' Pulsar token lives
TOKEN_ANNOTATION = "uplion.io/pulsar-token"  # noqa: S105 - a digest of the mounted token: a new one rolls the pods
TOKEN_KEY = "token"  # noqa: S105 - the Secret's key holding the JWT
TOKEN_DIR = "/var/run/secrets/uplion/pulsar"  # noqa: S105
TOKEN_FILE = f"{TOKEN_DIR}/{TOKEN_KEY}"
TOKEN_VOLUME = "pulsar-token"  # noqa: S105
TOKEN_ENV = ("UPLION_PULSAR_TOKEN", "UPLION_PULSAR_TOKEN_FILE")  # the operator's alone when it mounts a token
JOURNAL_VOLUME = "crash-journal"  # the workers' crash journal (worker/README.md): outlives container restarts
JOURNAL_DIR = "/var/lib/uplion/journal"
DEFAULT_MAX_REPLICAS = 10
Manifest = dict[str, Any]


def child_name(name: str) -> str:
    return f"aimodel-{name}"


def token_secret_name(name: str) -> str:
    return f"{child_name(name)}-pulsar-token"


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


def deployment(body: Manifest, platform: Platform, secret_digest: str, token_digest: str | None = None) -> Manifest:
    """The workers. With `token_digest` (token_digest() of the token in the model's token Secret)
    they mount that Secret and read their Pulsar token from the file; no token is ever an env value."""
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
    annotations = {SECRETS_ANNOTATION: secret_digest}
    pod: Manifest = {
        "serviceAccountName": child_name(name),
        # workers drain in-flight tasks on SIGTERM (unacknowledged ones are redelivered)
        "terminationGracePeriodSeconds": 60,
        "containers": [container],
    }
    if token_digest is not None:
        container["env"] = [e for e in container["env"] if e["name"] not in TOKEN_ENV]
        container["env"].append({"name": "UPLION_PULSAR_TOKEN_FILE", "value": TOKEN_FILE})
        container["volumeMounts"] = [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}]
        items = [{"key": TOKEN_KEY, "path": TOKEN_KEY}]
        pod["volumes"] = [{"name": TOKEN_VOLUME, "secret": {"secretName": token_secret_name(name), "items": items}}]
        annotations[TOKEN_ANNOTATION] = token_digest
    container["env"].append({"name": "UPLION_WORKER_JOURNAL_DIR", "value": JOURNAL_DIR})
    container.setdefault("volumeMounts", []).append({"name": JOURNAL_VOLUME, "mountPath": JOURNAL_DIR})
    journal = {"name": JOURNAL_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
    pod.setdefault("volumes", []).append(journal)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(body),
        "spec": {
            "replicas": spec.get("replicas", 1),
            "selector": {"matchLabels": {MODEL_LABEL: name}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod},
        },
    }


def token_digest(token: str) -> str:
    """Names a token without revealing it (the pod template's annotation)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def token_secret(body: Manifest, token: str) -> Manifest:
    """The Secret holding the workers' Pulsar token (owned by the AIModel: deleted with it)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(body, token_secret_name(body["metadata"]["name"])),
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def stored_token(secret: Manifest | None) -> str:
    """The token a token Secret (as read from the API) holds, "" when none."""
    data = (secret or {}).get("data") or {}
    try:
        return base64.b64decode(data.get(TOKEN_KEY) or "").decode()
    except ValueError:
        return ""


def trigger_authentication(body: Manifest) -> Manifest:
    """KEDA's credentials for the model's pulsar trigger: the workers' token as `bearerToken`."""
    ref = {"parameter": "bearerToken", "name": token_secret_name(body["metadata"]["name"]), "key": TOKEN_KEY}
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication", "metadata": _meta(body),
            "spec": {"secretTargetRef": [ref]}}  # fmt: skip


def scaled_object(body: Manifest, platform: Platform, authenticated: bool = False) -> Manifest | None:
    """KEDA's pulsar scaler on the model's queue, targeting the AIModel (None without a threshold).
    `authenticated`: the trigger reads the stats with the workers' token (trigger_authentication)."""
    spec = body["spec"]
    if "msgBacklogThreshold" not in spec:
        return None
    topics = platform.topics
    model = spec["model"]
    trigger: Manifest = {
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
    if authenticated:
        trigger["metadata"]["authModes"] = "bearer"
        trigger["authenticationRef"] = {"name": child_name(body["metadata"]["name"]), "kind": "TriggerAuthentication"}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(body),
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": body["metadata"]["name"]},
            "minReplicaCount": spec.get("minReplicas", 0),
            "maxReplicaCount": spec.get("maxReplicas", DEFAULT_MAX_REPLICAS),
            "triggers": [trigger],
        },
    }
