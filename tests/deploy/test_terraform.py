"""The OpenTofu modules in terraform/: formatted, valid against the providers built from source (installed
from a local filesystem mirror only), and the platform module planned, applied and destroyed against the
session's real kube-apiserver (the `kube` fixture) with the uplion chart of deploy/helm/uplion."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.kube_api import eventually
from uplion.devstack.kube import KUBERNETES_VERSION, Kube
from uplion.devstack.tofu import HELM, KUBERNETES, provider_mirror, tofu_binary, tofu_env, write_cli_config

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
CHART = ROOT / "deploy" / "helm" / "uplion"
REGISTRY = "registry.uplion.test"
DEPLOYMENTS = {"uplion-gateway", "uplion-authz", "uplion-accounts", "uplion-billing", "uplion-operator", "uplion-edge"}


@dataclass
class Tofu:
    binary: Path
    env: dict[str, str]

    def run(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.binary), *args], cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, f"tofu {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return proc


@pytest.fixture(scope="module")
def tofu(tmp_path_factory: pytest.TempPathFactory) -> Tofu:
    """OpenTofu and the kubernetes/helm providers, built from source (cached); a CLI config that installs
    providers from the local mirror only, so nothing is fetched from a registry."""
    home = tmp_path_factory.mktemp("tofu")
    cli_config = write_cli_config(home / "tofu.rc", provider_mirror())
    return Tofu(tofu_binary(), tofu_env(cli_config, {"HOME": str(home)}))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of terraform/ (init writes .terraform and lock files; the checkout stays clean)."""
    dest = tmp_path_factory.mktemp("workspace") / "terraform"
    shutil.copytree(TERRAFORM, dest, ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*"))
    return dest


def test_fmt(tofu: Tofu) -> None:
    out = tofu.run(TERRAFORM, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM))
    assert out.stdout == ""


def test_platform_module_validates_with_mirrored_providers(tofu: Tofu, workspace: Path) -> None:
    module = workspace / "modules" / "platform"
    tofu.run(module, "init", "-backend=false", "-input=false")
    lock = (module / ".terraform.lock.hcl").read_text()
    for p in (KUBERNETES, HELM):
        assert f'provider "{p.address}"' in lock
        assert f'version     = "{p.version}"' in lock, lock
    result = json.loads(tofu.run(module, "validate", "-json").stdout)
    assert result["valid"] is True, result
    assert result["error_count"] == 0


_ROOT_TF = """
provider "kubernetes" {{
  load_config_file = true
  config_path      = "{kubeconfig}"
}}

provider "helm" {{
  kubernetes {{
    load_config_file = true
    config_path      = "{kubeconfig}"
  }}
}}

variable "database_url" {{
  type      = string
  sensitive = true
}}

variable "redis_url" {{
  type      = string
  sensitive = true
}}

variable "session_secret" {{
  type      = string
  sensitive = true
}}

module "platform" {{
  source = "{module}"

  namespace          = "{namespace}"
  uplion_chart       = "{chart}"
  image_registry     = "{registry}"
  image_tag          = "0.1.0"
  edge_mode          = "envoy"
  edge_service_type  = "ClusterIP"
  wait               = false
  helm_timeout       = 300
  install_istio      = false
  install_keda       = false
  install_pulsar     = false
  pulsar_service_url = "pulsar://pulsar.example.test:6650"
  pulsar_admin_url   = "http://pulsar.example.test:8080"
  database_url       = var.database_url
  redis_url          = var.redis_url
  session_secret     = var.session_secret
}}

output "platform" {{
  value = {{
    namespace    = module.platform.namespace
    secret_names = module.platform.secret_names
    edge_service = module.platform.edge_service
    pulsar       = module.platform.pulsar
  }}
}}
"""


def _finalize_terminating(api: client.CoreV1Api, namespace: str, stop: threading.Event) -> None:
    """Stand in for the namespace controller (the test control plane does not run it): once the
    namespace is terminating, drop its `kubernetes` finalizer so the deletion completes."""
    while not stop.wait(0.5):
        try:
            ns = api.read_namespace(namespace)
        except ApiException as e:
            if e.status == 404:
                return
            continue
        if ns.metadata.deletion_timestamp is not None and ns.spec.finalizers:
            ns.spec.finalizers = []
            api.replace_namespace_finalize(namespace, ns)


@pytest.fixture
def kube_api(kube: Kube) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(str(kube.kubeconfig))
    yield api
    api.close()


