"""Pulsar access for each model's workers (I/O): the broker's admin API as a superuser grants the
role `uplion-worker-<model>` its topics (`uplion.core.pulsar_auth.worker_permissions`) and revokes
them when no AIModel serves the model any more.

The admin client is blocking; every call runs in a worker thread of its own with a deadline, so a
broker that hangs holds a handler for at most `deadline_s`. Grants and revokes of one model name are
serialized (one operator replica), and a revoke first checks, under that lock, that no live AIModel
names the model: a grant for a new holder never lands before a revoke meant for the old one."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable
from typing import Any

from uplion.core.pulsar_auth import Permissions, PulsarAdmin, worker_permissions, worker_role
from uplion.core.topics import Topics

from . import ownership

# apply(): the namespaces (2), 3 topics, 4 grants and a subscription; revoke(): 4 grants and a subscription
CALLS_PER_CHANGE = 10


class AccessError(RuntimeError):
    """The broker's admin API refused, failed or did not answer in time; the message says which
    call and why, never a token."""


class PulsarAccess:
    def __init__(self, admin: PulsarAdmin, topics: Topics) -> None:
        self.admin = admin
        self.topics = topics
        self.deadline_s = admin.timeout_s * CALLS_PER_CHANGE
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="pulsar-admin")
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def _lock(self, model: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(model, threading.Lock())

    def _bounded(self, what: str, call: Callable[[Permissions], None], permissions: Permissions) -> None:
        future = self._pool.submit(call, permissions)
        try:
            future.result(timeout=self.deadline_s)
        except concurrent.futures.TimeoutError:
            late = f"the admin API at {self.admin.url} did not finish in {self.deadline_s:g} s"
            raise AccessError(f"{what}: {late}") from None
        except Exception as e:  # noqa: BLE001 - AdminError, URLError, OSError: all reported the same way
            raise AccessError(f"{what}: {e}") from None

    def grant(self, model: str) -> None:
        """Create the model's topics (and namespaces) if missing and grant its workers' role on them."""
        with self._lock(model):
            self._bounded(f"granting {worker_role(model)}", self.admin.apply, worker_permissions(model, self.topics))

    def revoke_unless_served(self, model: str, list_models: Callable[[], Iterable[dict[str, Any]]]) -> bool:
        """Revoke the role's grants when no live AIModel names `model` (read fresh, under the lock);
        True when revoked. An AIModel still naming it (the holder, or one waiting to take the name
        over) keeps the grants: its reconcile applies them again anyway."""
        with self._lock(model):
            if ownership.queue_owner(model, list_models()) is not None:
                return False
            self._bounded(f"revoking {worker_role(model)}", self.admin.revoke, worker_permissions(model, self.topics))
            return True
