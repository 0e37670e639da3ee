"""Helpers for tests that talk to the session's real Kubernetes API server (the `kube` fixture in
tests/conftest.py): server-side apply of manifest files, and waiting for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


def apply_documents(docs: Iterable[dict[str, Any]], kinds: set[str] | None = None,
                    namespace: str | None = None) -> list[str]:  # fmt: skip
    """Server-side apply of each document (of `kinds`, if given; namespaced ones without a namespace go
    to `namespace`): idempotent. Returns the kinds applied, in order."""
    api = dynamic.DynamicClient(client.ApiClient())
    applied = []
    for doc in docs:
        if not doc or (kinds is not None and doc["kind"] not in kinds):
            continue
        res = api.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = doc["metadata"].get("namespace") or (namespace if res.namespaced else None)
        res.server_side_apply(body=doc, name=doc["metadata"]["name"], namespace=ns,
                              field_manager="uplion-tests", force_conflicts=True)  # fmt: skip
        applied.append(doc["kind"])
    return applied


def apply_manifests(path: Path, kinds: set[str] | None = None) -> list[str]:
    """Server-side apply of every document in a manifest file (of `kinds`, if given): idempotent."""
    return apply_documents(yaml.safe_load_all(path.read_text()), kinds)


def eventually(check: Callable[[], T | None], timeout: float = 30, interval: float = 0.2) -> T:
    """The first truthy result of `check` (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except ApiException as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"not reached in {timeout}s; last: {last!r}")
