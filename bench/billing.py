"""Sustained usage events per second from Pulsar into PostgreSQL, with real batching.

    ./scripts/bench.sh billing [--events N] [--batch-events B] [--batch-delay-ms D]

What it sends through which components: N protobuf `UsageEvent`s plus 5% exact duplicates (as
redeliveries produce) are published to the usage topic of a real Apache Pulsar broker first; then
the real billing service (`python -m uplion.billing`) consumes them from its subscription and
applies them to a real PostgreSQL (dedup by event id, pricing, per-user/token/model aggregates).
Rates count DISTINCT events applied (duplicates are work, not output), measured until every distinct
event is in `usage_events`. Database round trips per batch come from the service's own metrics.
Baseline: the same distinct rows through a plain asyncpg COPY into an unindexed table (no dedup,
no pricing, no aggregates), in the same run.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psutil
import pulsar

from uplion.core.migrations import migrate
from uplion.core.pulsar_auth import BILLING, billing_permissions
from uplion.core.subscriptions import BILLING_SUBSCRIPTION
from uplion.core.topics import Topics
from uplion.devstack.postgres import start_postgres
from uplion.devstack.procs import free_port, spawn, wait_until
from uplion.devstack.pulsar import pulsar_credentials, start_pulsar
from uplion.v1 import common_pb2, usage_pb2

from .common import parser_for, workdir

T0 = 1_790_000_000
GOAL_EVENTS_S = 50_000


def events(n: int) -> tuple[list[bytes], int]:
    rng = random.Random(3)
    out = []
    for i in range(n):
        e = usage_pb2.UsageEvent(event_id=f"e{i}", model="m", prompt_tokens=rng.randint(1, 500),
                                 completion_tokens=rng.randint(1, 900),
                                 caller=common_pb2.Caller(user_id=f"u{i % 100}", token_id=f"t{i % 300}"))  # fmt: skip
        e.started_at.seconds = T0 + i % 86400
        e.finished_at.seconds = T0 + i % 86400 + 1
        out.append(e.SerializeToString())
    dups = [out[rng.randrange(n)] for _ in range(n // 20)]
    return out + dups, n


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def copy_baseline(dsn: str, payloads: list[bytes]) -> float:
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TEMP TABLE raw (event_id text, user_id text, tokens bigint)")
    rows = []
    for p in payloads:
        e = usage_pb2.UsageEvent.FromString(p)
        rows.append((e.event_id, e.caller.user_id, e.prompt_tokens + e.completion_tokens))
    rows = list({r[0]: r for r in rows}.values())  # the distinct events, as billing applies them
    t0 = time.perf_counter()
    await conn.copy_records_to_table("raw", records=rows)
    took = time.perf_counter() - t0
    await conn.close()
    return len(rows) / took


async def main(n: int, batch: int, delay_ms: int, work: Path) -> None:
    broker = start_pulsar(work / "pulsar")
    pg = start_postgres(work / "postgres")
    try:
        ns = f"bench_{uuid.uuid4().hex[:6]}"
        broker.create_namespace(ns)
        topics = Topics("public", ns)
        conn = await asyncpg.connect(pg.dsn)
        await migrate(conn, "uplion.billing", "billing")
        await conn.execute("INSERT INTO model_prices VALUES ('m', $1, 1000, 3000)", datetime.fromtimestamp(0, UTC))
        await conn.close()
        payloads, distinct = events(n)
        client = pulsar.Client(broker.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
                               authentication=broker.authentication())  # fmt: skip
        client.subscribe(topics.usage(), BILLING_SUBSCRIPTION, consumer_type=pulsar.ConsumerType.Failover,
                         receiver_queue_size=0).close()  # fmt: skip
        producer = client.create_producer(topics.usage(), batching_enabled=True, block_if_queue_full=True,
                                          batching_max_messages=1000)  # fmt: skip
        for p in payloads:
            producer.send_async(p, None)
        producer.flush()
        client.close()

        metrics_port = free_port()
        pulsar_env = {"UPLION_PULSAR_URL": broker.service_url, "UPLION_PULSAR_NAMESPACE": ns}
        credentials = pulsar_credentials(broker.service_url, pulsar_env, BILLING, billing_permissions)
        env = {**os.environ, "UPLION_LOG_LEVEL": "WARNING", **pulsar_env, **credentials, "UPLION_DATABASE_URL": pg.dsn,
               "UPLION_METRICS_PORT": str(metrics_port), "UPLION_BILLING_BATCH_EVENTS": str(batch),
               "UPLION_BILLING_BATCH_DELAY_MS": str(delay_ms)}  # fmt: skip
        t0 = time.perf_counter()
        proc = spawn("billing", [sys.executable, "-m", "uplion.billing"], work / "billing.log", env=env)
        conn = await asyncpg.connect(pg.dsn)
        peak_rss = 0.0
        try:
            wait_until(proc, lambda: metric(metrics_port, "uplion_billing_batches_total") >= 0, 60)
            first: float | None = None
            while (applied := await conn.fetchval("SELECT count(*) FROM usage_events")) < distinct:
                if first is None and applied > 0:
                    first, first_count = time.perf_counter(), applied
                peak_rss = max(peak_rss, psutil.Process(proc.pid).memory_info().rss / 2**20)
                await asyncio.sleep(0.02)
            took = time.perf_counter() - t0
            steady = (distinct - first_count) / (time.perf_counter() - first) if first else 0.0
            batches = metric(metrics_port, "uplion_billing_batches_total")
            trips = metric(metrics_port, "uplion_billing_db_round_trips_total")
        finally:
            await conn.close()
            proc.stop()
        raw_rate = await copy_baseline(pg.dsn, payloads)
        head = f"{'scenario':52} {'events/s':>10} {'batches':>8} {'DB trips/batch':>15} {'RSS MB':>7}"
        print(f"== billing: {len(payloads):,} events ({distinct:,} distinct, 5% duplicates); "
              f"batch <= {batch} events or {delay_ms} ms")  # fmt: skip
        print(head)
        print("-" * len(head))
        print(f"{'billing service (start to all applied, incl. startup)':52} {distinct / took:10.0f} "
              f"{batches:8.0f} {trips / max(batches, 1):15.2f} {peak_rss:7.0f}")  # fmt: skip
        print(f"{'billing service, steady state (first batch to last)':52} {steady:10.0f} "
              f"{'':>8} {'':>15} {'':>7}")  # fmt: skip
        print(f"{'baseline: raw asyncpg COPY into a bare table':52} {raw_rate:10.0f} {'-':>8} {'1':>15} {'-':>7}")
        print(f"ratio billing steady state / raw COPY (distinct events/s): {steady / raw_rate:.3f}")
        verdict = "met" if steady >= GOAL_EVENTS_S else "not met"
        print(f"goal >= {GOAL_EVENTS_S:,} distinct events/s applied in steady state: {verdict} ({steady:,.0f})")
    finally:
        pg.stop()
        broker.stop()


if __name__ == "__main__":
    parser = parser_for(__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-events", type=int, default=5000)
    parser.add_argument("--batch-delay-ms", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.batch_events, args.batch_delay_ms, workdir()))
