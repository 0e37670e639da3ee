"""Connecting to Redis, one server or a Redis Cluster (`UPLION_REDIS_CLUSTER`), and running Lua
scripts in a pipeline either way.

In cluster mode the URL names any one node (a seed); the client learns the others and routes each
command by its key's hash slot. Every script uplion runs declares its keys, all in one slot
(`uplion.core.credentials` explains the hash tags), so the same code serves both modes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

AnyRedis = Redis | RedisCluster

CLUSTER_SETTING = "UPLION_REDIS_CLUSTER"
# what a Redis call raises when Redis is down, slow or (a cluster) not serving a slot
ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError, TimeoutError)


def connect(url: str, cluster: bool, **options: Any) -> AnyRedis:
    """A client for `url`; nothing is sent until the first command."""
    if cluster:
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


@dataclass(frozen=True)
class Call:
    """One run of a script: its source, KEYS and ARGV."""

    script: str
    keys: Sequence[str]
    args: Sequence[str | int | float]


async def run_scripts(r: AnyRedis, calls: Sequence[Call]) -> list[Any]:
    """Every call in one non-transactional pipeline (a cluster pipeline sends each node its share at
    once). One server: by SHA; a server that lacks a script (restarted) gets it loaded and only the
    calls it refused are sent again, so no call runs twice. A cluster pipeline refuses EVALSHA (a
    node may lack the script): there each call carries its script (EVAL; Redis compiles it once).
    Other errors are raised."""
    if isinstance(r, RedisCluster):
        async with r.pipeline(transaction=False) as pipe:
            for c in calls:
                pipe.eval(c.script, len(c.keys), *c.keys, *c.args)
            return list(await pipe.execute())
    results: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    shas: dict[str, str] = {}
    for attempt in range(2):
        if attempt:
            for script in {calls[i].script for i in pending}:
                shas[script] = await r.script_load(script)
        async with r.pipeline(transaction=False) as pipe:
            for i in pending:
                c = calls[i]
                sha = shas.get(c.script) or _sha(c.script)
                pipe.evalsha(sha, len(c.keys), *c.keys, *c.args)
            replies = await pipe.execute(raise_on_error=False)
        missing = []
        for i, reply in zip(pending, replies, strict=True):
            if isinstance(reply, NoScriptError):
                missing.append(i)
            elif isinstance(reply, Exception):
                raise reply
            else:
                results[i] = reply
        if not missing:
            return results
        pending = missing
    raise NoScriptError(f"{len(pending)} script calls refused after loading their scripts")


@cache
def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)
