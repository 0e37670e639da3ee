"""The Responses API against chat completions on the same production path: HTTP through Envoy (the
Lua filter, ext_authz with a real API key, the Go rate limiter with its reservation) to the gateway,
a task on Pulsar, the `echo` worker, the answer back; the gateway stores each response in PostgreSQL
(`store` defaults to true) and the rate limiter's settler and usage events run as in production.
Non-streaming at concurrency 16 and 64, and streaming (time to first text) at 16, the same prompt.
Scenarios alternate (chat, responses, responses with store false) twice and the best of each is
kept, so a noisy neighbour on the 2 cores hurts every side alike. Goal (issue #15): the bridged
Responses API within 10% of chat's throughput.

    ./scripts/bench.sh responses        (or: .venv/bin/python -m bench.responses)

The load generator is Python (aiohttp) on the same 2 cores, so absolute numbers are a floor.
"""

from __future__ import annotations

import json
from pathlib import Path

from uplion.accounts.cli import Client
from uplion.devstack.envoy import Envoy
from uplion.devstack.platform import (
    Service,
    bootstrap_admin,
    start_accounts,
    start_authz,
    start_edge,
    start_gateway,
    start_worker,
)
from uplion.devstack.postgres import start_postgres
from uplion.devstack.pulsar import start_pulsar
from uplion.devstack.ratelimit import start_ratelimit
from uplion.devstack.redis import start_redis

from .common import Result, run_timed, table
from .edge import over_http, unlimited_key
from .spine import PROMPT

RESPONSES = json.dumps({"model": "echo", "input": PROMPT})
UNSTORED = json.dumps({"model": "echo", "input": PROMPT, "store": False})
GOAL = 0.90


def _best(a: Result, b: Result) -> Result:
    return a if a.rps >= b.rps else b


async def main(duration: float, work: Path) -> None:
    pulsar = start_pulsar(work / "pulsar")
    pg, redis = start_postgres(work / "pg"), start_redis(work / "redis")
    started: list[Service] = []
    envoys: list[Envoy] = []
    try:
        gw = start_gateway(work, pulsar.service_url, ["echo"], UPLION_DATABASE_URL=pg.dsn)
        worker = start_worker(work, pulsar.service_url, "echo", UPLION_MAX_PROCESS_NUM="64")
        accounts = start_accounts(work, pg.dsn, redis.url)
        authz = start_authz(work, pg.dsn, redis.url)
        ratelimit = start_ratelimit(work, redis.url, pulsar_url=pulsar.service_url)
        started += [gw, worker, accounts, authz, ratelimit]
        key = unlimited_key(Client(f"127.0.0.1:{accounts.port}", bootstrap_admin(pg.dsn)["secret"]),
                            "bench@responses.test")  # fmt: skip
        envoy, port = start_edge(work, gw.port, authz_port=authz.port, ratelimit_ports=(ratelimit.port,))
        envoys.append(envoy)
        base = f"http://127.0.0.1:{port}"
        pids = [s.proc.pid for s in started] + [envoy.proc.pid]

        async def chat(c: int, stream: bool = False) -> Result:
            return await over_http(base, c, duration, stream, f"chat completions (c={c})", pids, key)

        async def responses(c: int, body: str, label: str, stream: bool = False) -> Result:
            return await over_http(base, c, duration, stream, f"{label} (c={c})", pids, key, path="/v1/responses",
                                   body=body, first_marker=b"output_text.delta")  # fmt: skip

        await chat(16)  # warm-up: connections, producers, JIT of the broker
        await responses(16, RESPONSES, "warm-up")
        for c in (16, 64):
            rows = {"chat": [], "stored": [], "unstored": []}  # type: dict[str, list[Result]]
            for _ in range(2):
                rows["chat"].append(await chat(c))
                rows["stored"].append(await responses(c, RESPONSES, "responses, stored"))
                rows["unstored"].append(await responses(c, UNSTORED, "responses, store false"))
            best = {k: _best(*v) for k, v in rows.items()}
            ratio = best["stored"].rps / best["chat"].rps
            print(table(f"non-streaming, concurrency {c} (best of 2 alternating runs)", list(best.values()), {
                f"responses (stored) / chat throughput (goal >= {GOAL:.2f})": f"{ratio:.2f}",
                "responses (store false) / chat throughput": f"{best['unstored'].rps / best['chat'].rps:.2f}",
                "p50 added by the Responses API, stored": f"{best['stored'].p50 - best['chat'].p50:.2f} ms",
            }), flush=True)  # fmt: skip
        chat_s = await chat(16, stream=True)
        resp_s = await responses(16, RESPONSES, "responses, stored, streamed", stream=True)
        print(table("streaming, concurrency 16: p50 is time to first text", [chat_s, resp_s], {
            "responses / chat throughput": f"{resp_s.rps / chat_s.rps:.2f}",
        }), flush=True)  # fmt: skip
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
