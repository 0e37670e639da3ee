"""`python -m uplion.gateway`: the gRPC inference gateway, until SIGTERM, then drain."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import grpc
import pulsar.asyncio as pa
from grpc_reflection.v1alpha import reflection

from uplion.core.lifecycle import install_stop_signals, run_service
from uplion.core.observability import Health, start_metrics
from uplion.v1 import inference_pb2, inference_pb2_grpc

from .config import GatewayConfig
from .dispatcher import Dispatcher
from .model_watch import AIModelWatch, FolderWatch
from .registry import ModelRegistry
from .response_store import ResponseStore
from .service import InferenceService

log = logging.getLogger("uplion.gateway")
SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name


async def serve(cfg: GatewayConfig, ready: asyncio.Event | None = None) -> None:
    stop = install_stop_signals()
    start_metrics(cfg.metrics_port)
    client = pa.Client(cfg.pulsar.url, **cfg.pulsar.client_options())
    dispatcher = Dispatcher(client, cfg.pulsar.topics, cfg.gateway_id, cfg.publish_timeout_s, cfg.max_worker_crashes,
                            cfg.usage_proof_key)  # fmt: skip
    await dispatcher.start()
    await dispatcher.prepare(cfg.models)
    options = [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
    ]
    server = grpc.aio.server(options=options)
    registry = ModelRegistry.static(cfg.models, remote=cfg.remote_models, responses=cfg.responses_models)
    watcher: AIModelWatch | FolderWatch | None = None
    if cfg.watch_aimodels:
        watcher = AIModelWatch(registry, cfg.aimodel_namespace)
    elif cfg.models_dir:
        watcher = FolderWatch(registry, Path(cfg.models_dir))
    if watcher is not None:
        watcher.start()
    store = await ResponseStore.open(cfg.database_url, cfg.database_max_connections) if cfg.database_url else None
    service = InferenceService(cfg, dispatcher, registry, store)
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(service, server)
    health = Health(server, [SERVICE_NAME])
    reflection.enable_server_reflection([SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(cfg.listen)
    await server.start()
    await health.set_serving(True)
    print(f"uplion gateway {cfg.gateway_id} listening on port {port} (models: {', '.join(cfg.models)})", flush=True)
    if ready:
        ready.set()
    await stop.wait()
    log.info("draining", extra={"inflight": dispatcher.inflight})
    await health.set_serving(False)
    await server.stop(cfg.drain_timeout_s)  # refuses new RPCs, lets running ones finish
    if watcher is not None:
        watcher.stop()
    await dispatcher.close()  # waits for usage events still being published
    if store is not None:
        await store.close()
    await client.close()


def main() -> int:
    return run_service("gateway", GatewayConfig.from_env, serve)


if __name__ == "__main__":
    sys.exit(main())
