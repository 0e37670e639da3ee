"""RBAC grants no more than this written list: what each component uses, and nothing else. A new
permission in deploy/ or in the operator's worker Role fails here until it is added on purpose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from uplion.operator import children

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
Grants = dict[tuple[str, str], set[str]]  # (apiGroup, resource) -> verbs

# (where the role is bound: "cluster" by a ClusterRoleBinding, "namespace" by RoleBindings; role name)
ALLOWED: dict[tuple[str, str], Grants] = {
    # the uniqueness of model names across namespaces, kopf's namespace patterns and CRD scan: read-only
    ("cluster", "uplion-operator-cluster"): {
        ("uplion.io", "aimodels"): {"get", "list", "watch"},
        ("", "namespaces"): {"list", "watch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    },
    # inside each namespace the operator manages, and only there
    ("namespace", "uplion-operator-namespace"): {
        ("uplion.io", "aimodels"): {"patch"},
        ("uplion.io", "aimodels/status"): {"patch"},
        ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "serviceaccounts"): {"get", "create", "patch", "delete"},
        ("rbac.authorization.k8s.io", "roles"): {"get", "create", "patch", "delete"},
        ("rbac.authorization.k8s.io", "rolebindings"): {"get", "create", "patch", "delete"},
        ("keda.sh", "scaledobjects"): {"get", "create", "patch", "delete"},
        # KEDA's credentials for a model's trigger: the workers' Pulsar token (worker tokens on)
        ("keda.sh", "triggerauthentications"): {"get", "create", "patch", "delete"},
        ("", "events"): {"get", "list", "watch", "create", "patch"},
        # read: provider keys' versions roll the workers; write: each model's Pulsar token Secret
        ("", "secrets"): {"get", "list", "watch", "create", "patch", "delete"},
    },
    # the gateway learns which models exist
    ("cluster", "uplion-gateway"): {("uplion.io", "aimodels"): {"get", "list", "watch"}},
    # the admin API's model management, in the models' namespace only (no Secrets, no Deployments)
    ("namespace", "uplion-accounts-models"): {
        ("uplion.io", "aimodels"): {"get", "list", "watch", "create", "update", "patch", "delete"},
        ("", "events"): {"get", "list"},
    },
    # a model's workers post Events about it
    ("namespace", "aimodel-worker"): {("", "events"): {"create"}},
}
NEVER = {"*", "bind", "escalate", "impersonate"}


def _grants(rules: list[dict[str, Any]]) -> Grants:
    out: Grants = {}
    for rule in rules:
        assert not rule.get("resourceNames"), rule
        assert not rule.get("nonResourceURLs"), rule
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                out.setdefault((group, resource), set()).update(rule.get("verbs", []))
    return out


def _granted() -> dict[tuple[str, str], Grants]:
    docs = [d for f in sorted(DEPLOY.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    roles = {
        (d["kind"], d["metadata"]["name"]): d.get("rules", []) for d in docs if d["kind"] in ("ClusterRole", "Role")
    }
    granted: dict[tuple[str, str], Grants] = {}
    for d in docs:
        if d["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        ref = d["roleRef"]
        scope = "cluster" if d["kind"] == "ClusterRoleBinding" else "namespace"
        assert not (scope == "cluster" and ref["kind"] == "Role")
        granted[(scope, ref["name"])] = _grants(roles[(ref["kind"], ref["name"])])
    body = {"metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": {"model": "m"}}
    granted[("namespace", "aimodel-worker")] = _grants(children.role(body)["rules"])
    return granted


def test_rbac_grants_exactly_the_written_list() -> None:
    assert _granted() == ALLOWED


def test_no_wildcards_no_escalation_and_secrets_never_cluster_wide() -> None:
    for (scope, name), grants in _granted().items():
        for (group, resource), verbs in grants.items():
            assert not (verbs & NEVER), (name, resource, verbs)
            assert "*" not in (group, resource), name
            if resource == "secrets":
                assert scope == "namespace", f"{name} reads Secrets cluster-wide"
