"""AIModel resources as data (pure functions): what a spec must satisfy, and the worker settings it
becomes. One mapping serves both places workers run: the operator puts `worker_env` into a
Deployment's pod template, and the local stack's runner resolves the same list into a process's
environment (`resolve_env`), so a manifest means the same thing in a cluster and on a laptop."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .topics import Topics

GROUP, VERSION, KIND, PLURAL = "uplion.io", "v1alpha1", "AIModel", "aimodels"
API_VERSION = f"{GROUP}/{VERSION}"
Manifest = dict[str, Any]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS label, as Kubernetes names children
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPES = ("local", "remote", "echo")
_INT_FIELDS = {"replicas": 0, "minReplicas": 0, "maxReplicas": 1, "maxProcessNum": 1, "msgBacklogThreshold": 1,
               "activationMsgBacklogThreshold": 0, "maxOutputTokens": 1}  # fmt: skip
# what a request may ask of a model when its AIModel does not say (the CRD's defaults too): every
# request's cost is bounded by its output cap, so a quota is never overshot by more than that
DEFAULT_MAX_OUTPUT_TOKENS = 4096
# the context window a model declares unless its AIModel says otherwise (the CRD's default)
DEFAULT_MAX_CONTEXT_TOKENS = 131072


@dataclass(frozen=True)
class Platform:
    """Where workers find the platform (the operator's or the local runner's own settings)."""

    pulsar_url: str
    pulsar_admin_url: str
    tenant: str = "public"
    namespace: str = "default"
    worker_image: str = "ghcr.io/uplion/worker:0.1.0"  # AIModels without spec.image
    worker_local_image: str = "ghcr.io/uplion/worker-local:0.1.0"  # the same, for type local (torch, weights)
    otlp_endpoint: str = ""  # an OpenTelemetry collector the workers send spans to (docs/tracing.md); empty: none

    @property
    def topics(self) -> Topics:
        return Topics(self.tenant, self.namespace)


@dataclass(frozen=True)
class ModelLimits:
    """What one request may ask of a model: output tokens, and prompt and output together."""

    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    max_context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS


# the backend type the gateway records for a remote AIModel whose upstream serves /v1/responses itself
REMOTE_RESPONSES = "remote+responses"


def backend_of(spec: Manifest) -> str:
    """The backend a spec declares, as the gateway tells them apart (REMOTE_RESPONSES for a remote
    upstream that serves the Responses API)."""
    kind = str(spec.get("type") or "")
    return REMOTE_RESPONSES if kind == "remote" and spec.get("upstreamResponsesAPI") is True else kind


def limits_of(spec: Manifest) -> ModelLimits:
    return ModelLimits(
        int(spec.get("maxOutputTokens") or DEFAULT_MAX_OUTPUT_TOKENS),
        int(spec.get("maxContextTokens") or DEFAULT_MAX_CONTEXT_TOKENS),
    )


def name_problem(name: str) -> str | None:
    if not _NAME.match(name or ""):
        return f"name {name!r} must be a DNS label (lower-case letters, digits and '-', at most 63)"
    return None


def spec_problems(spec: Any) -> list[str]:
    """What the CRD's schema and validation rules would refuse in `spec` (empty: it is valid). The
    local runner and the admin API check a spec with this before writing it; in a cluster the API
    server checks the CRD itself."""
    if not isinstance(spec, dict):
        return ["spec must be an object"]
    out = []
    if spec.get("type") not in _TYPES:
        out.append(f"spec.type must be one of {', '.join(_TYPES)}")
    model = spec.get("model")
    if not isinstance(model, str) or not _MODEL.match(model) or len(model) > 100:
        out.append("spec.model must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    for key, least in _INT_FIELDS.items():
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            out.append(f"spec.{key} must be an integer >= {least}")
    if isinstance(spec.get("maxProcessNum"), int) and spec["maxProcessNum"] > 1024:
        out.append("spec.maxProcessNum must be at most 1024")
    lo, hi = spec.get("minReplicas"), spec.get("maxReplicas")
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        out.append("minReplicas must not exceed maxReplicas")
    if "activationMsgBacklogThreshold" in spec and "msgBacklogThreshold" not in spec:
        out.append("activationMsgBacklogThreshold needs msgBacklogThreshold")
    if spec.get("type") == "remote":
        if not re.match(r"^https?://", str(spec.get("baseURL", ""))):
            out.append("a remote model needs baseURL (http:// or https://)")
        keys = spec.get("apiKeys")
        if not isinstance(keys, list) or not keys:
            out.append("a remote model needs apiKeys: Secret references holding the provider keys")
    if spec.get("upstreamResponsesAPI") not in (None, True, False):
        out.append("spec.upstreamResponsesAPI must be true or false")
    elif spec.get("upstreamResponsesAPI") and spec.get("type") != "remote":
        out.append("upstreamResponsesAPI is for remote models")
    for i, ref in enumerate(spec.get("apiKeys") or []):
        if not isinstance(ref, dict) or not ref.get("secretName") or not ref.get("key"):
            out.append(f"spec.apiKeys[{i}] needs secretName and key")
    for i, var in enumerate(spec.get("env") or []):
        if not isinstance(var, dict) or not _ENV_NAME.match(str(var.get("name", ""))):
            out.append(f"spec.env[{i}].name must be an environment variable name")
    return out


def manifest_problems(doc: Any) -> list[str]:
    """What is wrong with an AIModel manifest as a whole (kind, apiVersion, name, spec)."""
    if not isinstance(doc, dict):
        return ["a manifest must be a YAML mapping"]
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        return [f"not an AIModel (apiVersion {API_VERSION}, kind {KIND})"]
    name = (doc.get("metadata") or {}).get("name", "")
    problems = [p for p in [name_problem(name)] if p]
    return problems + spec_problems(doc.get("spec"))


def parse_manifests(text: str) -> list[Any]:
    """The YAML documents of a manifest file (empty documents dropped); raises yaml.YAMLError."""
    return [d for d in yaml.safe_load_all(text) if d is not None]


def worker_env(body: Manifest, platform: Platform) -> list[Manifest]:
    """The workers' environment as Kubernetes EnvVars: plain values, provider keys from Secrets,
    identity from the pod. The platform's settings win over the spec's extra `env`."""
    spec, meta = body["spec"], body["metadata"]
    env: list[Manifest] = [
        {"name": "UPLION_MODEL", "value": spec["model"]},
        {"name": "UPLION_MODEL_TYPE", "value": spec["type"]},
        {"name": "UPLION_MAX_PROCESS_NUM", "value": str(spec.get("maxProcessNum", 1))},
        {"name": "UPLION_MAX_OUTPUT_TOKENS", "value": str(limits_of(spec).max_output_tokens)},
        {"name": "UPLION_PULSAR_URL", "value": platform.pulsar_url},
        {"name": "UPLION_PULSAR_TENANT", "value": platform.tenant},
        {"name": "UPLION_PULSAR_NAMESPACE", "value": platform.namespace},
        {"name": "UPLION_WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # what the worker's Events are about
        {"name": "UPLION_AIMODEL_NAME", "value": meta["name"]},
        {"name": "UPLION_AIMODEL_UID", "value": meta.get("uid", "")},
        {"name": "UPLION_AIMODEL_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if platform.otlp_endpoint:
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": platform.otlp_endpoint})
    if spec["type"] == "remote":
        env.append({"name": "UPLION_BASE_URL", "value": spec["baseURL"]})
        if spec.get("upstreamModel"):
            env.append({"name": "UPLION_UPSTREAM_MODEL", "value": spec["upstreamModel"]})
        for i, ref in enumerate(spec.get("apiKeys", [])):
            env.append({"name": f"UPLION_API_KEY_{i}",
                        "valueFrom": {"secretKeyRef": {"name": ref["secretName"], "key": ref["key"]}}})  # fmt: skip
    if spec.get("modelPath"):
        env.append({"name": "UPLION_LOCAL_MODEL_PATH", "value": spec["modelPath"]})
    reserved = {e["name"] for e in env}
    env += [e for e in spec.get("env", []) if e["name"] not in reserved]
    return env


def local_secret_variable(secret_name: str, key: str) -> str:
    """Where the local stack finds a Secret's key: UPLION_SECRET_<SECRETNAME>_<KEY> in its environment."""
    return "UPLION_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", f"{secret_name}_{key}").upper()


class UnresolvedSecret(Exception):
    def __init__(self, secret_name: str, key: str) -> None:
        self.variable = local_secret_variable(secret_name, key)
        super().__init__(f"Secret {secret_name!r} key {key!r} is not set: export {self.variable}")


def resolve_env(env: list[Manifest], secret: Callable[[str, str], str | None],
                fields: Mapping[str, str]) -> dict[str, str]:  # fmt: skip
    """A pod's EnvVar list as a process's environment: `secret(name, key)` answers secretKeyRefs
    (None: missing, raises UnresolvedSecret), `fields` answers fieldRefs (unknown ones are dropped, as
    a field the process has no equivalent of), `$(VAR)` references are left as written."""
    out: dict[str, str] = {}
    for var in env:
        name, source = var["name"], var.get("valueFrom")
        if source is None:
            out[name] = str(var.get("value", ""))
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = secret(ref["name"], ref["key"])
            if value is None:
                raise UnresolvedSecret(ref["name"], ref["key"])
            out[name] = value
        elif "fieldRef" in source and source["fieldRef"].get("fieldPath") in fields:
            out[name] = fields[source["fieldRef"]["fieldPath"]]
    return out
