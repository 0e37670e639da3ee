"""The local stack's operator: workers run as processes from the AIModel manifests in a folder
(`models/` by default), with the environment the operator would give their pods
(`uplion.core.aimodels.worker_env`, resolved by `resolve_env`). A thread re-reads the folder every
second: a new file starts workers, a changed spec restarts them with the new settings, a removed
file stops them. On a broker with authentication each model's workers get a token of their own
role (`uplion-worker-<model>`), its permissions granted first (docs/pulsar-auth.md). Each model's
status (Pending, Running, Failed with a reason) and its recent events go to a JSON file the admin
API reads; writing it is atomic."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uplion.core import pulsar_auth
from uplion.core.aimodels import (
    Manifest,
    Platform,
    UnresolvedSecret,
    local_secret_variable,
    resolve_env,
    worker_env,
)
from uplion.core.model_folder import FolderModel, read_folder

from .platform import service_env
from .procs import Proc, free_port, spawn
from .pulsar import pulsar_credentials

log = logging.getLogger("uplion.devstack")
READY_LINE = "serving model"
CONFIG_EXIT = 2  # the worker's exit code for a model that cannot be loaded (worker/__main__.py)
RESTART_BACKOFF_S = 5.0
MAX_EVENTS = 50


@dataclass
class Desired:
    """What one AIModel asks of the local runner (pure: from its manifest and the environment)."""

    model: str
    replicas: int
    env: dict[str, str]
    digest: str


def desired(body: Manifest, platform: Platform, secrets: Mapping[str, str]) -> Desired:
    """Raises UnresolvedSecret when a provider key's variable is missing."""
    spec = body["spec"]
    env = resolve_env(worker_env(body, platform), lambda s, k: secrets.get(local_secret_variable(s, k)), {})
    replicas = int(spec.get("replicas", 1))
    digest = hashlib.sha256(json.dumps([env, replicas], sort_keys=True).encode()).hexdigest()[:16]
    return Desired(spec["model"], replicas, env, digest)


def last_error(log_text: str) -> str:
    """The line a worker that gave up wrote last about why (its ERROR line, else its last line)."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("level") in ("ERROR", "CRITICAL"):
                return str(record.get("message") or record.get("msg") or line)[:1000]
        if "ERROR" in line or "cannot be loaded" in line:
            return line[:1000]
    return lines[-1][:1000] if lines else "the worker exited without a word"


def status_of(replicas: int, ready: int, failure: tuple[str, str] | None, restarting: bool) -> dict[str, Any]:
    """A model's status from its workers (pure): Failed wins, then Running once every replica serves."""
    if failure is not None:
        state, (reason, message) = "Failed", failure
    elif replicas == 0:
        state, reason, message = "Running", "ScaledToZero", "no workers requested (replicas: 0)"
    elif ready >= replicas:
        state, reason, message = "Running", "WorkersReady", f"{ready}/{replicas} workers serving"
    else:
        reason = "WorkerRestarting" if restarting else "WorkersStarting"
        state, message = "Pending", f"{ready}/{replicas} workers serving"
    return {"state": state, "reason": reason, "message": message, "replicas": replicas, "readyReplicas": ready}


@dataclass
class Running:
    """The workers of one AIModel."""

    want: Desired
    procs: list[Proc]
    failure: tuple[str, str] | None = None
    restarts_at: dict[int, float] = field(default_factory=dict)  # slot -> when to restart it
    ready_pids: set[int] = field(default_factory=set)  # workers whose log said they serve

    def ready(self) -> int:
        for p in self.procs:
            if p.pid not in self.ready_pids and p.alive() and READY_LINE in _read(p.log_path):
                self.ready_pids.add(p.pid)
        return sum(1 for p in self.procs if p.pid in self.ready_pids and p.alive())


