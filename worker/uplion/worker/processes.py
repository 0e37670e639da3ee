"""A worker pod on more than one core: with UPLION_WORKER_PROCESSES=N the worker's main process
supervises N worker processes of the same model. Each is an ordinary worker with its share of the
slots and its own Pulsar consumer, so the self-serving rule holds across them: a slot asks the
broker for a task only when it is free, whichever process it lives in.

The supervisor serves the pod's health port, relays SIGTERM (each child drains its own tasks),
restarts a child that dies (its unacknowledged tasks are redelivered to the others meanwhile) and
exits when every child has stopped. Child i serves metrics on UPLION_METRICS_PORT + i and keeps its
crash journal in <UPLION_WORKER_JOURNAL_DIR>/i. When a child dies the supervisor reports the attempts
it died in to their gateways at once (journal.py: the gateway counts them and sets a task aside that
crashes too many), with a Pulsar client of its own, before restarting it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
import pulsar.asyncio as pa

from uplion.core.lifecycle import install_stop_signals
from uplion.core.observability import Health
from uplion.core.pulsar import Producers

from .config import WorkerConfig
from .journal import Journal, report_crashes

log = logging.getLogger("uplion.worker")

READY = "serving model"
RESTART_DELAY_S = 1.0


def split_slots(total: int, processes: int) -> list[int]:
    """`total` slots over `processes` processes, as evenly as possible (earlier ones get the rest)."""
    base, extra = divmod(total, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def child_env(env: Mapping[str, str], cfg: WorkerConfig, index: int, slots: int) -> dict[str, str]:
    """The environment of worker process `index`: one process, its slots, its own id, metrics port
    and crash journal (a folder per index: a restarted child reports the attempts its predecessor
    died in); the supervisor keeps the health port."""
    return {
        **env,
        "UPLION_WORKER_PROCESSES": "1",
        "UPLION_MAX_PROCESS_NUM": str(slots),
        "UPLION_WORKER_ID": f"{cfg.worker_id}-{index}",
        "UPLION_HEALTH_PORT": "0",
        "UPLION_METRICS_PORT": str(cfg.metrics_port + index if cfg.metrics_port else 0),
        "UPLION_WORKER_JOURNAL_DIR": str(Path(cfg.journal_dir) / str(index)),
    }


class Child:
    def __init__(self, cfg: WorkerConfig, env: Mapping[str, str], index: int, slots: int) -> None:
        self.env = child_env(env, cfg, index, slots)
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.relay: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.ready.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "uplion.worker", env=self.env, stdout=asyncio.subprocess.PIPE
        )
        self.relay = asyncio.create_task(self._relay(self.proc))

    async def _relay(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if READY in line:  # the supervisor announces the pod once every process is ready
                self.ready.set()
                log.info("worker process ready", extra={"worker_process": self.index, "pid": proc.pid})
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    @property
    def journal(self) -> Journal:
        return Journal(Path(self.env["UPLION_WORKER_JOURNAL_DIR"]))

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


async def _all_ready(children: list[Child]) -> None:
    for child in children:
        await child.ready.wait()


async def supervise(cfg: WorkerConfig, env: Mapping[str, str]) -> None:
    client = pa.Client(cfg.pulsar.url, **cfg.pulsar.client_options())  # crash reports only
    producers = Producers(client)
    try:
        await _supervise(cfg, env, producers)
    finally:
        await producers.close()
        await client.close()
        _remove_if_empty(Path(cfg.journal_dir))  # the children's folders are gone if they had nothing left


async def _supervise(cfg: WorkerConfig, env: Mapping[str, str], producers: Producers) -> None:
    async def producer_for(topic: str) -> pa.Producer:
        return await producers.get(topic, batching_enabled=False)

    stop = install_stop_signals()
    health_server = grpc.aio.server()
    health = Health(health_server, ["uplion.worker"])
    if cfg.health_port:
        health_server.add_insecure_port(f"0.0.0.0:{cfg.health_port}")
        await health_server.start()
    children = [Child(cfg, env, i, n) for i, n in enumerate(split_slots(cfg.max_concurrency, cfg.processes))]
    for child in children:
        await child.start()
    stopping = asyncio.create_task(stop.wait())
    ready = asyncio.create_task(_all_ready(children))
    waits = {asyncio.create_task(c.proc.wait()): c for c in children if c.proc is not None}
    await asyncio.wait([ready, stopping, *waits], return_when=asyncio.FIRST_COMPLETED)
    early = [waits[t] for t in waits if t.done()]
    if early and not ready.done():  # e.g. Pulsar unreachable: fail the pod as a single worker would
        for child in children:
            child.signal(signal.SIGTERM)
        await asyncio.wait(list(waits), timeout=cfg.drain_timeout_s + 5)
        ready.cancel()
        raise RuntimeError(f"worker process {early[0].index} exited while starting")
    if not stop.is_set():
        await health.set_serving(True)
        print(f"uplion worker {cfg.worker_id} {READY} {cfg.model!r} ({cfg.model_type}, "
              f"{cfg.processes} processes)", flush=True)  # fmt: skip
    while not stop.is_set():
        done, _ = await asyncio.wait([*waits, stopping], return_when=asyncio.FIRST_COMPLETED)
        for task in done & waits.keys():
            child = waits.pop(task)
            log.error("worker process exited; restarting", extra={"worker_process": child.index, "code": task.result()})
            await report_crashes(child.journal, producer_for, keep_unsent=True)
            await asyncio.sleep(RESTART_DELAY_S)
            if stop.is_set():
                break
            await child.start()
            assert child.proc is not None
            waits[asyncio.create_task(child.proc.wait())] = child
    await health.set_serving(False)
    for child in children:
        child.signal(signal.SIGTERM)
    pending = [t for t in waits if not t.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=cfg.drain_timeout_s + 5)
        for task in late:
            waits[task].signal(signal.SIGKILL)
    ready.cancel()
    await health_server.stop(1)
