"""The HTTP edge's cost: non-streaming chat through Envoy (REST: the transcoder hands the raw body to
the gateway's HttpBody RPC, which writes OpenAI's JSON) at concurrency 16 and 64 vs the same gateway
over gRPC (typed RPC) without Envoy; then the whole edge (ext_authz with a real API key, the Go rate
limiter with the production descriptors and its settler), with a key without a quota and with a
member's key under a quota it never reaches (each request holds its bound in Redis until billing,
running here, applies its usage); streaming time to first chunk through Envoy.

    ./scripts/bench.sh edge        (or: .venv/bin/python -m bench.edge)

The load generator is Python (aiohttp, grpc.aio) on the same 2 cores as Pulsar, Envoy, the gateway
and the worker, so absolute numbers are a floor; the ratios are the point.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import grpc

from uplion.accounts.cli import Client
from uplion.devstack.envoy import Envoy
from uplion.devstack.platform import (
    Service,
    bootstrap_admin,
    start_accounts,
    start_authz,
    start_billing,
    start_edge,
    start_gateway,
    start_worker,
)
from uplion.devstack.postgres import start_postgres
from uplion.devstack.pulsar import start_pulsar
from uplion.devstack.ratelimit import start_ratelimit
from uplion.devstack.redis import start_redis
from uplion.v1 import admin_pb2, inference_pb2_grpc

from .common import Result, closed_loop, rss_mb, run_timed, table
from .spine import PROMPT, request

BODY = json.dumps({"model": "echo", "messages": [{"role": "user", "content": PROMPT}]})


async def over_http(
    base: str, concurrency: int, duration: float, stream: bool, label: str, pids: list[int], key: str = "",
    path: str = "/v1/chat/completions", body: str = BODY, first_marker: bytes = b'"content"',
) -> Result:  # fmt: skip
    # aiohttp: httpx's client saturates a core by itself at c=64 and would measure itself
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    body = body if not stream else body[:-1] + ', "stream": true}'
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one() -> float | None:
            t0 = time.perf_counter()
            async with session.post(path, data=body, headers=headers) as r:
                r.raise_for_status()
                if not stream:
                    await r.read()
                    return None
                first: float | None = None
                async for line in r.content:
                    if first is None and first_marker in line:
                        first = (time.perf_counter() - t0) * 1000
                return first

        n, secs, lat, err = await closed_loop(one, concurrency, duration)
    return Result(label, n, secs, lat, rss_mb(pids), err)


def unlimited_key(admin: Client, email: str, quota: admin_pb2.Quota | None = None) -> str:
    """A member's API key whose rate limits are far above what a benchmark sends: the limiter's cost
    is measured, not its refusals. With `quota`, the member has that quota: each request then holds
    its bound against it in authz until billing applies its usage (uplion.core.quota)."""
    user, token = admin.create_user_with_token(email, quota=quota)
    limits = admin_pb2.RateLimits(requests_per_minute=2**31, tokens_per_minute=2**31)
    admin.call("UpdateUser", admin_pb2.UpdateUserRequest(user_id=user.user_id, rate_limits=limits))
    admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=token.token.token_id, rate_limits=limits))
    return token.secret


async def over_grpc(port: int, concurrency: int, duration: float, label: str, pids: list[int]) -> Result:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        req = request("echo")

        async def one() -> float | None:
            await stub.CreateChatCompletion(req, timeout=60)
            return None

        n, secs, lat, err = await closed_loop(one, concurrency, duration)
    return Result(label, n, secs, lat, rss_mb(pids), err)


async def main(duration: float, work: Path) -> None:
    pulsar = start_pulsar(work / "pulsar")
    pg, redis = start_postgres(work / "pg"), start_redis(work / "redis")
    started: list[Service] = []
    envoys: list[Envoy] = []
    try:
        gw = start_gateway(work, pulsar.service_url, ["echo"])
        started.append(gw)
        started.append(start_worker(work, pulsar.service_url, "echo", UPLION_MAX_PROCESS_NUM="64"))
        envoy, port = start_edge(work, gw.port)
        envoys.append(envoy)
        # the whole edge: API keys checked by authz, limits by the rate-limit service
        accounts = start_accounts(work, pg.dsn, redis.url)
        authz = start_authz(work, pg.dsn, redis.url)
        ratelimit = start_ratelimit(work, redis.url, pulsar_url=pulsar.service_url)
        billing = start_billing(work, pulsar.service_url, pg.dsn, redis.url)  # releases quota holds
        started += [accounts, authz, ratelimit, billing]
        admin = Client(f"127.0.0.1:{accounts.port}", bootstrap_admin(pg.dsn)["secret"])
        admin.set_price("echo", 1000, 1000)
        key = unlimited_key(admin, "bench@edge.test")
        # a quota it never reaches: the holds' cost (one Redis script per request and subject)
        limited = unlimited_key(admin, "limited@edge.test", admin_pb2.Quota(limit_micro_credits=10**15))
        full, full_port = start_edge(work, gw.port, authz_port=authz.port, ratelimit_ports=(ratelimit.port,))
        envoys.append(full)
        base, full_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{full_port}"
        pids = [gw.proc.pid, started[1].proc.pid]
        edge_pids = [*pids, authz.proc.pid, ratelimit.proc.pid, full.proc.pid]
        for c in (16, 64):
            direct = await over_grpc(gw.port, c, duration, f"gRPC to gateway, no Envoy (c={c})", pids)
            edged = await over_http(base, c, duration, False, f"REST through Envoy (c={c})", [*pids, envoy.proc.pid])
            guarded = await over_http(full_base, c, duration, False, f"REST, Envoy + authz + rate limit (c={c})",
                                      edge_pids, key)  # fmt: skip
            held = await over_http(full_base, c, duration, False, f"the same, a key with a quota (holds) (c={c})",
                                   [*edge_pids, billing.proc.pid], limited)  # fmt: skip
            print(table(f"non-streaming chat, concurrency {c}", [direct, edged, guarded, held], {
                "throughput ratio Envoy REST / direct gRPC": f"{edged.rps / direct.rps:.2f}",
                "throughput ratio with authz + rate limit / direct gRPC": f"{guarded.rps / direct.rps:.2f}",
                "throughput ratio quota-limited key / unlimited key": f"{held.rps / guarded.rps:.2f}",
                "p50 added by the edge": f"{edged.p50 - direct.p50:.2f} ms",
                "p50 added by authz + rate limit": f"{guarded.p50 - edged.p50:.2f} ms",
                "p50 added by quota holds": f"{held.p50 - guarded.p50:.2f} ms",
            }), flush=True)  # fmt: skip
        rows = [
            await over_http(base, c, duration, True, f"stream through Envoy, time to first chunk (c={c})", pids)
            for c in (1, 16)
        ]
        print(table("streaming through Envoy", rows, {}), flush=True)
    finally:
        for e in envoys:
            e.stop()
        for svc in reversed(started):
            svc.stop()
        redis.stop()
        pg.stop()
        pulsar.stop()


if __name__ == "__main__":
    run_timed(main, __doc__)
