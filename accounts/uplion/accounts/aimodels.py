"""Where the admin API's AIModel resources live: the Kubernetes API in a cluster (`KubeStore`, the
accounts service's ServiceAccount needs only aimodels and events in the models' namespace), the
local stack's folder of manifests otherwise (`FolderStore`, with the status the local runner writes).
Both hand back plain resource dicts (apiVersion, kind, metadata, spec, status) and a list of event
dicts; `to_message` turns them into the contract's messages."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.timestamp_pb2 import Timestamp

from uplion.core.aimodels import GROUP, PLURAL, VERSION, Manifest
from uplion.core.model_folder import FolderModel, delete_model, model_file, read_folder, write_model
from uplion.core.topics import Topics
from uplion.v1 import aimodel_pb2

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class StoreError(Exception):
    """kind: not_found, exists, invalid, unavailable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ModelStore(Protocol):
    async def resources(self) -> list[Manifest]: ...
    async def get(self, name: str) -> Manifest: ...
    async def create(self, name: str, spec: Manifest) -> Manifest: ...
    async def replace(self, name: str, spec: Manifest) -> Manifest: ...
    async def delete(self, name: str) -> None: ...
    async def events(self, name: str) -> list[Manifest]: ...


# --- conversions (pure) -----------------------------------------------------------------------------


def spec_to_dict(spec: aimodel_pb2.AIModelSpec) -> Manifest:
    """The CRD's spec (camelCase, only fields that are set) from the message."""
    out: Manifest = MessageToDict(spec)
    if "resources" in out and not out["resources"]:
        del out["resources"]  # an empty Struct says nothing
    return out


def _timestamp(text: str | None) -> Timestamp | None:
    if not text:
        return None
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(text.replace("Z", "+00:00")))
    return ts


def to_message(body: Manifest, backlog: int = -1) -> aimodel_pb2.AIModel:
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    out = aimodel_pb2.AIModel(name=meta.get("name", ""), namespace=meta.get("namespace", ""), backlog=backlog,
                              generation=int(meta.get("generation", 0)))  # fmt: skip
    ParseDict(body.get("spec") or {}, out.spec, ignore_unknown_fields=True)
    out.status.state = status.get("state", "Pending")
    out.status.reason = status.get("reason", "")
    out.status.message = status.get("message", "")
    out.status.replicas = int(status.get("replicas") or 0)
    out.status.ready_replicas = int(status.get("readyReplicas") or 0)
    out.status.observed_generation = int(status.get("observedGeneration") or 0)
    created = _timestamp(meta.get("creationTimestamp"))
    if created is not None:
        out.create_time.CopyFrom(created)
    return out


def event_message(e: Manifest) -> aimodel_pb2.AIModelEvent:
    out = aimodel_pb2.AIModelEvent(type=e.get("type", ""), reason=e.get("reason", ""), message=e.get("message", ""),
                                   source=e.get("source", ""), count=int(e.get("count") or 1))  # fmt: skip
    at = _timestamp(e.get("lastTime"))
    if at is not None:
        out.last_time.CopyFrom(at)
    return out


def page(names: list[str], page_size: int, token: str, default: int = 100, maximum: int = 500) -> tuple[list[str], str]:
    """The names after `token` (the last name of the previous page), at most page_size; and the next token."""
    size = min(page_size or default, maximum)
    rest = [n for n in sorted(names) if n > token] if token else sorted(names)
    chunk = rest[:size]
    return chunk, (chunk[-1] if len(rest) > size else "")


# --- the local stack's folder ----------------------------------------------------------------------


