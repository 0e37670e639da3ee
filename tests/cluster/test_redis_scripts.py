"""`uplion.core.redis_client.run_scripts` on one server and on the cluster: every call runs exactly
once, also when a server lost its script cache (restarted) between two batches."""

from __future__ import annotations

import redis.asyncio as aioredis

from uplion.core.redis_client import Call, connect, run_scripts
from uplion.devstack.redis import Redis, RedisCluster

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_each_call_runs_once_after_the_script_cache_is_flushed(redis_server: Redis) -> None:
    r = connect(redis_server.url, cluster=False)
    assert isinstance(r, aioredis.Redis)
    keys = [f"scripts:once:{i}" for i in range(5)]
    await r.delete(*keys)
    assert await run_scripts(r, [Call(INCR, [k], [1]) for k in keys]) == [1] * 5
    await r.script_flush()  # as a restarted server has no scripts
    assert await run_scripts(r, [Call(INCR, [k], [10]) for k in keys]) == [11] * 5
    assert await r.mget(keys) == [b"11"] * 5
    await r.aclose()


async def test_calls_spread_over_every_cluster_node(redis_cluster: RedisCluster) -> None:
    r = connect(redis_cluster.url, cluster=True)
    keys = [f"scripts:cluster:{{{i}}}" for i in range(30)]  # 30 hash tags: every node gets some
    for k in keys:
        await r.delete(k)
    assert await run_scripts(r, [Call(INCR, [k], [2]) for k in keys]) == [2] * 30
    assert await run_scripts(r, [Call(INCR, [k], [3]) for k in keys]) == [5] * 30
    await r.aclose()