class LocalModels:
    def __init__(self, folder: Path, logs: Path, platform: Platform, status_file: Path,
                 environ: Mapping[str, str] | None = None,
                 on_model: Callable[[str, Manifest], None] | None = None) -> None:  # fmt: skip
        self.folder, self.logs, self.platform, self.status_file = folder, logs, platform, status_file
        self.environ = os.environ if environ is None else environ
        self.on_model = on_model  # called once per model served (the stack seeds its price)
        self.running: dict[str, Running] = {}
        self.problems: dict[str, tuple[str, str]] = {}  # name -> (reason, message) for models that cannot run
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.seen_models: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- the loop ------------------------------------------------------------------------------
    def start(self, wait_ready: float = 0.0) -> None:
        """Reconcile once (and wait up to `wait_ready` s for the first workers), then every second."""
        self.reconcile()
        deadline = time.monotonic() + wait_ready
        while time.monotonic() < deadline and any(self._pending()):
            time.sleep(0.2)
            self.reconcile()
        self._thread = threading.Thread(target=self._loop, name="local-models", daemon=True)
        self._thread.start()

    def _pending(self) -> list[str]:
        return [n for n, s in self.statuses().items() if s["state"] == "Pending"]

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.reconcile()
            except Exception:
                log.exception("local model reconcile failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            for name in list(self.running):
                self._stop_workers(name, "Stopped", "the stack is stopping")

    # -- reconcile -----------------------------------------------------------------------------
    def reconcile(self) -> None:
        with self._lock:
            entries = read_folder(self.folder)
            for name in list(self.running):
                if name not in entries:
                    self._stop_workers(name, "Deleted", "the manifest was removed")
                elif not entries[name].valid:
                    self._stop_workers(name, "Invalid", "the manifest is invalid")
            self.problems = {}
            for name, entry in entries.items():
                self._reconcile_one(name, entry)
            for name in list(self.events):
                if name not in entries:
                    del self.events[name]
            self._write_status(entries)

    def _reconcile_one(self, name: str, entry: FolderModel) -> None:
        if not entry.valid or entry.body is None:
            reason = "DuplicateModel" if any(p.startswith("DuplicateModel") for p in entry.problems) else "InvalidSpec"
            self._note(name, "Warning", reason, "; ".join(entry.problems), once=True)
            self.problems[name] = (reason, "; ".join(entry.problems))
            return
        try:
            want = desired(entry.body, self.platform, self.environ)
        except UnresolvedSecret as e:
            self._stop_workers(name, "SecretMissing", str(e))
            self._note(name, "Warning", "SecretMissing", str(e), once=True)
            self.problems[name] = ("SecretMissing", str(e))
            return
        current = self.running.get(name)
        if current is not None and current.want.digest != want.digest:
            self._stop_workers(name, "Reconfiguring", "the spec changed: restarting its workers")
            current = None
        if current is None:
            self._start_workers(name, want, entry.body)
        else:
            self._watch_workers(name, current)

    def _start_workers(self, name: str, want: Desired, body: Manifest) -> None:
        if want.model not in self.seen_models and self.on_model is not None:
            self.on_model(want.model, body)
        self.seen_models.add(want.model)
        procs = [self._spawn(name, want, i) for i in range(want.replicas)]
        self.running[name] = Running(want, procs)
        self._note(name, "Normal", "Started", f"started {want.replicas} worker(s) for model {want.model!r}")

    def _spawn(self, name: str, want: Desired, slot: int) -> Proc:
        metrics = free_port()
        worker_id = f"{name}-{want.digest[:6]}-{slot}"
        # on a broker with authentication: the model's own role, its permissions granted (idempotent)
        role, model = pulsar_auth.worker_role(want.model), want.model
        pulsar = pulsar_credentials(
            self.platform.pulsar_url, want.env, role, lambda t: pulsar_auth.worker_permissions(model, t)
        )
        env = {**want.env, **pulsar, "UPLION_WORKER_ID": worker_id, "UPLION_METRICS_PORT": str(metrics)}
        log_path = self.logs / f"worker-{worker_id}.log"
        return spawn(f"worker {name}", [sys.executable, "-m", "uplion.worker"], log_path, env=service_env(env))

    def _watch_workers(self, name: str, run: Running) -> None:
        if run.failure is not None:
            return  # stays Failed until the spec changes
        now = time.monotonic()
        for i, proc in enumerate(run.procs):
            code = proc.popen.poll()
            if code is None:
                continue
            if code == CONFIG_EXIT:
                run.failure = ("ConfigurationError", last_error(proc.log_tail(50)))
                self._note(name, "Warning", "ConfigurationError", run.failure[1])
                for other in run.procs:
                    other.stop(timeout=10)
                return
            if i not in run.restarts_at:
                run.restarts_at[i] = now + RESTART_BACKOFF_S
                self._note(
                    name, "Warning", "WorkerExited", f"worker {i} exited with {code}: {last_error(proc.log_tail(50))}"
                )
            elif now >= run.restarts_at[i]:
                del run.restarts_at[i]
                run.procs[i] = self._spawn(name, run.want, i)

    def _stop_workers(self, name: str, reason: str, message: str) -> None:
        run = self.running.pop(name, None)
        if run is None:
            return
        for proc in run.procs:
            proc.stop(timeout=30)
        self._note(name, "Normal", reason, message)

    # -- status --------------------------------------------------------------------------------
    def _note(self, name: str, kind: str, reason: str, message: str, once: bool = False) -> None:
        events = self.events.setdefault(name, [])
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if events and events[0]["reason"] == reason and events[0]["message"] == message:
            if not once:
                events[0]["count"] += 1
                events[0]["lastTime"] = stamp
            return
        events.insert(0, {"type": kind, "reason": reason, "message": message, "source": "uplion-devstack",
                          "count": 1, "lastTime": stamp})  # fmt: skip
        del events[MAX_EVENTS:]

    def statuses(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, (reason, message) in self.problems.items():
            out[name] = status_of(0, 0, (reason, message), False)
        for name, run in self.running.items():
            out[name] = status_of(run.want.replicas, run.ready(), run.failure, bool(run.restarts_at))
        return out

    def _write_status(self, entries: dict[str, FolderModel]) -> None:
        statuses = self.statuses()
        doc = {name: {**statuses.get(name, status_of(0, 0, None, False)), "file": entry.file.name,
                      "events": self.events.get(name, [])}
               for name, entry in entries.items()}  # fmt: skip
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.status_file.parent, prefix=".models-status-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.status_file)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
