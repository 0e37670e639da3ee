"""PostgreSQL, Redis and Envoy under test are the real servers."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from uplion.devstack.envoy import start_envoy
from uplion.devstack.postgres import Postgres
from uplion.devstack.procs import free_port
from uplion.devstack.redis import Redis


async def test_postgres_answers_real_queries(postgres: Postgres) -> None:
    conn = await asyncpg.connect(postgres.dsn)
    try:
        version = await conn.fetchval("SELECT version()")
        assert version.startswith("PostgreSQL 18")
        await conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, v text)")
        await conn.executemany("INSERT INTO t VALUES ($1, $2)", [(i, f"v{i}") for i in range(100)])
        # a conflicting insert is a real constraint violation
        inserted = await conn.fetchval(
            "WITH ins AS (INSERT INTO t VALUES (5, 'dup') ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM ins"
        )
        assert inserted == 0
        assert await conn.fetchval("SELECT sum(id) FROM t") == sum(range(100))
    finally:
        await conn.close()


async def test_redis_answers_real_commands(redis_server: Redis) -> None:
    r = aioredis.from_url(redis_server.url)
    try:
        info = await r.info("server")
        assert str(info["redis_version"]).startswith("6.")
        await r.delete("k")
        assert await r.incrby("k", 3) == 3
        # Lua runs server-side, atomically
        assert await r.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, "k", 4) == 7
    finally:
        await r.aclose()


def test_envoy_serves_a_route(tmp_path: Path) -> None:
    port = free_port()
    config = f"""
static_resources:
  listeners:
  - name: probe
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: probe
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: "envoy-ok"}}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""
    envoy = start_envoy(tmp_path, config)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.read() == b"envoy-ok"
            assert resp.headers["server"] == "envoy"
        with urllib.request.urlopen(f"{envoy.admin_url}/server_info", timeout=5) as resp:
            assert b'"version"' in resp.read()
    finally:
        envoy.stop()
