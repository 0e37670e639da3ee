"""Two tenants never share a queue: an AIModel naming a model another namespace already serves is
Failed (DuplicateModel) with no workers, and takes over when the first one goes away."""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube_api import eventually

from .conftest import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorProc,
    aimodel,
    create_model,
    get_model,
    managed_namespace,
    models,
)


def _has_deployment(ns: str, name: str) -> bool:
    try:
        client.AppsV1Api().read_namespaced_deployment(f"aimodel-{name}", ns)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def _state(ns: str, name: str) -> tuple[str, str]:
    status: dict[str, Any] = get_model(ns, name).get("status") or {}
    return status.get("state", ""), status.get("reason", "")


def test_a_model_name_is_served_by_one_namespace_only(operator_proc: OperatorProc, namespace: str) -> None:
    other = managed_namespace()
    shared = f"shared-{uuid.uuid4().hex[:6]}"
    first = aimodel("first", model=shared)
    create_model(namespace, first)
    eventually(lambda: _has_deployment(namespace, "first"))
    create_model(other, aimodel("second", model=shared))
    assert eventually(lambda: _state(other, "second")[1] == "DuplicateModel")
    status = get_model(other, "second")["status"]
    assert status["state"] == "Failed"
    assert f"already served by AIModel {namespace}/first" in status["message"]
    assert not _has_deployment(other, "second")  # no worker of the second tenant reads the queue

    # the first goes away: the second serves the name now
    models().delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "first")
    eventually(lambda: _has_deployment(other, "second"))
    assert eventually(lambda: _state(other, "second")[1] != "DuplicateModel")

    # renaming the holder frees the name for a waiting duplicate too
    create_model(namespace, aimodel("third", model=shared))
    assert eventually(lambda: _state(namespace, "third")[1] == "DuplicateModel")
    models().patch_namespaced_custom_object(GROUP, VERSION, other, PLURAL, "second",
                                            {"spec": {"model": f"renamed-{shared}"}})  # fmt: skip
    eventually(lambda: _has_deployment(namespace, "third"))
