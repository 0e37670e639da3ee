"""`python -m uplion.authz`: Envoy's ext_authz gRPC service until SIGTERM, then drain."""

from __future__ import annotations

import gc
import logging
import sys

import asyncpg
import grpc
from envoy.service.auth.v3 import external_auth_pb2
from grpc_reflection.v1alpha import reflection

from uplion.core.lifecycle import install_stop_signals, run_service
from uplion.core.observability import Health, start_metrics
from uplion.core.redis_client import connect

from .cache import TtlCache
from .config import AuthzConfig
from .decision import Found
from .holds import Holds
from .lookup import Lookup
from .service import AuthorizationService
from .throttle import AddressBudget

log = logging.getLogger("uplion.authz")
SERVICE_NAME = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name


async def serve(cfg: AuthzConfig) -> None:
    stop = install_stop_signals()
    start_metrics(cfg.metrics_port)
    # no connection at start is required: PostgreSQL may come up later, and every query has a timeout
    pool = asyncpg.create_pool(cfg.database_url, min_size=0, max_size=4, timeout=cfg.db_timeout_s)
    await pool
    redis = (
        connect(
            cfg.redis_url,
            cfg.redis_cluster,
            decode_responses=True,
            socket_timeout=cfg.redis_timeout_s,
            socket_connect_timeout=cfg.redis_timeout_s,
            max_connections=64,
        )
        if cfg.redis_url
        else None
    )
    budget = AddressBudget(cfg.unknown_keys_per_address_per_minute)
    lookup = Lookup(
        redis, pool, cfg.redis_timeout_s, cfg.db_timeout_s, cfg.breaker_open_s, budget, cfg.cache_max_entries
    )
    holds = Holds(
        redis,
        pool,
        ttl_ms=int(cfg.quota_hold_ttl_s * 1000),
        timeout_s=cfg.quota_hold_timeout_s,
        price_refresh_s=cfg.quota_price_refresh_s,
        default_estimate=cfg.quota_default_estimate,
    )
    await holds.start()
    service = AuthorizationService(
        lookup, TtlCache[Found](cfg.cache_ttl_s, cfg.cache_max_entries), cfg.fail_open, holds
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([service.handler()])
    health = Health(server, [SERVICE_NAME])
    reflection.enable_server_reflection([SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(cfg.listen)
    await server.start()
    # everything allocated so far lives as long as the process: keep it out of the collector's scans,
    # and collect the young generation less often (shorter tail latency under load)
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 50, 1000)
    await health.set_serving(True)
    print(f"uplion authz listening on port {port}", flush=True)
    await stop.wait()
    await health.set_serving(False)
    await server.stop(cfg.drain_timeout_s)
    await holds.close()
    await pool.close()
    if redis is not None:
        await redis.aclose()


def main() -> int:
    return run_service("authz", AuthzConfig.from_env, serve)


if __name__ == "__main__":
    sys.exit(main())
