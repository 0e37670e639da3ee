"""`python -m uplion.ratelimit`: settle the token reservations of the rate-limit service (the Go
binary `uplion-ratelimit`, which runs beside it) from usage events, until SIGTERM; the event in
hand is finished first."""

from __future__ import annotations

import asyncio
import sys

from uplion.core.lifecycle import install_stop_signals, run_service
from uplion.core.observability import start_metrics
from uplion.core.redis_client import connect

from .settings import SettlerSettings
from .settle import Settler


async def serve(cfg: SettlerSettings) -> None:
    stop = install_stop_signals()
    start_metrics(cfg.metrics_port)
    redis = connect(cfg.redis_url, cfg.redis_cluster, socket_timeout=2)
    settler = await asyncio.to_thread(Settler, cfg.pulsar, redis)
    ready = asyncio.Event()
    task = asyncio.create_task(settler.run(stop, ready))
    subscribed = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, subscribed}, return_when=asyncio.FIRST_COMPLETED)
    subscribed.cancel()
    if ready.is_set():
        print("uplion ratelimit settler consuming usage events", flush=True)
    try:
        await task  # raises if subscribing failed
    finally:
        await redis.aclose()


def main() -> int:
    return run_service("ratelimit", SettlerSettings.from_env, serve)


if __name__ == "__main__":
    sys.exit(main())
