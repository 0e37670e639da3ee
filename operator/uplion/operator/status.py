"""The AIModel's status from what is observed (pure): its Deployment, and the irreversible error a
worker reported through a Kubernetes Event, if any."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

# Warning Event reasons a worker posts when retrying cannot help (the original uplion's set).
IRREVERSIBLE = {"ConfigurationError", "AuthenticationError", "APIQuotaExceededError", "MessageQueueConnectionError"}
HEALTHY = "Healthy"  # a Normal Event a worker posts once it serves again after such an error


def spec_digest(spec: dict[str, Any]) -> str:
    """The spec without replicas (which KEDA changes): a new digest means someone changed the model."""
    rest = {k: v for k, v in spec.items() if k != "replicas"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Observed:
    generation: int
    spec: dict[str, Any]
    secret_versions: str  # children.secret_versions() now
    replicas: int  # the Deployment's status
    ready: int
    failure: dict[str, Any] | None  # what status.failure holds


def failure_still_holds(failure: dict[str, Any] | None, spec: dict[str, Any], secret_versions: str) -> bool:
    """A reported failure stands until the spec (other than replicas) or a referenced Secret changes."""
    if not failure:
        return False
    return failure.get("specDigest") == spec_digest(spec) and failure.get("secretVersions") == secret_versions


def _condition(kind: str, ok: bool, reason: str, message: str, generation: int, now: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": now}  # fmt: skip


PULSAR_ACCESS = "PulsarAccess"  # the condition: the workers' Pulsar role holds its grants (tokens on only)


def access_condition(ok: bool, message: str, generation: int, now: str) -> dict[str, Any]:
    """Whether the model's workers' role was granted its topics (reason Granted | GrantFailed)."""
    return _condition(PULSAR_ACCESS, ok, "Granted" if ok else "GrantFailed", message, generation, now)


def _keep_transition_time(condition: dict[str, Any], previous: list[dict[str, Any]] | None) -> dict[str, Any]:
    for c in previous or []:
        same = c.get("type") == condition["type"] and c.get("status") == condition["status"]
        if same and c.get("lastTransitionTime"):
            condition["lastTransitionTime"] = c["lastTransitionTime"]
    return condition


def compute(
    o: Observed,
    selector: str,
    now: str,
    previous: list[dict[str, Any]] | None = None,
    access: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status patch: state Pending | Running | Failed with reason and message, replica counts,
    the scale selector, observedGeneration, a Ready condition and, given one, the PulsarAccess
    condition (each condition's transition time kept while its status does not change)."""
    wanted = int(o.spec.get("replicas", 1))
    failure = o.failure if failure_still_holds(o.failure, o.spec, o.secret_versions) else None
    if failure:
        state, reason, message = "Failed", failure.get("reason", "Failed"), failure.get("message", "")
    elif wanted == 0:
        state, reason, message = "Running", "ScaledToZero", "no workers wanted; the model wakes on its queue"
    elif o.ready > 0:
        state, reason, message = "Running", "WorkersReady", f"{o.ready} of {wanted} workers ready"
    else:
        state, reason, message = "Pending", "Deploying", f"waiting for workers (0 of {wanted} ready)"
    ready = _keep_transition_time(_condition("Ready", state == "Running", reason, message, o.generation, now), previous)
    conditions = [ready]
    if access is not None:
        conditions.append(_keep_transition_time(dict(access), previous))
    return {
        "state": state,
        "reason": reason,
        "message": message,
        "replicas": o.replicas,
        "readyReplicas": o.ready,
        "selector": selector,
        "observedGeneration": o.generation,
        "failure": failure,  # None clears it (merge patch)
        "conditions": conditions,
    }


def failure_from_event(event: dict[str, Any], spec: dict[str, Any], secret_versions: str, now: str) -> dict[str, Any]:
    return {"reason": event.get("reason", ""), "message": (event.get("message") or "")[:1024],
            "specDigest": spec_digest(spec), "secretVersions": secret_versions, "at": now}  # fmt: skip