def test_platform_module_applies_to_real_apiserver(tofu: Tofu, workspace: Path, kube: Kube, kube_api: client.ApiClient,
                                                   tmp_path: Path) -> None:  # fmt: skip
    assert (CHART / "Chart.yaml").is_file(), f"the uplion chart is missing at {CHART}"
    namespace = f"tf-{secrets.token_hex(3)}"
    # the chart's kubeVersion constraint is checked against what the API server reports
    assert client.VersionApi(kube_api).get_code().git_version == f"v{KUBERNETES_VERSION}"
    chart = CHART
    root = tmp_path / "root"
    root.mkdir()
    (root / "main.tf").write_text(_ROOT_TF.format(kubeconfig=kube.kubeconfig, module=workspace / "modules" / "platform",
                                                  namespace=namespace, chart=chart, registry=REGISTRY))  # fmt: skip
    values = {
        "database_url": f"postgresql://uplion:{secrets.token_hex(8)}@db.example.test:5432/uplion",
        "redis_url": f"redis://:{secrets.token_hex(8)}@redis.example.test:6379/0",
        "session_secret": secrets.token_hex(32),
    }
    tf_vars = {f"TF_VAR_{k}": v for k, v in values.items()}
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)

    tofu.run(root, "init", "-input=false")
    tofu.run(root, "plan", "-input=false", "-out=plan.bin", env=tf_vars)
    plan = json.loads(tofu.run(root, "show", "-json", "plan.bin").stdout)
    planned = {rc["address"]: rc["change"]["actions"] for rc in plan["resource_changes"]}
    expected = {
        "module.platform.kubernetes_namespace.uplion",
        'module.platform.kubernetes_secret.uplion["databaseURL"]',
        'module.platform.kubernetes_secret.uplion["redisURL"]',
        'module.platform.kubernetes_secret.uplion["sessionSecret"]',
        "module.platform.helm_release.uplion",
    }
    assert expected <= {a for a, actions in planned.items() if actions == ["create"]}, planned
    assert not any(".istio" in a or ".keda" in a or ".pulsar" in a for a in planned if planned[a] != ["no-op"]), planned

    try:
        tofu.run(root, "apply", "-input=false", "plan.bin", env=tf_vars)
        outputs = json.loads(tofu.run(root, "output", "-json").stdout)["platform"]["value"]
        assert outputs["namespace"] == namespace
        assert outputs["secret_names"] == ["uplion-database", "uplion-redis", "uplion-session"]
        assert outputs["edge_service"] == f"{namespace}/uplion-edge"

        assert core.read_namespace(namespace).status.phase == "Active"
        for name, key, value in [("uplion-database", "url", values["database_url"]),
                                 ("uplion-redis", "url", values["redis_url"]),
                                 ("uplion-session", "secret", values["session_secret"])]:  # fmt: skip
            data = core.read_namespaced_secret(name, namespace).data
            assert base64.b64decode(data[key]).decode() == value
        helm_records = core.list_namespaced_secret(namespace, label_selector="owner=helm,name=uplion").items
        assert [s.type for s in helm_records] == ["helm.sh/release.v1"]

        deployments = {d.metadata.name: d for d in apps.list_namespaced_deployment(namespace).items}
        assert set(deployments) >= DEPLOYMENTS, sorted(deployments)
        for d in deployments.values():
            for c in d.spec.template.spec.containers:
                assert c.image.startswith(f"{REGISTRY}/uplion/"), (d.metadata.name, c.image)
                assert c.image.endswith(":0.1.0"), (d.metadata.name, c.image)
        gateway_env = _env(deployments["uplion-gateway"])
        assert gateway_env.get("UPLION_PULSAR_URL", {}).get("value") == "pulsar://pulsar.example.test:6650", gateway_env
        referenced = {e["valueFrom"]["secretKeyRef"]["name"] for d in deployments.values() for e in _env(d).values()
                      if e.get("valueFrom", {}).get("secretKeyRef")}  # fmt: skip
        assert {"uplion-database", "uplion-redis", "uplion-session"} <= referenced, referenced
        # the control plane's controllers act on them: ReplicaSets exist (pods stay pending, no kubelet)
        eventually(lambda: apps.list_namespaced_replica_set(namespace).items, timeout=60)
    finally:
        stop = threading.Event()
        finalizer = threading.Thread(target=_finalize_terminating, args=(core, namespace, stop), daemon=True)
        finalizer.start()
        try:
            tofu.run(root, "destroy", "-auto-approve", "-input=false", env=tf_vars)
        finally:
            stop.set()
            finalizer.join(timeout=5)

    def gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as e:
            return bool(e.status == 404)
        return False

    eventually(gone, timeout=30)
    state = json.loads(tofu.run(root, "show", "-json").stdout)
    assert not state.get("values", {}).get("root_module", {}).get("child_modules"), state


def _env(deployment: Any) -> dict[str, dict[str, Any]]:
    """name -> the env entry (as a plain dict) over every container of a Deployment."""
    api = client.ApiClient()
    return {e["name"]: e for c in deployment.spec.template.spec.containers
            for e in api.sanitize_for_serialization(c).get("env", [])}  # fmt: skip