@dataclass
class FolderStore:
    folder: Path
    status_file: Path | None

    def _status(self) -> dict[str, Manifest]:
        if self.status_file is None:
            return {}
        try:
            out: dict[str, Manifest] = json.loads(self.status_file.read_text())
            return out
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _with_status(name: str, entry: FolderModel, status: Manifest) -> Manifest:
        body = entry.body or {"spec": {}}
        created = datetime.fromtimestamp(entry.file.stat().st_ctime).astimezone() if entry.file.exists() else None
        meta = {"name": name, **({"creationTimestamp": created.isoformat()} if created else {})}
        known = status.get(name) or {"state": "Pending", "reason": "WaitingForRunner",
                                     "message": "the local runner has not read this manifest yet"}  # fmt: skip
        return {**body, "metadata": {**body.get("metadata", {}), **meta}, "status": known}

    def _read(self) -> dict[str, Manifest]:
        status = self._status()
        out = {}
        for name, entry in read_folder(self.folder).items():
            if entry.problems and name not in status:
                status[name] = {"state": "Failed", "reason": "InvalidSpec", "message": "; ".join(entry.problems)}
            out[name] = self._with_status(name, entry, status)
        return out

    async def resources(self) -> list[Manifest]:
        return list((await asyncio.to_thread(self._read)).values())

    async def get(self, name: str) -> Manifest:
        found = (await asyncio.to_thread(self._read)).get(name)
        if found is None:
            raise StoreError("not_found", f"AIModel {name!r} not found")
        return found

    def _write(self, name: str, spec: Manifest, exists: bool) -> None:
        """Write AIModel `name` (`exists`: replace it, else create it) unless another one serves its
        model; one reading of the folder, in a worker thread."""
        entries = read_folder(self.folder)
        entry = entries.get(name)
        if exists and entry is None:
            raise StoreError("not_found", f"AIModel {name!r} not found")
        if not exists and (entry is not None or model_file(self.folder, name).exists()):
            raise StoreError("exists", f"AIModel {name!r} already exists")
        for other, e in entries.items():
            if other != name and e.body is not None and e.body.get("spec", {}).get("model") == spec["model"]:
                raise StoreError("exists", f"model {spec['model']!r} is already served by AIModel {other!r}")
        write_model(self.folder, name, spec, entry.file if entry is not None else None)

    def _delete(self, name: str) -> None:
        entry = read_folder(self.folder).get(name)
        if entry is None or not delete_model(entry.file):
            raise StoreError("not_found", f"AIModel {name!r} not found")

    async def create(self, name: str, spec: Manifest) -> Manifest:
        await asyncio.to_thread(self._write, name, spec, False)
        return await self.get(name)

    async def replace(self, name: str, spec: Manifest) -> Manifest:
        await asyncio.to_thread(self._write, name, spec, True)
        return await self.get(name)

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._delete, name)

    async def events(self, name: str) -> list[Manifest]:
        await self.get(name)
        events: list[Manifest] = (self._status().get(name) or {}).get("events", [])
        return events


# --- a cluster --------------------------------------------------------------------------------------


class KubeStore:
    """The kubernetes client (synchronous) in worker threads, in one namespace."""

    def __init__(self, namespace: str) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        self.namespace = namespace or (SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.exists() else "default")
        self.objects = client.CustomObjectsApi()
        self.core = client.CoreV1Api()

    async def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except ApiException as e:
            message = _api_message(e)
            kind = {404: "not_found", 409: "exists", 422: "invalid", 400: "invalid"}.get(e.status or 0, "unavailable")
            raise StoreError(kind, message) from None

    async def resources(self) -> list[Manifest]:
        out = await self._call(self.objects.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL)
        items: list[Manifest] = out.get("items", [])
        return items

    async def get(self, name: str) -> Manifest:
        body: Manifest = await self._call(self.objects.get_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                          PLURAL, name)  # fmt: skip
        return body

    async def create(self, name: str, spec: Manifest) -> Manifest:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AIModel", "metadata": {"name": name}, "spec": spec}
        out: Manifest = await self._call(self.objects.create_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                         PLURAL, body, field_validation="Strict")  # fmt: skip
        return out

    async def replace(self, name: str, spec: Manifest) -> Manifest:
        current = await self.get(name)
        current["spec"] = spec
        out: Manifest = await self._call(self.objects.replace_namespaced_custom_object, GROUP, VERSION,
                                         self.namespace, PLURAL, name, current, field_validation="Strict")  # fmt: skip
        return out

    async def delete(self, name: str) -> None:
        await self._call(self.objects.delete_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, name)

    async def events(self, name: str) -> list[Manifest]:
        await self.get(name)
        selector = f"involvedObject.kind=AIModel,involvedObject.name={name}"
        listed = await self._call(self.core.list_namespaced_event, self.namespace, field_selector=selector)
        out = []
        for e in listed.items:
            last = e.last_timestamp or e.event_time or e.first_timestamp
            out.append({"type": e.type or "", "reason": e.reason or "", "message": e.message or "",
                        "source": (e.reporting_component or (e.source.component if e.source else "") or ""),
                        "count": e.count or 1, "lastTime": last.isoformat() if last else None})  # fmt: skip
        out.sort(key=lambda ev: ev["lastTime"] or "", reverse=True)
        return out


def _api_message(e: Any) -> str:
    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError):
        return str(e.reason or e)


# --- backlog ----------------------------------------------------------------------------------------


@dataclass
class Backlog:
    """Requests queued on a model's topic, from Pulsar's admin API (-1 when it cannot be read)."""

    admin_url: str
    topics: Topics
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # the Pulsar token, if any

    async def of(self, session: aiohttp.ClientSession, model: str) -> int:
        if not self.admin_url:
            return -1
        local = self.topics.tasks(model).removeprefix("persistent://")
        url = f"{self.admin_url.rstrip('/')}/admin/v2/persistent/{local}/stats"
        try:
            async with session.get(url, headers=self.headers, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status == 404:
                    return 0  # no topic yet: nothing was ever sent
                if resp.status != 200:
                    return -1
                stats = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return -1
        sub = (stats.get("subscriptions") or {}).get(self.topics.subscription(model)) or {}
        return int(sub.get("msgBacklog", 0))

    async def many(self, models: list[str]) -> dict[str, int]:
        async with aiohttp.ClientSession() as session:
            values = await asyncio.gather(*(self.of(session, m) for m in models))
        return dict(zip(models, values, strict=True))
