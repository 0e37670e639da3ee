"""ShouldRateLimit: uplion's rate-limit service vs the reference envoyproxy/ratelimit (built from
the Go module proxy), same Redis, same rules, same run.

    ./scripts/bench.sh ratelimit        (or: .venv/bin/python -m bench.ratelimit)

What it sends through which components: ghz (Go, on the same 2 cores as the services and Redis)
sends `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` straight to each service, which
decides against a real Redis; Envoy is not in this path. Two request shapes:
- minimal: 2 descriptors (user_id, token_id), one hit each; at c=64, then both at the same fixed
  rate (half the slower one's throughput) for latency without queueing;
- production: the 11 descriptors uplion's edge sends for every inference request (requests per
  minute/hour/day and tokens per minute/day, each per user and per token, the token windows with a
  4,096-token estimate as their hits, and Envoy's request id under which uplion reserves the
  tokens), 1,000 distinct users/tokens/request ids round robin, against uplion's default rules
  (`ratelimit/cmd/uplion-ratelimit/default.yaml`; the reference gets the same file and ignores the
  request-id descriptor it has no rule for).
Each scenario runs in the order reference, uplion, uplion, reference (so neither gains from going
first or last); the rows are the means of the two runs. Goal (issue #6): >= 1.0x the reference's
throughput with p99 no worse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envoy.service.ratelimit.v3 import rls_pb2

from uplion.devstack.platform import Service
from uplion.devstack.ratelimit import start_ratelimit, start_reference_ratelimit
from uplion.devstack.redis import start_redis

from . import ghz
from .common import Measured, rss_mb, run_timed, table

CALL = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
RULES = """
domain: bench
descriptors:
  - key: user_id
    rate_limit: {unit: minute, requests_per_unit: 1000000000}
  - key: token_id
    rate_limit: {unit: minute, requests_per_unit: 1000000000}
"""
BODY: dict[str, Any] = {
    "domain": "bench",
    "descriptors": [
        {"entries": [{"key": "user_id", "value": "u1"}]},
        {"entries": [{"key": "token_id", "value": "t1"}]},
    ],
    "hits_addend": 1,
}


DEFAULT_RULES = Path(__file__).resolve().parents[1] / "ratelimit" / "cmd" / "uplion-ratelimit" / "default.yaml"
WINDOWS = ("requests", "requests_per_hour", "requests_per_day", "tokens", "tokens_per_day")  # as the edge sends
TOKEN_ESTIMATE = 4096
Body = dict[str, Any] | list[dict[str, Any]]


def production_bodies(n: int = 1000) -> list[dict[str, Any]]:
    """What uplion's edge sends per inference request (edge/uplion/edge/filters.py), for n callers."""
    bodies: list[dict[str, Any]] = []
    for i in range(n):
        descriptors: list[dict[str, Any]] = []
        for window in WINDOWS:
            for key, value in (("user_id", f"u_{i:06d}"), ("token_id", f"tok_{i:06d}")):
                d: dict[str, object] = {
                    "entries": [{"key": "generic_key", "value": window}, {"key": key, "value": value}]
                }
                if window.startswith("tokens"):
                    d["hits_addend"] = TOKEN_ESTIMATE
                descriptors.append(d)
        descriptors.append({"entries": [{"key": "uplion_request_id", "value": f"bench-{i:06d}"}]})
        bodies.append({"domain": "uplion", "descriptors": descriptors, "hits_addend": 1})
    return bodies


async def main(duration: float, work: Path) -> None:
    redis = start_redis(work / "redis")
    rules = work / "rules"
    rules.mkdir()
    (rules / "bench.yaml").write_text(RULES)
    protoset = ghz.protoset(rls_pb2.DESCRIPTOR)
    reference = start_reference_ratelimit(work, redis.port, RULES)
    ours = start_ratelimit(work, redis.url, rules)
    prod_reference = start_reference_ratelimit(work, redis.port, DEFAULT_RULES.read_text())
    prod_ours = start_ratelimit(work, redis.url)  # no config dir: its default rules
    try:

        def measure(name: str, port: int, pid: int, body: Body, rps: int = 0) -> Measured:
            target = f"127.0.0.1:{port}"
            ghz.run(target, CALL, protoset, body, 64, 1.0)  # warm-up
            report = ghz.run(target, CALL, protoset, body, 64, duration, rps=rps)
            return ghz.measured(name, report, rss_mb([pid]))

        def both(label: str, services: tuple[Service, Service], body: Body, rps: int = 0) -> tuple[Measured, Measured]:
            runs: dict[str, list[Measured]] = {"reference": [], "uplion": []}
            for who in ("reference", "uplion", "uplion", "reference"):
                svc = services[0] if who == "reference" else services[1]
                runs[who].append(measure(who, svc.port, svc.proc.pid, body, rps=rps))
            return (ghz.mean(f"reference envoyproxy/ratelimit, {label}", runs["reference"]),
                    ghz.mean(f"uplion-ratelimit, {label}", runs["uplion"]))  # fmt: skip

        ref, mine = both("2 descriptors, c=64", (reference, ours), BODY)
        rate = int(min(ref.rps, mine.rps) * 0.5)
        ref_rate, mine_rate = both(f"2 descriptors, {rate} req/s", (reference, ours), BODY, rate)
        prod_ref, prod_mine = both("production 11 descriptors, c=64", (prod_reference, prod_ours), production_bodies())
        rows = [ref, mine, ref_rate, mine_rate, prod_ref, prod_mine]
        print(table("ShouldRateLimit, same Redis (ghz, 2 connections)", rows, {
            "uplion / reference throughput, 2 descriptors, c=64": f"{mine.rps / ref.rps:.2f}x (goal >= 1.0x)",
            "uplion / reference throughput, production descriptors, c=64": f"{prod_mine.rps / prod_ref.rps:.2f}x",
            "p99 at c=64": f"uplion {mine.p99:.2f} ms vs reference {ref.p99:.2f} ms (production: "
                           f"{prod_mine.p99:.2f} vs {prod_ref.p99:.2f} ms)",
            f"p99 at {rate} req/s": f"uplion {mine_rate.p99:.2f} ms vs reference {ref_rate.p99:.2f} ms",
        }))  # fmt: skip
    finally:
        for svc in (ours, reference, prod_ours, prod_reference):
            svc.stop()
        redis.stop()


if __name__ == "__main__":
    run_timed(main, __doc__)
