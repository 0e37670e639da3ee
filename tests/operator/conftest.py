"""uplion's operator running as a process against the session's real Kubernetes API server (the
`kube` fixture in tests/conftest.py), with its own ServiceAccount's credentials."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.kube_api import apply_manifests
from uplion.core import pulsar_auth
from uplion.devstack.kube import Kube
from uplion.devstack.procs import Proc, spawn, wait_until
from uplion.devstack.pulsar import Pulsar

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "uplion.io", "v1alpha1", "aimodels"


OPERATOR_NAMESPACE, OPERATOR_ACCOUNT = "uplion", "uplion-operator"
RBAC = "rbac.authorization.k8s.io"
MANAGED = "t-*"  # the operator manages the tests' namespaces (`namespace` fixture), as a chart would


def operator_kubeconfig(kube: Kube, path: Path) -> Path:
    """Credentials of the operator's own ServiceAccount, with exactly the RBAC deploy/operator.yaml
    grants: the operator's tests prove that RBAC is enough."""
    apply_manifests(ROOT / "deploy" / "operator.yaml", {"Namespace", "ServiceAccount", "ClusterRole",
                                                        "ClusterRoleBinding"})  # fmt: skip
    request = {"spec": {"expirationSeconds": 86400}}
    token = client.CoreV1Api().create_namespaced_service_account_token(OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, request)
    cfg = json.loads(kube.kubeconfig.read_text())
    cfg["users"] = [{"name": "admin", "user": {"token": token.status.token}}]
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return path


@dataclass
class OperatorProc:
    proc: Proc
    env: dict[str, str]
    log: Path

    def restart(self) -> None:
        self.proc.stop(timeout=20)
        self.log = self.log.with_name(f"operator.{int(time.time())}.log")  # the current process's log
        self.proc = spawn_operator(self.env, self.log)


def spawn_operator(env: dict[str, str], log: Path) -> Proc:
    proc = spawn("operator", [sys.executable, "-m", "uplion.operator"], log, env=env)
    wait_until(proc, lambda: "Initial authentication has finished" in log.read_text(), 60)
    time.sleep(1.0)
    return proc


def operator_env(kube: Kube, broker: Pulsar, run_dir: Path, managed: str = MANAGED) -> dict[str, str]:
    """The operator's settings against the session's broker, which runs with authentication: its
    signing key file and the superuser's token file (BrokerAuth), so the operator mints every
    model's worker token and grants its role (docs/pulsar-auth.md)."""
    assert broker.auth is not None, "the session's broker runs with authentication"
    kubeconfig = operator_kubeconfig(kube, run_dir / f"operator-{managed.strip('*-')}.kubeconfig")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLION_PULSAR_")}
    return {**env, "KUBECONFIG": str(kubeconfig), "UPLION_PULSAR_URL": broker.service_url,
            "UPLION_PULSAR_ADMIN_URL": broker.admin_url, "UPLION_WATCH_NAMESPACES": managed,
            "UPLION_PULSAR_REPLY_NAMESPACE": pulsar_auth.reply_namespace("default"),
            "UPLION_PULSAR_SIGNING_KEY_FILE": str(broker.auth.key_file),
            "UPLION_PULSAR_TOKEN_FILE": str(broker.auth.superuser_token_file)}  # fmt: skip


@pytest.fixture(scope="session")
def operator_proc(kube: Kube, broker: Pulsar, run_dir: Path) -> Iterator[OperatorProc]:
    env = operator_env(kube, broker, run_dir)
    log = run_dir / "operator.log"
    op = OperatorProc(spawn_operator(env, log), env, log)
    yield op
    op.proc.stop(timeout=20)


@pytest.fixture
def namespace(kube: Kube) -> str:
    """A fresh namespace per test (the API server goes away with the session), managed by the operator."""
    return managed_namespace()


def managed_namespace(prefix: str = "t") -> str:
    """A new namespace with the RoleBinding that lets the operator manage it (deploy/operator.yaml)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api().create_namespace({"metadata": {"name": name}})
    client.RbacAuthorizationV1Api().create_namespaced_role_binding(name, {
        "metadata": {"name": "uplion-operator"},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "uplion-operator-namespace"},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}],
    })  # fmt: skip
    return name


def models() -> client.CustomObjectsApi:
    return client.CustomObjectsApi()


def aimodel(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AIModel", "metadata": {"name": name},
            "spec": {"type": "local", "model": name, **spec}}  # fmt: skip


def create_model(ns: str, body: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = models().create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, body, field_validation="Strict" if strict else None
    )
    return out


def get_model(ns: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = models().get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return out
