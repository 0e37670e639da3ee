"""kopf handlers: what triggers a reconcile. Decisions live in children.py and status.py; I/O in
kube.py. Every trigger ends in the same idempotent `reconcile`, so restarts and repeats converge."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import kopf

from uplion.core.aimodels import API_VERSION, GROUP, KIND, PLURAL, VERSION, Platform

from . import children, ownership, status
from .kube import Kube

log = logging.getLogger("uplion.operator")
DIGEST_ANNOTATION = "uplion.io/config-digest"
_kube: Kube | None = None


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube()
    return _kube


STATUS_WRITE_ATTEMPTS = 8


def platform() -> Platform:
    return Platform(
        pulsar_url=os.environ.get("UPLION_PULSAR_URL", "pulsar://pulsar-broker.pulsar:6650"),
        pulsar_admin_url=os.environ.get("UPLION_PULSAR_ADMIN_URL", "http://pulsar-broker.pulsar:8080"),
        tenant=os.environ.get("UPLION_PULSAR_TENANT", "public"),
        namespace=os.environ.get("UPLION_PULSAR_NAMESPACE", "default"),
        worker_image=os.environ.get("UPLION_WORKER_IMAGE", Platform.worker_image),
        worker_local_image=os.environ.get("UPLION_WORKER_LOCAL_IMAGE", Platform.worker_local_image),
    )


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def config_digest(spec: dict[str, Any], secret_versions: str) -> str:
    return f"{status.spec_digest(spec)}.{secret_versions}"


def _secret_versions(body: dict[str, Any]) -> str:
    ns = body["metadata"]["namespace"]
    versions = {}
    for ref in body["spec"].get("apiKeys", []):
        secret = kube().get("v1", "Secret", ref["secretName"], ns)
        versions[ref["secretName"]] = secret["metadata"]["resourceVersion"] if secret else "missing"
    return children.secret_versions(body, versions)


def reconcile(body: dict[str, Any], failure: dict[str, Any] | None = None, keep_failure: bool = True) -> None:
    """Apply the children the spec asks for and write the status. `failure` sets a new one;
    otherwise the stored one is kept while it still holds (same spec and Secrets). A model whose
    name another AIModel already serves gets no workers (ownership.py)."""
    k = kube()
    meta = body["metadata"]
    versions = _secret_versions(body)
    model = body["spec"]["model"]
    owner = ownership.queue_owner(model, k.list_all_models())
    if owner is not None and owner != (meta["namespace"], meta["name"]):
        for api_version, kind in (("apps/v1", "Deployment"), ("keda.sh/v1alpha1", "ScaledObject")):
            k.delete(api_version, kind, children.child_name(meta["name"]), meta["namespace"])
        refresh_status(body, versions, ownership.duplicate_failure(model, owner, body["spec"], versions, now()))
        return
    if not ownership.holds(body, model):
        k.annotate(meta["name"], meta["namespace"], {ownership.HOLDER_ANNOTATION: model})
    dep = children.deployment(body, platform(), versions)
    dep["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "UPLION_CONFIG_DIGEST", "value": config_digest(body["spec"], versions)}
    )
    for manifest in (children.service_account(body), children.role(body), children.role_binding(body), dep):
        k.apply(manifest)
    scaled = children.scaled_object(body, platform())
    if scaled is not None:
        k.apply(scaled)
    else:
        k.delete("keda.sh/v1alpha1", "ScaledObject", children.child_name(meta["name"]), meta["namespace"])
    refresh_status(body, versions, failure, keep_stored=failure is None and keep_failure)


def refresh_status(
    body: dict[str, Any], versions: str, failure: dict[str, Any] | None, keep_stored: bool = False
) -> None:
    """Write the status from what is observed now. `keep_stored`: the failure is the one the status
    holds at this moment. Handlers run concurrently (a worker's Event, a Deployment change, a
    reconcile), so each write is conditional on the AIModel's resourceVersion it was computed from,
    and recomputed from a fresh read when another write came first: no failure a handler set a
    moment ago is lost to a status computed before it."""
    meta = body["metadata"]
    for _ in range(STATUS_WRITE_ATTEMPTS):
        current = kube().get(API_VERSION, KIND, meta["name"], meta["namespace"])
        if current is None:
            return  # deleted meanwhile
        stored = (current.get("status") or {}).get("failure")
        chosen = stored if keep_stored else failure
        dep = kube().get("apps/v1", "Deployment", children.child_name(meta["name"]), meta["namespace"]) or {}
        if dep and chosen and chosen.get("reason") == ownership.DUPLICATE:
            chosen = None  # it has workers, so it serves its name (a status read before it took over says otherwise)
        dep_status = dep.get("status") or {}
        observed = status.Observed(
            generation=current["metadata"].get("generation", 0), spec=current["spec"], secret_versions=versions,
            replicas=dep_status.get("replicas") or 0, ready=dep_status.get("readyReplicas") or 0, failure=chosen,
        )  # fmt: skip
        previous = (current.get("status") or {}).get("conditions")
        computed = status.compute(observed, children.selector(current), now(), previous)
        if kube().patch_status(meta["name"], meta["namespace"], computed, current["metadata"]["resourceVersion"]):
            return
    log.warning("status not written: the AIModel kept changing", extra={"model": meta["name"]})


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping in annotations: the status schema keeps only uplion's fields
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="uplion.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="uplion.io")
    settings.watching.server_timeout = 60
    settings.posting.level = logging.WARNING


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def model_changed(body: kopf.Body, old: Any = None, **_: Any) -> None:
    reconcile(dict(body))
    renamed_from = (old or {}).get("model") if isinstance(old, dict) else None
    if renamed_from and renamed_from != body["spec"].get("model"):
        _reconcile_holders_of(renamed_from)  # a model waiting for the old name may serve it now


def _reconcile_holders_of(model: str) -> None:
    for other in kube().list_all_models():
        if (other.get("spec") or {}).get("model") == model and not other["metadata"].get("deletionTimestamp"):
            reconcile(other)


@kopf.on.event(GROUP, VERSION, PLURAL)
def model_deleted(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        _reconcile_holders_of(body["spec"]["model"])


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "uplion-operator"})
def deployment_changed(body: kopf.Body, **_: Any) -> None:
    name = (body.get("metadata", {}).get("labels") or {}).get(children.MODEL_LABEL)
    if not name:
        return
    model = kube().get(API_VERSION, KIND, name, body["metadata"]["namespace"])
    if model is not None and model["metadata"].get("deletionTimestamp") is None:
        refresh_status(model, _secret_versions(model), None, keep_stored=True)


def _about_a_model(body: kopf.Body, **_: Any) -> bool:
    obj = body.get("involvedObject") or {}
    return bool(obj.get("kind") == KIND and obj.get("apiVersion", "").startswith(GROUP))


@kopf.on.event("", "v1", "events", when=_about_a_model)
def worker_reported(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    obj = body["involvedObject"]
    model = kube().get(API_VERSION, KIND, obj["name"], obj.get("namespace") or body["metadata"]["namespace"])
    if model is None or (obj.get("uid") and obj["uid"] != model["metadata"]["uid"]):
        return  # about a model that no longer exists (or an older one of the same name)
    versions = _secret_versions(model)
    reported = (body["metadata"].get("annotations") or {}).get(DIGEST_ANNOTATION)
    if reported != config_digest(model["spec"], versions):
        return  # about a spec or Secrets that were changed since: not about the model as it is
    current = (model.get("status") or {}).get("failure")
    reason = body.get("reason", "")
    if body.get("type") == "Warning" and reason in status.IRREVERSIBLE:
        if current and current.get("reason") == reason and current.get("message") == body.get("message"):
            return
        refresh_status(model, versions, status.failure_from_event(dict(body), model["spec"], versions, now()))
    elif reason == status.HEALTHY and current:
        stamp = body.get("lastTimestamp") or body.get("eventTime") or ""
        if stamp >= current.get("at", ""):
            refresh_status(model, versions, None)


@kopf.on.event("", "v1", "secrets")
def secret_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    for model in kube().list_models(ns):
        if any(ref.get("secretName") == name for ref in model["spec"].get("apiKeys", [])):
            reconcile(model)  # new digest: workers roll; a failure about the old keys no longer holds
