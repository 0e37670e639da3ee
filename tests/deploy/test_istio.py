"""Istio resources that Istio accepts: Istio's own CRDs (from the pinned Istio source,
uplion.devstack.helm) installed into the session's real kube-apiserver; every resource of
istio/manifests and of the chart's istio-mode output applied there; `istioctl analyze --use-kube=false`
(built from the same source) finds no errors in them."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.deploy.test_helm import ALL_OPTIONS, ISTIO_KINDS, ROOT, delete_documents, render
from tests.kube_api import apply_documents, eventually
from uplion.devstack.helm import ISTIO_VERSION, istio_crds, istioctl_binary
from uplion.devstack.kube import Kube

MANIFESTS = ROOT / "istio" / "manifests"
MESH_SNIPPET = MANIFESTS / "meshconfig-extension-providers.yaml"
PLURALS = {"Gateway": "gateways", "VirtualService": "virtualservices", "EnvoyFilter": "envoyfilters",
           "AuthorizationPolicy": "authorizationpolicies", "PeerAuthentication": "peerauthentications"}  # fmt: skip
ISTIO_CRDS = set(PLURALS.values())


def manifest_docs() -> list[dict[str, Any]]:
    """The Kubernetes resources of istio/manifests (the MeshConfig snippet is not one: it has no kind)."""
    docs = [d for f in sorted(MANIFESTS.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return [d for d in docs if "kind" in d]


def ensure_namespace(name: str) -> None:
    try:
        client.CoreV1Api().create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except ApiException as e:
        if e.status != 409:
            raise


@contextmanager
def applied(docs: list[dict[str, Any]], namespace: str) -> Iterator[None]:
    for ns in {namespace, *(d["metadata"].get("namespace") for d in docs if d["metadata"].get("namespace"))}:
        ensure_namespace(ns)
    try:
        apply_documents(docs, namespace=namespace)
        yield
    finally:
        delete_documents(docs, namespace)


@pytest.fixture(scope="module")
def istio_api(kube: Kube) -> None:
    """Istio's CRDs (every Istio API) installed and established in the session's control plane."""
    crds = [d for d in yaml.safe_load_all(istio_crds().read_text()) if d]
    apply_documents(crds)
    ext = client.ApiextensionsV1Api()

    def established(name: str) -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    names = {d["metadata"]["name"] for d in crds}
    wanted = {n for n in names if n.split(".")[0] in ISTIO_CRDS}
    assert len(wanted) == len(ISTIO_CRDS), sorted(names)
    for name in wanted:
        eventually(lambda n=name: established(n), timeout=60)  # type: ignore[misc]


def _stored(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    group, version = doc["apiVersion"].split("/")
    plural = PLURALS[doc["kind"]]
    ns = doc["metadata"].get("namespace") or namespace
    got: dict[str, Any] = client.CustomObjectsApi().get_namespaced_custom_object(
        group, version, ns, plural, doc["metadata"]["name"]
    )
    return got


def test_istio_manifests_apply(istio_api: None) -> None:
    docs = manifest_docs()
    assert {d["kind"] for d in docs} == ISTIO_KINDS
    with applied(docs, "uplion"):
        for doc in docs:
            assert _stored(doc, "uplion")["spec"] == doc["spec"], doc["kind"]


def test_chart_istio_mode_applies(istio_api: None) -> None:
    namespace = f"helm-istio-{secrets.token_hex(4)}"
    docs = [d for d in render(namespace, ALL_OPTIONS) if d["kind"] in ISTIO_KINDS]
    assert {d["kind"] for d in docs} == ISTIO_KINDS
    with applied(docs, namespace):
        for doc in docs:
            assert _stored(doc, namespace)["spec"] == doc["spec"], doc["kind"]
        vs = _stored(next(d for d in docs if d["kind"] == "VirtualService"), namespace)
        hosts = {r["route"][0]["destination"]["host"] for r in vs["spec"]["http"]}
        services = ("uplion-accounts", "uplion-gateway", "uplion-console")
        assert hosts == {f"{name}.{namespace}.svc.cluster.local" for name in services}


# --- istioctl analyze ----------------------------------------------------------------------------

# What `istioctl install` puts in istio-system and the analysers look for: the ingress gateway's
# workload (label istio=ingressgateway) and its Service. A stand-in, since the test cluster runs no Istio.
INGRESS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}},
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "istio-ingressgateway",
            "namespace": "istio-system",
            "labels": {"istio": "ingressgateway"},
        },
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "ports": [{"name": "http2", "port": 80, "targetPort": 8080}],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "istio-ingressgateway-0",
            "namespace": "istio-system",
            "labels": {"istio": "ingressgateway", "app": "istio-ingressgateway"},
        },
        "spec": {
            "containers": [
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2", "ports": [{"containerPort": 8080}]}
            ]
        },
    },
]


def mesh_config(path: Path) -> Path:
    """istio/manifests' MeshConfig snippet as a mesh config file (the ext_authz provider the
    AuthorizationPolicy names)."""
    path.write_text(yaml.safe_dump(yaml.safe_load(MESH_SNIPPET.read_text())["meshConfig"]))
    return path


def analyze(files: list[Path], mesh: Path) -> list[dict[str, Any]]:
    """`istioctl analyze --use-kube=false` of the files: its messages (errors fail the caller)."""
    cmd = [str(istioctl_binary()), "analyze", "--use-kube=false", "--meshConfigFile", str(mesh),
           "--output", "json", "--output-threshold", "Info", "--failure-threshold", "Error", "--all-namespaces",
           *map(str, files)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 79), f"istioctl analyze failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    messages: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    for m in messages:
        print(f"istioctl analyze ({ISTIO_VERSION}): {m['level']} {m['code']} {m.get('origin', '')}: {m['message']}")
    return messages


def _write(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs))
    return path


def errors(messages: list[dict[str, Any]]) -> list[str]:
    return [f"{m['code']} {m.get('origin', '')}: {m['message']}" for m in messages if m["level"] == "Error"]


def test_istioctl_analyze_istio_manifests(tmp_path: Path) -> None:
    """istio/manifests with what they route to: the chart's Services in namespace `uplion`."""
    chart = [d for d in render("uplion", None, "edge.mode=istio") if d["kind"] == "Service"]
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "uplion"}}]
    files = [*sorted(p for p in MANIFESTS.glob("*.yaml") if p != MESH_SNIPPET)]
    files += [_write(tmp_path / "services.yaml", [*namespaces, *chart]), _write(tmp_path / "ingress.yaml", INGRESS)]
    messages = analyze(files, mesh_config(tmp_path / "mesh.yaml"))
    assert errors(messages) == []


def test_istioctl_analyze_chart_istio_mode(tmp_path: Path) -> None:
    """The chart in istio mode (its Istio objects and Services) in another namespace."""
    docs = render("uplion-mesh", None, "edge.mode=istio")
    kept = [d for d in docs if d["kind"] in ISTIO_KINDS | {"Service", "Deployment"}]
    assert {d["kind"] for d in kept} >= ISTIO_KINDS
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "uplion-mesh"}}]
    files = [_write(tmp_path / "chart.yaml", [*namespaces, *kept]), _write(tmp_path / "ingress.yaml", INGRESS)]
    messages = analyze(files, mesh_config(tmp_path / "mesh.yaml"))
    assert errors(messages) == []
