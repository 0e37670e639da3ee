"""`python -m uplion.console`: serve the built console until SIGTERM, then drain."""

from __future__ import annotations

import logging
import sys

import grpc
from aiohttp import web

from uplion.core.lifecycle import install_stop_signals, run_service
from uplion.core.observability import Health, start_metrics

from .assets import AssetStore
from .config import ConsoleConfig
from .server import READY_KEY, make_app

log = logging.getLogger("uplion.console")
SERVICE_NAME = "uplion.console"


async def serve(cfg: ConsoleConfig) -> None:
    stop = install_stop_signals()
    start_metrics(cfg.metrics_port)
    store = AssetStore(cfg.assets, cfg.max_cached_file_bytes)
    log.info("assets loaded", extra={"folder": str(cfg.assets), "files": len(store.assets), "bytes": store.total_bytes})
    app = make_app(store)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=cfg.drain_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    health: Health | None = None
    grpc_server: grpc.aio.Server | None = None
    if cfg.grpc_listen:
        grpc_server = grpc.aio.server()
        health = Health(grpc_server, [SERVICE_NAME])
        grpc_port = grpc_server.add_insecure_port(cfg.grpc_listen)
        await grpc_server.start()
        await health.set_serving(True)
        log.info("health listening", extra={"grpc_port": grpc_port})
    port = runner.addresses[0][1] if runner.addresses else cfg.port
    print(f"uplion console listening on port {port}", flush=True)
    await stop.wait()
    log.info("draining")
    app[READY_KEY]["ready"] = False
    if health is not None:
        await health.set_serving(False)
    await runner.cleanup()  # stops accepting, lets running requests finish within the drain timeout
    if grpc_server is not None:
        await grpc_server.stop(cfg.drain_timeout_s)


def main() -> int:
    return run_service("console", ConsoleConfig.from_env, serve)


if __name__ == "__main__":
    sys.exit(main())
