"""Kubernetes Events about this worker's AIModel, when it runs as one (the operator sets
UPLION_AIMODEL_NAME, _NAMESPACE, _UID and UPLION_CONFIG_DIGEST): a Warning with an irreversible
reason when retrying cannot help (bad provider key, exhausted provider quota, bad configuration, no
message queue), at most once a minute per reason, and a Normal `Healthy` once it serves again. The
operator turns them into the AIModel's Failed / Running state; the config digest tells it which
spec and Secrets the report is about."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from uplion.v1 import task_pb2

log = logging.getLogger("uplion.worker")
DIGEST_ANNOTATION = "uplion.io/config-digest"
REASONS = {
    task_pb2.TASK_ERROR_KIND_AUTHENTICATION: "AuthenticationError",
    task_pb2.TASK_ERROR_KIND_QUOTA_EXCEEDED: "APIQuotaExceededError",
}
REPEAT_S = 60.0


@dataclass
class EventReporter:
    name: str
    namespace: str
    uid: str
    digest: str
    instance: str
    _last: dict[str, float] = field(default_factory=dict)
    _failing: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EventReporter | None:
        env = os.environ if env is None else env
        name, namespace = env.get("UPLION_AIMODEL_NAME"), env.get("UPLION_AIMODEL_NAMESPACE")
        if not name or not namespace:
            return None  # not running for an AIModel
        return cls(name, namespace, env.get("UPLION_AIMODEL_UID", ""), env.get("UPLION_CONFIG_DIGEST", ""),
                   env.get("UPLION_WORKER_ID", socket.gethostname()))  # fmt: skip

    def body(self, reason: str, message: str, warning: bool, now: datetime | None = None) -> dict[str, Any]:
        """The core/v1 Event (pure)."""
        now = now or datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{self.name}.",
                "namespace": self.namespace,
                "annotations": {DIGEST_ANNOTATION: self.digest},
            },
            "involvedObject": {
                "apiVersion": "uplion.io/v1alpha1",
                "kind": "AIModel",
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "uplion-worker", "host": self.instance},
            "reportingComponent": "uplion-worker",
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }

    def post_now(self, reason: str, message: str, warning: bool = True) -> None:
        """Blocking; errors are logged, never raised (Events are advisory)."""
        try:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
            event: Any = self.body(reason, message, warning)  # the client accepts the plain dict
            client.CoreV1Api().create_namespaced_event(self.namespace, event)
        except Exception as e:  # noqa: BLE001
            log.warning("could not post a Kubernetes Event: %s", e, extra={"reason": reason})

    async def failed(self, kind: task_pb2.TaskErrorKind.ValueType, message: str) -> None:
        reason = REASONS.get(kind)
        if reason is None:
            return
        now = time.monotonic()
        if now - self._last.get(reason, -REPEAT_S) < REPEAT_S:
            return
        self._last[reason] = now
        self._failing = True
        await asyncio.to_thread(self.post_now, reason, message)

    async def ok(self) -> None:
        if not self._failing:
            return
        self._failing = False
        self._last.clear()
        await asyncio.to_thread(self.post_now, "Healthy", "the worker serves requests again", False)
