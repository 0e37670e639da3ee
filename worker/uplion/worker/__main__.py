"""`python -m uplion.worker`: serve one model from its Pulsar topic until SIGTERM, then drain."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import grpc
import pulsar.asyncio as pa

from uplion.core.config import ConfigError
from uplion.core.lifecycle import install_stop_signals, run_service
from uplion.core.observability import Health, start_metrics

from .backends.base import Backend
from .config import WorkerConfig
from .k8s_events import EventReporter
from .runner import Runner

log = logging.getLogger("uplion.worker")


def make_backend(cfg: WorkerConfig) -> Backend:
    if cfg.model_type == "echo":
        from .backends.echo import EchoBackend, EchoSettings

        return EchoBackend(
            EchoSettings(cfg.echo_token_delay_s, cfg.echo_first_token_delay_s, crash_on=cfg.echo_crash_on)
        )
    if cfg.model_type == "remote":
        from .backends.remote import RemoteBackend

        return RemoteBackend(cfg.accounts, cfg.upstream_model, cfg.upstream_timeout_s)
    from .backends.local import LocalBackend

    return LocalBackend(cfg.local_model_path)


async def serve(cfg: WorkerConfig) -> None:
    stop = install_stop_signals()
    start_metrics(cfg.metrics_port)
    health_server = grpc.aio.server()
    health = Health(health_server, ["uplion.worker"])
    if cfg.health_port:
        health_server.add_insecure_port(f"0.0.0.0:{cfg.health_port}")
        await health_server.start()
    events = EventReporter.from_env()
    try:
        backend = make_backend(cfg)
    except Exception as e:  # noqa: BLE001 (a model that cannot load: say why on the AIModel, then exit)
        message = f"the model cannot be loaded: {getattr(e, 'message', None) or e}"[:1000]
        log.error(message)
        if events is not None:
            await asyncio.to_thread(events.post_now, "ConfigurationError", message)
        raise SystemExit(2) from None
    client = pa.Client(cfg.pulsar.url, **cfg.pulsar.client_options())
    runner = Runner(cfg, backend, client, events)
    try:
        await runner.start()
    except Exception as e:
        runner.journal.close()
        if events is not None:
            await asyncio.to_thread(events.post_now, "MessageQueueConnectionError", f"cannot reach Pulsar: {e}")
        raise
    await health.set_serving(True)
    print(f"uplion worker {cfg.worker_id} serving model {cfg.model!r} ({cfg.model_type})", flush=True)
    await stop.wait()
    log.info("draining", extra={"inflight": runner.busy})
    await health.set_serving(False)
    await runner.drain(cfg.drain_timeout_s)
    await backend.close()
    await client.close()
    await health_server.stop(1)


def load_config() -> WorkerConfig:
    """The config; a bad one is also reported as a ConfigurationError Event on the AIModel."""
    try:
        return WorkerConfig.from_env()
    except ConfigError as e:
        events = EventReporter.from_env()
        if events is not None:
            events.post_now("ConfigurationError", str(e))
        raise


async def serve_or_supervise(cfg: WorkerConfig) -> None:
    if cfg.processes > 1:
        from .processes import supervise

        await supervise(cfg, os.environ)
    else:
        await serve(cfg)


def main() -> int:
    return run_service("worker", load_config, serve_or_supervise)


if __name__ == "__main__":
    sys.exit(main())
