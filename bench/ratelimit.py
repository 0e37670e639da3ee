"""ShouldRateLimit at concurrency 64 with 2 descriptors per request: uplion's rate-limit service vs
the reference envoyproxy/ratelimit (built from the Go module proxy), same Redis, same rules, same
run; then both at the same fixed rate (half the slower one's throughput) for latency without queueing.
Each scenario runs in the order reference, uplion, uplion, reference (so neither gains from going
first or last); the rows are the means of the two runs.

    ./scripts/bench.sh ratelimit        (or: .venv/bin/python -m bench.ratelimit)

Load comes from ghz (Go) on the same 2 cores as the services and Redis. Goal (issue #6): >= 1.0x
the reference's throughput with p99 no worse.
"""

from __future__ import annotations

from pathlib import Path

from envoy.service.ratelimit.v3 import rls_pb2

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
BODY = {
    "domain": "bench",
    "descriptors": [
        {"entries": [{"key": "user_id", "value": "u1"}]},
        {"entries": [{"key": "token_id", "value": "t1"}]},
    ],
    "hits_addend": 1,
}


async def main(duration: float, work: Path) -> None:
    redis = start_redis(work / "redis")
    rules = work / "rules"
    rules.mkdir()
    (rules / "bench.yaml").write_text(RULES)
    protoset = ghz.protoset(rls_pb2.DESCRIPTOR)
    reference = start_reference_ratelimit(work, redis.port, RULES)
    ours = start_ratelimit(work, redis.url, rules)
    try:

        def measure(name: str, port: int, pid: int, rps: int = 0) -> Measured:
            target = f"127.0.0.1:{port}"
            ghz.run(target, CALL, protoset, BODY, 64, 1.0)  # warm-up
            return ghz.measured(name, ghz.run(target, CALL, protoset, BODY, 64, duration, rps=rps), rss_mb([pid]))

        def both(label: str, rps: int = 0) -> tuple[Measured, Measured]:
            runs: dict[str, list[Measured]] = {"reference": [], "uplion": []}
            for who in ("reference", "uplion", "uplion", "reference"):
                svc = reference if who == "reference" else ours
                runs[who].append(measure(who, svc.port, svc.proc.pid, rps=rps))
            return (ghz.mean(f"reference envoyproxy/ratelimit, {label}", runs["reference"]),
                    ghz.mean(f"uplion-ratelimit, {label}", runs["uplion"]))  # fmt: skip

        ref, mine = both("c=64")
        rate = int(min(ref.rps, mine.rps) * 0.5)
        ref_rate, mine_rate = both(f"{rate} req/s", rate)
        rows = [ref, mine, ref_rate, mine_rate]
        print(table("ShouldRateLimit, 2 descriptors, same Redis (ghz, 2 connections)", rows, {
            "uplion / reference throughput at c=64": f"{mine.rps / ref.rps:.2f}x (goal >= 1.0x)",
            "p99 at c=64": f"uplion {mine.p99:.2f} ms vs reference {ref.p99:.2f} ms",
            f"p99 at {rate} req/s": f"uplion {mine_rate.p99:.2f} ms vs reference {ref_rate.p99:.2f} ms",
        }))  # fmt: skip
    finally:
        ours.stop()
        reference.stop()
        redis.stop()


if __name__ == "__main__":
    run_timed(main, __doc__)
