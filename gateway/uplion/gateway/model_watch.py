"""The gateway serves the models AIModel resources declare. In a cluster a thread lists and then
watches them (all namespaces, or UPLION_AIMODEL_NAMESPACE) with the kubernetes client, restarting the
watch when it ends or fails, and hands each change to the event loop's registry. In the local stack
(UPLION_MODELS_DIR) a task re-reads the folder of AIModel manifests every second instead."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from uplion.core.aimodels import ModelLimits, backend_of, limits_of
from uplion.core.model_folder import folder_signature, read_folder

from .registry import ModelRegistry

log = logging.getLogger("uplion.gateway")
GROUP, VERSION, PLURAL = "uplion.io", "v1alpha1", "aimodels"


Served = tuple[str | None, ModelLimits, str]  # what an AIModel declares: its model, limits, backend type


def served(spec: dict[str, Any]) -> Served:
    return spec.get("model"), limits_of(spec), backend_of(spec)


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

    def _apply(self, key: str, served: Served | None) -> None:
        assert self._loop is not None
        model, limits, backend = served if served is not None else (None, None, "")
        self._loop.call_soon_threadsafe(self.registry.declare, key, model, limits, backend)

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
                seen = {resource_key(o): served(o.get("spec") or {}) for o in listed.get("items", [])}
                for key in list({k for owners in self.registry.declared.values() for k in owners} - set(seen)):
                    self._apply(key, None)
                for key, what in seen.items():
                    self._apply(key, what)
                self.synced.set()
                stream = watch.Watch().stream(listing, resource_version=listed["metadata"]["resourceVersion"],
                                              timeout_seconds=300)  # fmt: skip
                for event in stream:
                    if self._stop.is_set():
                        return
                    obj = event["object"]
                    deleted = event["type"] == "DELETED"
                    self._apply(resource_key(obj), None if deleted else served(obj.get("spec") or {}))
            except Exception as e:  # noqa: BLE001 (API server gone, 410 Gone, ...: list again)
                log.warning("AIModel watch restarting: %s", e)
                time.sleep(1.0)


def folder_models(folder: Path) -> dict[str, Served]:
    """resource key -> (model, limits, backend type) of each valid manifest in the folder."""
    return {f"local/{name}": served(e.body["spec"]) for name, e in read_folder(folder).items()
            if e.valid and e.body is not None}  # fmt: skip


class FolderWatch:
    """The local stack's AIModel folder, polled: a file added, changed or removed shows in the model
    list within `interval` seconds. Each tick stats the files; they are read and parsed only when
    their names, times or sizes changed."""

    def __init__(self, registry: ModelRegistry, folder: Path, interval: float = 1.0) -> None:
        self.registry, self.folder, self.interval = registry, folder, interval
        self._task: asyncio.Task[None] | None = None
        self.current: dict[str, Served] = {}
        self._signature: tuple[tuple[str, int, int], ...] | None = None

    def apply(self, seen: dict[str, Served]) -> None:
        for key in set(self.current) - set(seen):
            self.registry.declare(key, None)
        for key, (model, limits, backend) in seen.items():
            if self.current.get(key) != (model, limits, backend):
                self.registry.declare(key, model, limits, backend)
        self.current = seen

    def start(self) -> None:
        self.apply(folder_models(self.folder))
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                signature = await asyncio.to_thread(folder_signature, self.folder)
                if signature != self._signature:
                    self.apply(await asyncio.to_thread(folder_models, self.folder))
                    self._signature = signature
            except Exception as e:  # noqa: BLE001 (an unreadable moment: try again next tick)
                log.warning("model folder unreadable: %s", e)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
