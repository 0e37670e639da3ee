"""`python -m uplion.billing`: apply usage events from Pulsar to PostgreSQL until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

import asyncpg

from uplion.core.lifecycle import install_stop_signals, run_service
from uplion.core.migrations import migrate
from uplion.core.observability import start_metrics
from uplion.core.redis_client import connect

from .config import BillingConfig
from .consumer import Source, UsageConsumer

log = logging.getLogger("uplion.billing")


async def serve(cfg: BillingConfig) -> None:
    stop = install_stop_signals()
    start_metrics(cfg.metrics_port)
    pool = await asyncpg.create_pool(cfg.database_url, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        applied = await migrate(conn, "uplion.billing", "billing")
    if applied:
        log.info("migrations applied", extra={"versions": applied})
    redis = connect(cfg.redis_url, cfg.redis_cluster, socket_timeout=2) if cfg.redis_url else None
    consumers = [await asyncio.to_thread(UsageConsumer, cfg, pool, redis)]
    if cfg.usage_proof_key:  # the workers' recovery records too (consumer.py)
        source = Source.recovery(cfg.pulsar.topics, cfg.usage_proof_key)
        consumers.append(await asyncio.to_thread(UsageConsumer, cfg, pool, redis, source))
    print("uplion billing consuming usage events", flush=True)
    try:
        await asyncio.gather(*(c.run(stop) for c in consumers))  # the batches in hand are finished first
    finally:
        for consumer in consumers:
            await asyncio.to_thread(consumer.close)
        await pool.close()
        if redis is not None:
            await redis.aclose()


def main() -> int:
    return run_service("billing", BillingConfig.from_env, serve)


if __name__ == "__main__":
    sys.exit(main())
