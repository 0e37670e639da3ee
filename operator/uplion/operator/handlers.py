"""kopf handlers: what triggers a reconcile. Decisions live in children.py and status.py; I/O in
kube.py. Every trigger ends in the same idempotent `reconcile`, so restarts and repeats converge."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any, cast

import jwt
import kopf

from uplion.core import pulsar_auth
from uplion.core.aimodels import API_VERSION, GROUP, KIND, PLURAL, VERSION, Platform

from . import children, ownership, status
from .access import AccessError, PulsarAccess
from .kube import Kube
from .settings import Settings

log = logging.getLogger("uplion.operator")
DIGEST_ANNOTATION = "uplion.io/config-digest"
_kube: Kube | None = None
_settings: Settings | None = None
_access: PulsarAccess | None = None


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube()
    return _kube


STATUS_WRITE_ATTEMPTS = 8


def settings() -> Settings:
    """The operator's settings, read from the environment on first use (`__main__` does it first)."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env(os.environ)
    return _settings


def access() -> PulsarAccess | None:
    """The broker's admin API for worker grants; None when worker tokens are off."""
    global _access
    s = settings()
    if not s.tokens:
        return None
    if _access is None:
        admin = pulsar_auth.PulsarAdmin(s.pulsar_admin_url, s.pulsar.token, s.admin_timeout_s)
        _access = PulsarAccess(admin, s.topics)
    return _access


def platform() -> Platform:
    return settings().platform


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


def _valid_token(token: str, model: str) -> bool:
    """`token` is one the broker accepts (signed with its key) for the role of `model`'s workers."""
    if not token:
        return False
    try:
        return pulsar_auth.role_of(token, settings().signing_key) == pulsar_auth.worker_role(model)
    except jwt.PyJWTError:
        return False


def _ensure_token(body: dict[str, Any]) -> str:
    """The workers' token in the model's token Secret: kept when it is valid for the model's role,
    else (none yet, a rename, a new signing key) minted and written."""
    meta, model = body["metadata"], body["spec"]["model"]
    name = children.token_secret_name(meta["name"])
    current = children.stored_token(kube().get("v1", "Secret", name, meta["namespace"]))
    if _valid_token(current, model):
        return current
    token = pulsar_auth.mint(settings().signing_key, pulsar_auth.worker_role(model))
    kube().apply(children.token_secret(body, token))
    log.info("worker token written", extra={"aimodel": meta["name"], "namespace": meta["namespace"],
                                            "secret": name, "role": pulsar_auth.worker_role(model)})  # fmt: skip
    return token


def _warn(body: dict[str, Any], reason: str, message: str) -> None:
    """A Warning Event on the AIModel (kubectl describe shows it) and the same in the log."""
    meta = body["metadata"]
    ref: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND,
                           "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")}}  # fmt: skip
    log.warning(message, extra={"aimodel": meta["name"], "namespace": meta["namespace"], "reason": reason})
    kopf.warn(cast(kopf.Body, ref), reason=reason, message=message[:1024])


def reconcile(body: dict[str, Any], failure: dict[str, Any] | None = None, keep_failure: bool = True) -> None:
    """Apply the children the spec asks for and write the status. `failure` sets a new one;
    otherwise the stored one is kept while it still holds (same spec and Secrets). A model whose
    name another AIModel already serves gets no workers, no token and no grants (ownership.py).
    With worker tokens on, the token Secret is written and the grants applied before the workers;
    a failed grant still writes the children, sets the PulsarAccess condition, posts a Warning
    Event and raises kopf.TemporaryError (kopf retries create, update and resume handlers)."""
    k = kube()
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    versions = _secret_versions(body)
    model = body["spec"]["model"]
    owner = ownership.queue_owner(model, k.list_all_models())
    if owner is not None and owner != (namespace, name):
        for api_version, kind, child in (
            ("apps/v1", "Deployment", children.child_name(name)),
            ("keda.sh/v1alpha1", "ScaledObject", children.child_name(name)),
            ("keda.sh/v1alpha1", "TriggerAuthentication", children.child_name(name)),
            ("v1", "Secret", children.token_secret_name(name)),  # a token for another tenant's queue
        ):
            k.delete(api_version, kind, child, namespace)
        failed = ownership.duplicate_failure(model, owner, body["spec"], versions, now())
        refresh_status(body, versions, failed, pulsar_access=None)
        return
    if not ownership.holds(body, model):
        k.annotate(name, namespace, {ownership.HOLDER_ANNOTATION: model})
    grants = access()
    token, problem = None, None
    if grants is not None:
        token = _ensure_token(body)
        try:
            grants.grant(model)
        except AccessError as e:
            retry = settings().grant_retry_s
            problem = f"the workers' Pulsar role cannot be granted its topics (retrying in {retry:g} s): {e}"
    dep = children.deployment(body, platform(), versions, children.token_digest(token) if token else None)
    dep["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "UPLION_CONFIG_DIGEST", "value": config_digest(body["spec"], versions)}
    )
    for manifest in (children.service_account(body), children.role(body), children.role_binding(body), dep):
        k.apply(manifest)
    scaled = children.scaled_object(body, platform(), authenticated=grants is not None)
    if scaled is not None:
        if grants is not None:
            k.apply(children.trigger_authentication(body))  # before the ScaledObject that names it
        k.apply(scaled)
    else:
        k.delete("keda.sh/v1alpha1", "ScaledObject", children.child_name(name), namespace)
    if scaled is None or grants is None:
        k.delete("keda.sh/v1alpha1", "TriggerAuthentication", children.child_name(name), namespace)
    condition = None
    if grants is not None:
        generation = meta.get("generation", 0)
        ok = f"role {pulsar_auth.worker_role(model)} may use the model's topics"
        condition = status.access_condition(problem is None, problem or ok, generation, now())
    keep = failure is None and keep_failure
    refresh_status(body, versions, failure, keep_stored=keep, pulsar_access=condition)
    if problem is not None:
        _warn(body, "PulsarGrantFailed", problem)
        raise kopf.TemporaryError(problem, delay=settings().grant_retry_s)


