"""Who serves a model name (pure). Workers find their queue by the model's name alone (topic
`model-<model>`), so two AIModels with the same `spec.model` in two namespaces would share one queue
and one tenant's workers would receive the other's prompts. Model names are therefore unique across
the cluster: the AIModel that serves a name keeps it (the operator marks it with the annotation
`uplion.io/serves-model`), a new name goes to the oldest AIModel asking for it, and any other is
Failed with reason `DuplicateModel`, gets no workers, and takes over when the holder is deleted or
renamed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .status import spec_digest

DUPLICATE = "DuplicateModel"
HOLDER_ANNOTATION = "uplion.io/serves-model"
Manifest = dict[str, Any]


def holds(m: Manifest, model: str) -> bool:
    return bool((m["metadata"].get("annotations") or {}).get(HOLDER_ANNOTATION) == model)


def _key(m: Manifest, model: str) -> tuple[bool, str, str, str]:
    meta = m["metadata"]
    return (not holds(m, model), str(meta.get("creationTimestamp") or ""), meta["namespace"], meta["name"])


def queue_owner(model: str, candidates: Iterable[Manifest]) -> tuple[str, str] | None:
    """(namespace, name) of the AIModel that serves `model`: the live one already holding it, else
    the oldest live one naming it (creation times have a one-second grain: ties go by namespace,
    then name), or None when none does."""
    live = [m for m in candidates
            if (m.get("spec") or {}).get("model") == model and not m["metadata"].get("deletionTimestamp")]  # fmt: skip
    if not live:
        return None
    first = min(live, key=lambda m: _key(m, model))
    return first["metadata"]["namespace"], first["metadata"]["name"]


def duplicate_failure(model: str, owner: tuple[str, str], spec: Manifest, secret_versions: str, now: str) -> Manifest:
    return {
        "reason": DUPLICATE,
        "message": f"model '{model}' is already served by AIModel {owner[0]}/{owner[1]}; model names are unique "
        "across namespaces so that two tenants never share a queue: choose another spec.model",
        "specDigest": spec_digest(spec), "secretVersions": secret_versions, "at": now,
    }  # fmt: skip
