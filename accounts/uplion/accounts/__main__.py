"""`python -m uplion.accounts`: the admin/account gRPC API until SIGTERM, then drain.

`python -m uplion.accounts bootstrap-admin EMAIL` (with UPLION_DATABASE_URL) creates the first
admin and prints an admin API token once: the credential the `uplion` CLI starts from."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import asyncpg
import grpc
from grpc_reflection.v1alpha import reflection

from uplion.core.lifecycle import install_stop_signals, run_service
from uplion.core.migrations import Conn, migrate
from uplion.core.observability import Health, start_metrics
from uplion.core.redis_client import connect
from uplion.v1 import admin_pb2, admin_pb2_grpc

from . import tokens
from .aimodels import FolderStore, KubeStore, ModelStore
from .config import AccountsConfig
from .publisher import Publisher
from .service import AdminService
from .unavailable import DatabaseDown

log = logging.getLogger("uplion.accounts")
SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


async def apply_migrations(conn: Conn) -> None:
    """Billing's tables (prices, usage, spend) first: accounts reads and writes some of them."""
    for package, component in (("uplion.billing", "billing"), ("uplion.accounts", "accounts")):
        applied = await migrate(conn, package, component)
        if applied:
            log.info("migrations applied", extra={"component": component, "versions": applied})


def model_store(cfg: AccountsConfig) -> ModelStore | None:
    if cfg.model_store == "folder":
        return FolderStore(Path(cfg.models_dir), Path(cfg.models_status_file) if cfg.models_status_file else None)
    if cfg.model_store == "kubernetes":
        return KubeStore(cfg.models_namespace)
    return None


async def serve(cfg: AccountsConfig) -> None:
    stop = install_stop_signals()
    start_metrics(cfg.metrics_port)
    pool = await asyncpg.create_pool(cfg.database_url, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await apply_migrations(conn)
    redis = (
        connect(cfg.redis_url, cfg.redis_cluster, socket_timeout=1, socket_connect_timeout=1) if cfg.redis_url else None
    )
    publisher = Publisher(redis)
    publisher.start()
    async with pool.acquire() as conn:
        revoked = await tokens.admin_scoped_tombstones(conn)
    for hash_, version in revoked:  # admin-scoped tokens are never inference keys at the edge
        await publisher.token_gone(hash_, version)
    server = grpc.aio.server(interceptors=[DatabaseDown()])
    reads = await asyncpg.create_pool(cfg.database_read_url, min_size=1, max_size=4) if cfg.database_read_url else pool
    service = AdminService(cfg, pool, redis, publisher, model_store(cfg), reads)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(service, server)
    health = Health(server, [SERVICE_NAME])
    reflection.enable_server_reflection([SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(cfg.listen)
    await server.start()
    await health.set_serving(True)
    print(f"uplion accounts listening on port {port}", flush=True)
    await stop.wait()
    await health.set_serving(False)
    await server.stop(cfg.drain_timeout_s)
    await publisher.close()
    if reads is not pool:
        await reads.close()
    await pool.close()
    if redis is not None:
        await redis.aclose()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "bootstrap-admin":
        from .bootstrap import main as bootstrap

        return bootstrap(sys.argv[2:])
    return run_service("accounts", AccountsConfig.from_env, serve)


if __name__ == "__main__":
    sys.exit(main())
