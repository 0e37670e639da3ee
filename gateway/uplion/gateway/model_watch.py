"""In a cluster, the gateway serves the models AIModel resources declare: a thread lists and then
watches them (all namespaces, or UPLION_AIMODEL_NAMESPACE) with the kubernetes client, restarting the
watch when it ends or fails, and hands each change to the event loop's registry."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from .registry import ModelRegistry

log = logging.getLogger("uplion.gateway")
GROUP, VERSION, PLURAL = "uplion.io", "v1alpha1", "aimodels"


def resource_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class AIModelWatch:
    def __init__(self, registry: ModelRegistry, namespace: str = "") -> None:
        self.registry = registry
        self.namespace = namespace
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.synced = threading.Event()  # set once the first full list is in the registry

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._run, name="aimodel-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _apply(self, key: str, model: str | None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.registry.declare, key, model)

    def _run(self) -> None:
        from kubernetes import client, config, watch

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        api = client.CustomObjectsApi()

        def listing(**kw: Any) -> Any:
            if self.namespace:
                return api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, **kw)
            return api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)

        while not self._stop.is_set():
            try:
                listed = listing()
                seen = {resource_key(o): o["spec"].get("model") for o in listed.get("items", [])}
                for key in list({k for owners in self.registry.declared.values() for k in owners} - set(seen)):
                    self._apply(key, None)
                for key, model in seen.items():
                    self._apply(key, model)
                self.synced.set()
                stream = watch.Watch().stream(listing, resource_version=listed["metadata"]["resourceVersion"],
                                              timeout_seconds=300)  # fmt: skip
                for event in stream:
                    if self._stop.is_set():
                        return
                    obj = event["object"]
                    deleted = event["type"] == "DELETED"
                    self._apply(resource_key(obj), None if deleted else (obj.get("spec") or {}).get("model"))
            except Exception as e:  # noqa: BLE001 (API server gone, 410 Gone, ...: list again)
                log.warning("AIModel watch restarting: %s", e)
                time.sleep(1.0)