def release(model: str, body: dict[str, Any]) -> None:
    """Revoke the grants of `model`'s workers' role unless a live AIModel still names the model
    (`body` is the AIModel that stopped naming it: deleted, or renamed). A failure posts a Warning
    Event and raises kopf.TemporaryError: a deletion waits for it (the finalizer), a rename retries."""
    grants = access()
    if grants is None:
        return
    try:
        if grants.revoke_unless_served(model, kube().list_all_models):
            log.info("worker grants revoked", extra={"model": model, "role": pulsar_auth.worker_role(model)})
    except AccessError as e:
        retry = settings().grant_retry_s
        problem = f"the grants of Pulsar role {pulsar_auth.worker_role(model)} cannot be revoked " \
                  f"(retrying in {retry:g} s): {e}"  # fmt: skip
        _warn(body, "PulsarRevokeFailed", problem)
        raise kopf.TemporaryError(problem, delay=retry) from None


_KEEP: Any = object()  # refresh_status: the PulsarAccess condition stays as stored


def refresh_status(
    body: dict[str, Any],
    versions: str,
    failure: dict[str, Any] | None,
    keep_stored: bool = False,
    pulsar_access: dict[str, Any] | None = _KEEP,
) -> None:
    """Write the status from what is observed now. `keep_stored`: the failure is the one the status
    holds at this moment. `pulsar_access`: the PulsarAccess condition (None: none; by default the
    stored one). Handlers run concurrently (a worker's Event, a Deployment change, a reconcile), so each
    write is conditional on the AIModel's resourceVersion it was computed from, and recomputed from
    a fresh read when another write came first: no failure a handler set a moment ago is lost to a
    status computed before it."""
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
        condition = pulsar_access
        if pulsar_access is _KEEP:
            condition = next((c for c in previous or [] if c.get("type") == status.PULSAR_ACCESS), None)
        computed = status.compute(observed, children.selector(current), now(), previous, condition)
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
        release(renamed_from, dict(body))  # the old role's grants, unless another AIModel names it
        _reconcile_holders_of(renamed_from)  # a model waiting for the old name may serve it now


def model_deleting(body: kopf.Body, **_: Any) -> None:
    """Registered (`kopf.on.delete`, with kopf's finalizer) only with worker tokens on: the role's
    grants are revoked before the AIModel is gone, even when the operator was down at the time."""
    release(body["spec"]["model"], dict(body))


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
    owner_name = (body["metadata"].get("labels") or {}).get(children.MODEL_LABEL)
    if owner_name and name == children.token_secret_name(owner_name):
        # a workers' token Secret: deleted or altered by hand, it is written again
        model = kube().get(API_VERSION, KIND, owner_name, ns) if access() is not None else None
        if model is None or model["metadata"].get("deletionTimestamp"):
            return
        if type == "DELETED" or not _valid_token(children.stored_token(dict(body)), model["spec"]["model"]):
            reconcile(model)
        return
    for model in kube().list_models(ns):
        if any(ref.get("secretName") == name for ref in model["spec"].get("apiKeys", [])):
            reconcile(model)  # new digest: workers roll; a failure about the old keys no longer holds
