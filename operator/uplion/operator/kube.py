"""The Kubernetes API as the operator uses it: server-side apply of children (idempotent: applying
the same manifest twice changes nothing), reads, and merge patches of the AIModel's status."""

from __future__ import annotations

import os
from typing import Any

from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from uplion.core.aimodels import API_VERSION, KIND, Manifest

FIELD_MANAGER = "uplion-operator"
MERGE_PATCH = "application/merge-patch+json"


def load_config() -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))


class Kube:
    def __init__(self) -> None:
        load_config()
        self.api = dynamic.DynamicClient(client.ApiClient())

    def _res(self, api_version: str, kind: str) -> Any:
        return self.api.resources.get(api_version=api_version, kind=kind)

    def apply(self, manifest: Manifest) -> None:
        meta = manifest["metadata"]
        self._res(manifest["apiVersion"], manifest["kind"]).server_side_apply(
            body=manifest, name=meta["name"], namespace=meta["namespace"], field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )  # fmt: skip

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            obj = self._res(api_version, kind).get(name=name, namespace=namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        out: dict[str, Any] = obj.to_dict()
        return out

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        """Delete if present; nothing to do when the object, or its kind (KEDA not installed), is not there."""
        try:
            self._res(api_version, kind).delete(name=name, namespace=namespace)
        except ResourceNotFoundError:
            return
        except ApiException as e:
            if e.status != 404:
                raise

    def list_models(self, namespace: str) -> list[dict[str, Any]]:
        items = self._res(API_VERSION, KIND).get(namespace=namespace).to_dict().get("items", [])
        return list(items)

    def list_all_models(self) -> list[dict[str, Any]]:
        """Every AIModel the operator may read (model names are unique across them)."""
        items = self._res(API_VERSION, KIND).get().to_dict().get("items", [])
        return list(items)

    def annotate(self, name: str, namespace: str, annotations: dict[str, str]) -> None:
        body = {"metadata": {"annotations": annotations}}
        self._res(API_VERSION, KIND).patch(body=body, name=name, namespace=namespace, content_type=MERGE_PATCH)

    def patch_status(self, name: str, namespace: str, status: dict[str, Any], resource_version: str = "") -> bool:
        """Merge-patch the status; with `resource_version`, only if the AIModel is still that version
        (False when it changed meanwhile: the caller reads it again and recomputes)."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            self._res(API_VERSION, KIND).status.patch(body=body, name=name, namespace=namespace,
                                                      content_type=MERGE_PATCH)  # fmt: skip
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True
