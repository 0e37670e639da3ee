"""`python -m uplion.ratelimit`: the rate-limit service for Envoy until SIGTERM, then drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import grpc
from grpc_reflection.v1alpha import reflection

from uplion.core.lifecycle import install_stop_signals, run_service
from uplion.core.observability import Health, start_metrics

from .limiter import Limiter, RedisHealth
from .loader import Rules
from .resp import PipelinedRedis
from .service import SERVICE, RateLimitService
from .settings import RateLimitSettings
from .settle import Settler

log = logging.getLogger("uplion.ratelimit")


async def serve(cfg: RateLimitSettings) -> None:
    stop = install_stop_signals()
    start_metrics(cfg.metrics_port)
    rules = Rules(cfg.config_dir)
    rules.load()
    # no read timeouts here: the health probe decides when Redis is down (see limiter.RedisHealth)
    r = PipelinedRedis(cfg.redis_url, connections=2, connect_timeout_s=cfg.redis_timeout_s)
    # a PING every 5 ms; two failed in a row (each 0.4x the bound) release waiting decisions within the bound
    redis_health = RedisHealth(cfg.redis_url, cfg.redis_timeout_s * 0.4)
    redis_health.start()
    limiter = Limiter(r, redis_health)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([RateLimitService(rules, limiter).handler()])
    health = Health(server, [SERVICE])
    reflection.enable_server_reflection([SERVICE, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(cfg.listen)
    await server.start()
    await health.set_serving(True)
    tasks = [asyncio.create_task(rules.watch(cfg.reload_s))]
    if cfg.pulsar is not None:
        tasks.append(asyncio.create_task(Settler(cfg.pulsar, limiter).run(stop)))
    print(f"uplion ratelimit listening on port {port} (domains: {', '.join(sorted(rules.domains))})", flush=True)
    await stop.wait()
    await health.set_serving(False)
    await server.stop(cfg.drain_timeout_s)
    if tasks[1:]:
        await asyncio.wait(tasks[1:], timeout=5)  # the settler finishes the event in hand
    for t in tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    redis_health.stop()
    r.close()


def main() -> int:
    return run_service("ratelimit", RateLimitSettings.from_env, serve)


if __name__ == "__main__":
    sys.exit(main())
