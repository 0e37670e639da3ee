"""Soak: uplion's whole production path under a constant rate of mixed chat requests for minutes on
end (issue #18: error rate 0, p99 stable, RSS of every service growing less than 10% after warm-up),
reported as a table, raw samples and a PNG curve.

    ./scripts/bench.sh soak [--minutes M] [--rate R] [--interval S]   (or: .venv/bin/python -m bench.soak)

The path: the stack `./scripts/run.sh` starts (uplion.devstack.stack.Stack, as bench/peers.py runs
it) serving one `remote` model, `bench-chat`, with 64 slots in front of the fake OpenAI upstream of
bench/peers.py (an Envoy listener answering with `direct_response`: a fixed `chat.completion` JSON,
or a fixed SSE stream of 8 content chunks, a finish chunk, a usage chunk and `data: [DONE]`). Each
request goes: load generator -> Envoy edge (Lua stream dispatch; ext_authz -> authz, a member's
real API key made through the accounts service, looked up in Redis with PostgreSQL behind it; rate
limit -> the Go uplion-ratelimit, RPM/TPM windows in Redis with the 4,096-token reservation, the
key's limits raised far above the load; the gRPC-JSON transcoder) -> gateway -> Pulsar (token
authentication on) topic `model-bench-chat` -> the remote worker -> the fake upstream (streamed,
with include_usage) -> worker -> Pulsar reply topic -> gateway -> Envoy -> the client. Each
request's usage event goes over Pulsar to billing (PostgreSQL, spend mirrored into Redis) and to
the rate limiter's settler (reservations reconciled in Redis).

Why `remote` and not `echo`: the remote backend is the production worker's real work, an aiohttp
client pool streaming from an upstream and converting its SSE, with usage taken from the upstream's
answer; a leak there (sessions, connections, buffers) is the one a soak should catch, and `echo`
would never run that code. The fake upstream is a C++ Envoy answering from memory: it costs little
CPU, and it is not measured against the goals (it is not uplion).

The load: half non-streaming, half streaming (`"stream": true, "stream_options": {"include_usage":
true}`), the two bodies of bench/peers.py alternating, with `Authorization: Bearer <key>`, to
`/v1/chat/completions` on 127.0.0.1. The generator is vegeta (Go, `github.com/tsenart/vegeta/v12`
v12.13.0, built once from the Go module proxy into the build cache like ghz): it sends at a
constant rate whatever the answers' latency (an open model, as wrk2 does; no wrk2 is packaged in
Debian and the project's wrk is closed-loop, which sends less when the server stalls and so hides
the stall: coordinated omission), reads every answer to its end (a stream to `data: [DONE]`), and
hands each result to this script (`vegeta encode --to csv`), which checks the answer (the fake's
text and usage, whole or streamed; anything else is an error, by status) and keeps its id.

Phases: (1) one whole and one streamed request must give the fake's text and usage; (2) unless
`--rate R` is given, a ramp finds the maximum: vegeta closed-loop (as fast as answers come) at
concurrency 16, 32 and 64 for `--ramp-seconds` each (default 10), the best throughput of correct
answers over the span from the first request sent to the last answer received; (3) the soak: half
that maximum (or R) for `--minutes` (default 20). Every `--interval` seconds (default 10): requests
answered in that interval, errors by status, p50/p99/max latency of the requests answered in it
(whole answers; streams to their end); RSS, PSS (smaps_rollup) and CPU of every process of the
stack: each uplion service, the rate limiter's settler, the worker, Envoy, the console, and Pulsar,
PostgreSQL (with its backends) and Redis; CPU of the load generator, of the whole machine and of the
processes this benchmark did not start (a neighbour on the shared cores); Pulsar's JVM memory from
its /metrics (heap committed and used, G1 old gen, direct, non-heap: what its RSS is made of, the
heap growing from -Xms128m towards -Xmx512m) and the backlog of every subscription (admin API).

Goals and the rules applied (the table's PASS/FAIL; the exit status is 1 when any fails):
- warm-up: the first 10% of the soak (2 minutes of the default 20); the ramp before it already
  loaded every service.
- error rate 0: no request of the soak (warm-up included) answered other than the fake's answer.
- p99 stable: the intervals after warm-up in three equal thirds; the p99 of all requests answered in
  the last third is at most 1.5 times that of the first third.
- RSS: per process, the median of the 3 samples that follow the warm-up against the median of the
  last 3 samples; each of uplion's processes (its services, the worker, Envoy) grows less than 10%.
  Pulsar, PostgreSQL and Redis are shown (`info`), not judged: they are caches by design.
  PostgreSQL's RSS and PSS grow as its backends touch more of `shared_buffers` (128 MB in the
  devstack) while the usage tables grow. Pulsar's heap has a fixed size (devstack: 512 MB,
  pre-touched).
- billing: every answered request's id (`chatcmpl-<task id>`) is a usage event with outcome
  COMPLETED in PostgreSQL (event_id = task id), and no other COMPLETED event exists (none billed
  twice under another id, none billed without an answer); checked once billing has caught up
  (polled up to 2 minutes after the load).
- every service still running at the end.

Output: the table on stdout; bench/results/soak-<time>.json (settings, ramp, every sample, the
summary, the billing check), soak-<time>.csv (one row per sample) and soak-<time>.png (throughput
and errors, p50/p99 latency, RSS per service, RSS against its after-warm-up value, over time, the
warm-up shaded); `--out DIR` writes them elsewhere. Everything, load generator included, shares
the machine's 2 cores: the maximum is the machine's, not uplion's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil

from uplion.devstack.envoy import Envoy, start_envoy
from uplion.devstack.gotools import VEGETA, vegeta
from uplion.devstack.procs import free_port
from uplion.devstack.pulsar import Pulsar
from uplion.devstack.stack import Stack

from .common import memory_mb, parser_for, percentile, workdir
from .peers import (
    BODY,
    PATH,
    PIECES,
    STREAM_BODY,
    USAGE,
    answer_of,
    cores,
    fake_upstream_config,
    git_state,
    post,
    start_uplion,
)

RAMP_CONCURRENCY = (16, 32, 64)
WARMUP_SHARE = 0.10
P99_RATIO_MAX = 1.5
RSS_GROWTH_MAX = 10.0  # percent
BACKING = ("pulsar", "postgres", "redis")
LOAD, OTHERS, MACHINE = "load generator", "other processes", "machine"
# Pulsar's JVM, from its /metrics: what its RSS is made of (the heap may grow from -Xms to -Xmx)
JVM_SERIES = {
    "heap committed": ("jvm_memory_bytes_committed", 'area="heap"'),
    "heap used": ("jvm_memory_bytes_used", 'area="heap"'),
    "old gen used": ("jvm_memory_pool_bytes_used", 'pool="G1 Old Gen"'),
    "direct used": ("jvm_memory_direct_bytes_used", ""),
    "non-heap committed": ("jvm_memory_bytes_committed", 'area="nonheap"'),
}
EDGE_SAMPLES = 3  # samples whose median is the RSS after warm-up, and at the end
REQUEST_TIMEOUT_S = 30
BILLING_WAIT_S = 120.0
COMPLETED = 1  # usage_pb2.REQUEST_OUTCOME_COMPLETED
ANSWER = ("".join(PIECES), USAGE)
ANSWER_ID = re.compile(rb'"id"\s*:\s*"chatcmpl-([^"]+)"')
RESULTS = Path(__file__).parent / "results"
KEEP_WRONG = 5  # the first answers of the soak that were not the fake's, in the JSON report (4 KiB each)


# --- one answer -------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One request's result: when it was answered (monotonic), latency, whole or stream, the error
    ("" for the fake's answer) and the answer's task id."""

    at: float
    start_ns: int
    latency_ms: float
    kind: str
    error: str
    answer_id: str


def judge(code: int, error: str, body: bytes) -> tuple[str, str, str]:
    """(kind, error, task id) of one HTTP result: a 200 whose body is not the fake's text and usage,
    whole or streamed to `data: [DONE]`, is an error too."""
    if code != 200:
        if code:
            return "", str(code), ""
        # vegeta's transport errors start with the method and URL: keep what went wrong
        return "", "transport: " + re.sub(r'^\w+ "[^"]*": ', "", error)[:80], ""
    streamed = body.startswith(b"data:")
    kind = "stream" if streamed else "whole"
    found = ANSWER_ID.search(body)
    try:
        good = answer_of(body, streamed) == ANSWER and (not streamed or body.rstrip().endswith(b"data: [DONE]"))
    except (ValueError, KeyError, IndexError, TypeError):
        good = False
    if not good or found is None:
        return kind, "200 with a wrong answer", ""
    return kind, "", found.group(1).decode()


# --- vegeta -----------------------------------------------------------------------------------------


def targets_file(folder: Path, port: int, key: str) -> Path:
    """vegeta's JSON targets: the whole and the streamed body, sent alternately."""
    header = {"Content-Type": ["application/json"], "Authorization": [f"Bearer {key}"]}
    url = f"http://127.0.0.1:{port}{PATH}"
    lines = [
        json.dumps({"method": "POST", "url": url, "header": header, "body": base64.b64encode(b.encode()).decode()})
        for b in (BODY, STREAM_BODY)
    ]
    path = folder / "vegeta-targets.json"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # it holds the API key
    return path


class Attack:
    """`vegeta attack | vegeta encode --to csv`, each result judged by a reader thread and queued
    for `take`. rate 0: closed loop, `workers` requests always outstanding."""

    def __init__(self, targets: Path, rate: float, seconds: float, workers: int, max_workers: int, log: Path) -> None:
        binary = str(vegeta())
        pace = f"-rate={round(rate * 60)}/1m" if rate else "-rate=0"  # per minute: pacing finer than 1/s
        argv = [binary, "attack", "-format=json", f"-targets={targets}", pace, f"-duration={seconds:.3f}s",
                f"-timeout={REQUEST_TIMEOUT_S}s", f"-workers={workers}", f"-max-workers={max_workers}",
                "-max-body=65536"]  # fmt: skip
        self._log: IO[bytes] = log.open("ab")
        self.attack = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log)
        assert self.attack.stdout is not None
        self.encode = subprocess.Popen([binary, "encode", "--to=csv"], stdin=self.attack.stdout,
                                       stdout=subprocess.PIPE, stderr=self._log)  # fmt: skip
        self.attack.stdout.close()  # the encoder holds it now
        self._lock = threading.Lock()
        self._pending: list[Answer] = []
        self.wrong: list[dict[str, object]] = []
        self._reader = threading.Thread(target=self._read, name="vegeta-results", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.encode.stdout is not None
        for rec in csv.reader(io.TextIOWrapper(self.encode.stdout, newline="")):
            # timestamp ns, code, latency ns, bytes out, bytes in, error, body (base64), attack, seq, ...
            body = base64.b64decode(rec[6])
            kind, error, answer_id = judge(int(rec[1]), rec[5], body)
            a = Answer(time.monotonic(), int(rec[0]), int(rec[2]) / 1e6, kind, error, answer_id)
            with self._lock:
                self._pending.append(a)
                if error and len(self.wrong) < KEEP_WRONG:  # for the report: what came back instead
                    text = body[:4096].decode(errors="replace")
                    self.wrong.append({"code": int(rec[1]), "error": error, "body": text})

    def take(self) -> list[Answer]:
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def wait(self, until: float) -> bool:
        """Until the monotonic time `until` or the end of the results; True at the end."""
        self._reader.join(max(0.0, until - time.monotonic()))
        if self._reader.is_alive():
            return False
        for p in (self.attack, self.encode):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        if self.attack.returncode:
            raise RuntimeError(f"vegeta attack failed ({self.attack.returncode}): see {self._log.name}")
        return True

    def stop(self) -> None:
        for p in (self.attack, self.encode):
            if p.poll() is None:
                p.kill()
                p.wait(5)
        self._log.close()


# --- samples ----------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    pid: int
    tree: bool  # with its descendants (PostgreSQL's backends)


def services_of(stack: Stack) -> list[Service]:
    names = {"envoy": "envoy (edge)"}
    return [Service(names.get(n, n), pid, n == "postgres" or n.startswith("worker ")) for n, pid in stack.processes()]


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def cpu_seconds(pid: int, tree: bool = False) -> float:
    """User + system CPU seconds of a process (and its descendants when `tree`); 0 once it is gone."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)] if tree else [root]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


class Probe:
    """RSS, PSS and CPU of the stack's processes; CPU of the load generator (vegeta and this
    script), of the whole machine, and of the processes this benchmark did not start."""

    def __init__(self, services: list[Service], load_pids: list[int], pulsar: Pulsar | None = None) -> None:
        self.services, self.load_pids, self.pulsar = services, load_pids, pulsar
        self._cpu, self._t = self._cpu_now(), time.monotonic()

    def _cpu_now(self) -> dict[str, float]:
        out = {s.name: cpu_seconds(s.pid, s.tree) for s in self.services}
        out[LOAD] = sum(cpu_seconds(pid) for pid in self.load_pids)
        m = psutil.cpu_times()
        out[MACHINE] = (
            m.user + m.nice + m.system + getattr(m, "irq", 0) + getattr(m, "softirq", 0) + getattr(m, "steal", 0)
        )
        return out

    def backlog(self) -> dict[str, int]:
        """Messages not yet acknowledged, per `topic / subscription` of every persistent topic."""
        out: dict[str, int] = {}
        if self.pulsar is None:
            return out
        try:
            for tenant in _strings(self.pulsar.admin_get("/admin/v2/tenants")):
                for ns in _strings(self.pulsar.admin_get(f"/admin/v2/namespaces/{tenant}")):
                    for topic in _strings(self.pulsar.admin_get(f"/admin/v2/persistent/{ns}")):
                        path = topic.removeprefix("persistent://")
                        stats = self.pulsar.admin_get(f"/admin/v2/persistent/{path}/stats")
                        subs = stats.get("subscriptions", {}) if isinstance(stats, dict) else {}
                        for sub, st in subs.items():
                            out[f"{path.split('/', 2)[-1]} / {sub}"] = int(st.get("msgBacklog", 0))
        except (OSError, ValueError):
            pass  # a sample without it: the broker's answer is not what this benchmark is about
        return out

    def cpu_percent(self) -> dict[str, float]:
        """% of one core of each since the last call."""
        now_cpu, now = self._cpu_now(), time.monotonic()
        dt = max(1e-6, now - self._t)
        pct = {k: max(0.0, 100 * (v - self._cpu.get(k, 0.0)) / dt) for k, v in now_cpu.items()}
        pct[OTHERS] = max(0.0, pct[MACHINE] - sum(v for k, v in pct.items() if k != MACHINE))
        self._cpu, self._t = now_cpu, now
        return pct

    def memory(self) -> tuple[dict[str, float], dict[str, float]]:
        rss: dict[str, float] = {}
        pss: dict[str, float] = {}
        for s in self.services:
            rss[s.name], pss[s.name] = memory_mb(s.pid, s.tree)
        return rss, pss

    def jvm(self) -> dict[str, float]:
        """MB of each JVM_SERIES Pulsar's /metrics reports ({} when it does not answer)."""
        if self.pulsar is None:
            return {}
        try:
            text = self.pulsar.admin_text("/metrics")
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            for label, (metric, selector) in JVM_SERIES.items():
                if line.startswith(metric + "{") and selector in line:
                    with contextlib.suppress(ValueError):
                        out[label] = float(line.rsplit(" ", 1)[1]) / 2**20
        return out


@dataclass
class Sample:
    t_s: float  # end of the interval, seconds since the soak began
    seconds: float
    requests: int
    ok: int
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    streamed_ok: int
    latencies_ms: list[float] = field(repr=False)
    # % of one core: each process, the load generator, other processes, the machine
    cpu_percent: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    pss_mb: dict[str, float] = field(default_factory=dict)
    pulsar_jvm_mb: dict[str, float] = field(default_factory=dict)
    backlog: dict[str, int] = field(default_factory=dict)  # Pulsar: not yet acknowledged, per topic / subscription
    dead: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def fold(self, answers: list[Answer]) -> None:
        """A last short interval's answers (stragglers after the load stopped) counted in this one."""
        add = summarize(answers)
        self.requests += add.requests
        self.ok += add.ok
        self.streamed_ok += add.streamed_ok
        for k, n in add.errors.items():
            self.errors[k] = self.errors.get(k, 0) + n
        self.latencies_ms += add.latencies_ms
        self.p50_ms, self.p99_ms = percentile(self.latencies_ms, 50), percentile(self.latencies_ms, 99)
        self.max_ms = max(self.latencies_ms, default=0.0)

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        del out["latencies_ms"]
        out["rps"] = self.rps
        return out


def summarize(answers: list[Answer]) -> Sample:
    lat = [a.latency_ms for a in answers]
    ok = [a for a in answers if not a.error]
    errors = Counter(a.error for a in answers if a.error)
    return Sample(t_s=0.0, seconds=0.0, requests=len(answers), ok=len(ok), errors=dict(errors),
                  p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99), max_ms=max(lat, default=0.0),
                  streamed_ok=sum(1 for a in ok if a.kind == "stream"), latencies_ms=lat)  # fmt: skip


def run_soak(attack: Attack, interval: float, probe: Probe, stack: Stack, answered: set[str]) -> list[Sample]:
    began = last = time.monotonic()
    samples: list[Sample] = []
    tick = began + interval
    while True:
        finished = attack.wait(tick)
        now = time.monotonic()
        answers = attack.take()
        answered.update(a.answer_id for a in answers if not a.error)
        if finished and samples and now - last < interval / 2:
            samples[-1].fold(answers)
            break
        s = summarize(answers)
        s.t_s, s.seconds, s.cpu_percent, s.dead = now - began, now - last, probe.cpu_percent(), stack.dead()
        s.rss_mb, s.pss_mb = probe.memory()
        s.pulsar_jvm_mb, s.backlog = probe.jvm(), probe.backlog()
        samples.append(s)
        last = now
        errors = ", ".join(f"{k} x{n}" for k, n in s.errors.items()) or "0"
        cpu = s.cpu_percent
        print(f"  {s.t_s:7.0f} s {s.rps:8.1f} req/s  p50 {s.p50_ms:7.2f} ms  p99 {s.p99_ms:8.2f} ms  "
              f"errors {errors}  RSS {sum(s.rss_mb.values()):6.0f} MB  CPU % machine {cpu[MACHINE]:3.0f}, "
              f"load generator {cpu[LOAD]:3.0f}, others {cpu[OTHERS]:3.0f}"
              + (f"  DEAD: {', '.join(s.dead)}" if s.dead else ""), flush=True)  # fmt: skip
        if finished:
            break
        tick += interval
    return samples


# --- phases -----------------------------------------------------------------------------------------


def first_answers(port: int, key: str, answered: set[str]) -> None:
    for body, streamed in ((BODY, False), (STREAM_BODY, True)):
        raw = post(port, body, key)
        kind, error, answer_id = judge(200, "", raw)
        if error or kind != ("stream" if streamed else "whole"):
            raise SystemExit(f"uplion's {'streamed' if streamed else 'whole'} answer is not the fake's: {raw[:300]!r}")
        answered.add(answer_id)


def ramp(targets: Path, seconds: float, log: Path, answered: set[str]) -> list[dict[str, Any]]:
    """Closed loop at each concurrency: throughput of correct answers over the span from the first
    request sent to the last answer received."""
    rows = []
    for c in RAMP_CONCURRENCY:
        attack = Attack(targets, 0, seconds, c, c, log)
        try:
            attack.wait(time.monotonic() + seconds + REQUEST_TIMEOUT_S + 30)
            answers = attack.take()
        finally:
            attack.stop()
        if not answers:
            raise SystemExit(f"the ramp at concurrency {c} got no answer: see {log}")
        answered.update(a.answer_id for a in answers if not a.error)
        ok = [a for a in answers if not a.error]
        span = (max(a.start_ns + a.latency_ms * 1e6 for a in answers) - min(a.start_ns for a in answers)) / 1e9
        s = summarize(answers)
        row = {"concurrency": c, "seconds": span, "requests": s.requests, "ok": s.ok, "rps": len(ok) / span,
               "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "errors": s.errors}  # fmt: skip
        rows.append(row)
        print(f"  ramp c={c:<3d} {row['rps']:8.1f} req/s  p50 {s.p50_ms:7.2f} ms  p99 {s.p99_ms:8.2f} ms  "
              f"errors {sum(s.errors.values())}", flush=True)  # fmt: skip
    return rows


async def _billed(dsn: str) -> tuple[set[str], dict[int, int]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT event_id, outcome FROM usage_events")
    finally:
        await conn.close()
    completed = {r["event_id"] for r in rows if r["outcome"] == COMPLETED}
    return completed, dict(Counter(int(r["outcome"]) for r in rows if r["outcome"] != COMPLETED))


def check_billing(dsn: str, answered: set[str], wait_s: float = BILLING_WAIT_S) -> dict[str, Any]:
    """Polls usage_events until every answered request is billed (or `wait_s` passes)."""
    started = time.monotonic()
    while True:
        completed, others = asyncio.run(_billed(dsn))
        missing, extra = answered - completed, completed - answered
        if not missing or time.monotonic() - started > wait_s:
            break
        time.sleep(1.0)
    return {"answered": len(answered), "billed_completed": len(completed), "missing": len(missing),
            "extra": len(extra), "other_outcomes": others, "waited_s": time.monotonic() - started,
            "missing_examples": sorted(missing)[:5], "extra_examples": sorted(extra)[:5]}  # fmt: skip


# --- verdict, table, files --------------------------------------------------------------------------


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def verdict(samples: list[Sample], warmup_s: float, billing: dict[str, Any]) -> dict[str, Any]:
    after = [s for s in samples if s.t_s - s.seconds >= warmup_s - 1e-6]
    requests = sum(s.requests for s in samples)
    errors: Counter[str] = Counter()
    for s in samples:
        errors.update(s.errors)
    third = len(after) // 3
    first_p99 = percentile([x for s in after[:third] for x in s.latencies_ms], 99) if third else 0.0
    last_p99 = percentile([x for s in after[-third:] for x in s.latencies_ms], 99) if third else 0.0
    ratio = last_p99 / first_p99 if first_p99 else 0.0
    rss: dict[str, dict[str, float | bool]] = {}
    for name in samples[0].rss_mb if samples else []:
        base = median([s.rss_mb[name] for s in after[:EDGE_SAMPLES]])
        end = median([s.rss_mb[name] for s in after[-EDGE_SAMPLES:]])
        growth = 100 * (end - base) / base if base else 0.0
        rss[name] = {"after_warmup_mb": base, "end_mb": end, "growth_percent": growth,
                     "end_pss_mb": median([s.pss_mb[name] for s in after[-EDGE_SAMPLES:]]),
                     "cpu_percent": mean([s.cpu_percent[name] for s in after]),
                     "judged": name not in BACKING,
                     "pass": bool(base) and (name in BACKING or growth < RSS_GROWTH_MAX)}  # fmt: skip
    cpu = {k: mean([s.cpu_percent[k] for s in after]) for k in (LOAD, OTHERS, MACHINE)}
    cpu["uplion"] = sum(float(r["cpu_percent"]) for n, r in rss.items() if n not in BACKING)
    cpu["backing"] = sum(float(r["cpu_percent"]) for n, r in rss.items() if n in BACKING)
    dead = sorted({d for s in samples for d in s.dead})
    goals: dict[str, dict[str, Any]] = {
        "errors": {"requests": requests, "errors": sum(errors.values()), "by_status": dict(errors),
                   "pass": requests > 0 and not errors},
        "p99": {"first_third_ms": first_p99, "last_third_ms": last_p99, "ratio": ratio,
                "intervals_per_third": third, "pass": third > 0 and ratio <= P99_RATIO_MAX},
        "rss": {"pass": bool(rss) and all(r["pass"] for r in rss.values()), "by_service": rss},
        "billing": {**billing, "pass": billing["missing"] == 0 and billing["extra"] == 0},
        "alive": {"dead": dead, "pass": not dead},
    }  # fmt: skip
    jvm = {k: {"after_warmup_mb": median([s.pulsar_jvm_mb[k] for s in after[:EDGE_SAMPLES] if k in s.pulsar_jvm_mb]),
               "end_mb": median([s.pulsar_jvm_mb[k] for s in after[-EDGE_SAMPLES:] if k in s.pulsar_jvm_mb])}
           for k in JVM_SERIES if any(k in s.pulsar_jvm_mb for s in after)}  # fmt: skip
    subs = sorted({k for s in samples for k in s.backlog})
    backlog = {"end": samples[-1].backlog if samples else {},
               "max": {k: max(s.backlog.get(k, 0) for s in samples) for k in subs},
               "max_total": max((sum(s.backlog.values()) for s in samples), default=0)}  # fmt: skip
    return {**goals, "pass": all(g["pass"] for g in goals.values()), "cpu_percent_after_warmup": cpu,
            "pulsar_jvm": jvm, "pulsar_backlog": backlog}  # fmt: skip


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(settings: dict[str, Any], goals: dict[str, Any]) -> str:
    head = (f"{'service':24} {'RSS MB after warm-up':>20} {'RSS MB at end':>14} {'growth %':>9} "
            f"{'PSS MB at end':>14} {'CPU %':>6}  result")  # fmt: skip
    lines = [
        f"== soak: {settings['minutes']:g} min of mixed chat (1 streamed : 1 whole) at {settings['rate']:.1f} req/s "
        f"({settings['rate_source']}); samples every {settings['interval_s']:g} s; "
        f"warm-up {settings['warmup_s']:.0f} s (the first {100 * WARMUP_SHARE:.0f}% of the soak); {cores()} cores",
        head, "-" * len(head),
    ]  # fmt: skip
    for name, r in goals["rss"]["by_service"].items():
        result = mark(bool(r["pass"])) if r["judged"] else "info"
        lines.append(f"{name:24} {r['after_warmup_mb']:20.1f} {r['end_mb']:14.1f} {r['growth_percent']:+9.1f} "
                     f"{r['end_pss_mb']:14.1f} {r['cpu_percent']:6.1f}  {result}")  # fmt: skip
    cpu = goals["cpu_percent_after_warmup"]
    lines.append(f"CPU % of one core, mean after warm-up: uplion's services {cpu['uplion']:.0f}, Pulsar + "
                 f"PostgreSQL + Redis {cpu['backing']:.0f}, load generator (vegeta + this script) {cpu[LOAD]:.0f}, "
                 f"processes this benchmark did not start {cpu[OTHERS]:.0f}; machine {cpu[MACHINE]:.0f} of "
                 f"{100 * cores()}")  # fmt: skip
    if goals["pulsar_jvm"]:
        series = ", ".join(
            f"{k} {v['after_warmup_mb']:.0f} -> {v['end_mb']:.0f}" for k, v in goals["pulsar_jvm"].items()
        )
        lines.append(f"Pulsar's JVM, MB after warm-up -> at end (medians of 3 samples, as RSS): {series}")
    bl = goals["pulsar_backlog"]
    if bl["max"]:
        top = max(bl["max"].items(), key=lambda kv: kv[1])
        lines.append(f"Pulsar backlog (messages not yet acknowledged, all subscriptions): {sum(bl['end'].values())} "
                     f"at the end, at most {bl['max_total']} in a sample; largest: {top[0]}, "
                     f"at most {top[1]}")  # fmt: skip
    e, p, b, rss = goals["errors"], goals["p99"], goals["billing"], goals["rss"]["by_service"]
    judged = [(n, r) for n, r in rss.items() if r["judged"]]
    worst = max(judged, key=lambda kv: kv[1]["growth_percent"], default=("-", {"growth_percent": 0.0}))
    by_status = ", ".join(f"{k} x{n}" for k, n in e["by_status"].items())
    others = ", ".join(f"outcome {k} x{n}" for k, n in b["other_outcomes"].items()) or "none"
    goal_rows = [
        ("error rate 0", f"{e['errors']} errors / {e['requests']} requests" + (f" ({by_status})" if by_status else ""),
         e["pass"]),
        (f"p99 stable (last third <= {P99_RATIO_MAX:g}x first)",
         f"first third {p['first_third_ms']:.2f} ms, last third {p['last_third_ms']:.2f} ms ({p['ratio']:.2f}x; "
         f"{p['intervals_per_third']} intervals each)", p["pass"]),
        (f"RSS growth < {RSS_GROWTH_MAX:g}% after warm-up",
         f"largest of uplion's: {worst[0]} {worst[1]['growth_percent']:+.1f}%",
         goals["rss"]["pass"]),
        ("billing = answered", f"{b['answered']} answered (checks and ramp included), {b['billed_completed']} billed, "
         f"{b['missing']} unbilled, {b['extra']} billed without an answer; other outcomes: {others}", b["pass"]),
        ("every service alive", "dead: " + ", ".join(goals["alive"]["dead"]) if goals["alive"]["dead"] else "all",
         goals["alive"]["pass"]),
    ]  # fmt: skip
    width = max(len(m) for _, m, _ in goal_rows)
    goal_head = f"{'goal':40} {'measured':{width}}  result"
    lines += ["", goal_head, "-" * len(goal_head)]
    lines += [f"{g:40} {m:{width}}  {mark(ok)}" for g, m, ok in goal_rows]
    lines.append(f"overall: {mark(goals['pass'])}")
    return "\n".join(lines)


def write_csv(path: Path, samples: list[Sample]) -> None:
    names = list(samples[0].rss_mb) if samples else []
    cpus = list(samples[0].cpu_percent) if samples else []
    jvm = [k for k in JVM_SERIES if any(k in s.pulsar_jvm_mb for s in samples)]
    statuses = sorted({k for s in samples for k in s.errors})
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "seconds", "requests", "ok", "rps", "streamed_ok", "errors", "p50_ms", "p99_ms", "max_ms",
                    "pulsar_backlog",
                    *[f"errors {k}" for k in statuses], *[f"rss_mb {n}" for n in names],
                    *[f"pss_mb {n}" for n in names], *[f"cpu_percent {n}" for n in cpus],
                    *[f"pulsar_jvm_mb {k}" for k in jvm]])  # fmt: skip
        for s in samples:
            w.writerow([f"{s.t_s:.3f}", f"{s.seconds:.3f}", s.requests, s.ok, f"{s.rps:.2f}", s.streamed_ok,
                        sum(s.errors.values()), f"{s.p50_ms:.3f}", f"{s.p99_ms:.3f}", f"{s.max_ms:.3f}",
                        sum(s.backlog.values()),
                        *[s.errors.get(k, 0) for k in statuses], *[f"{s.rss_mb[n]:.1f}" for n in names],
                        *[f"{s.pss_mb[n]:.1f}" for n in names],
                        *[f"{s.cpu_percent[n]:.1f}" for n in cpus],
                        *[f"{s.pulsar_jvm_mb[k]:.1f}" if k in s.pulsar_jvm_mb else "" for k in jvm]])  # fmt: skip


def plot(path: Path, samples: list[Sample], settings: dict[str, Any], goals: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in samples]
    warm = settings["warmup_s"] / 60
    names = list(samples[0].rss_mb) if samples else []
    fig, axes = plt.subplots(6, 1, figsize=(12, 21), sharex=True)
    ax = axes[0]
    ax.plot(t, [s.rps for s in samples], label="answered req/s")
    ax.plot(t, [sum(s.errors.values()) / s.seconds if s.seconds else 0 for s in samples], color="red",
            label="errors/s")  # fmt: skip
    target = f"target {settings['rate']:.0f} req/s"
    ax.axhline(settings["rate"], color="gray", linestyle="--", linewidth=1, label=target)
    ax.set_ylabel("requests/s")
    ax.set_title(f"uplion soak: {settings['minutes']:g} min of mixed chat through the whole production path at "
                 f"{settings['rate']:.0f} req/s (overall {mark(goals['pass'])})")  # fmt: skip
    ax = axes[1]
    ax.plot(t, [s.p50_ms for s in samples], label="p50")
    ax.plot(t, [s.p99_ms for s in samples], label="p99")
    p = goals["p99"]
    if p["first_third_ms"]:
        ax.axhline(p["first_third_ms"] * P99_RATIO_MAX, color="gray", linestyle="--", linewidth=1,
                   label=f"{P99_RATIO_MAX:g}x the first third's p99")  # fmt: skip
    ax.set_ylabel("latency ms (each interval)")
    ax = axes[2]
    groups = [("uplion's services", [n for n in names if n not in BACKING]),
              ("Pulsar, PostgreSQL, Redis", list(BACKING)), ("load generator", [LOAD]),
              ("other processes", [OTHERS])]  # fmt: skip
    ax.stackplot(t, *[[sum(s.cpu_percent.get(n, 0.0) for n in members) for s in samples] for _, members in groups],
                 labels=[g for g, _ in groups], alpha=0.8)  # fmt: skip
    ax.axhline(100 * cores(), color="gray", linestyle="--", linewidth=1, label=f"{cores()} cores")
    ax.set_ylabel("CPU, % of one core")
    colors = [plt.get_cmap("tab20")(i % 20) for i in range(len(names))]
    rss = goals["rss"]["by_service"]
    for i, name in enumerate(names):
        style = {"color": colors[i], "linestyle": "-" if i % 2 == 0 else "--"}
        axes[3].plot(t, [s.rss_mb[name] for s in samples], label=name, **style)
        base = rss[name]["after_warmup_mb"]
        axes[4].plot(t, [100 * (s.rss_mb[name] - base) / base if base else 0 for s in samples], **style)
    axes[3].set_yscale("log")
    axes[3].set_ylabel("RSS MB (log scale)")
    axes[4].axhline(RSS_GROWTH_MAX, color="red", linestyle=":", linewidth=1.5, label=f"+{RSS_GROWTH_MAX:g}% goal")
    axes[4].set_ylabel("RSS vs after warm-up, %")
    ax = axes[5]
    if "pulsar" in names:
        ax.plot(t, [s.rss_mb["pulsar"] for s in samples], color="black", label="Pulsar RSS")
    for k in JVM_SERIES:
        if any(k in s.pulsar_jvm_mb for s in samples):
            ax.plot(t, [s.pulsar_jvm_mb.get(k, float("nan")) for s in samples], label=k)
    ax.set_ylabel("Pulsar's JVM, MB")
    right = ax.twinx()
    right.plot(t, [sum(s.backlog.values()) for s in samples], color="gray", linestyle=":", label="backlog")
    right.set_ylabel("Pulsar backlog, messages (dotted)")
    ax.set_xlabel("minutes since the soak began (each point: the interval ending there)")
    for ax in axes:
        ax.axvspan(0, warm, color="gray", alpha=0.15)
        ax.grid(True, alpha=0.3)
        # the last panel's right axis has its own label: its legend further out
        ax.legend(loc="upper left", bbox_to_anchor=(1.08 if ax is axes[5] else 1.01, 1.0), fontsize="small")
    axes[0].text(warm / 2, 0.02, "warm-up", transform=axes[0].get_xaxis_transform(), ha="center", fontsize="small")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# --- the benchmark ----------------------------------------------------------------------------------


def main(args: argparse.Namespace, work: Path) -> int:
    vegeta()
    print(f"work folder {work}", flush=True)
    upstream_key = f"sk-upstream-{os.urandom(12).hex()}"
    fake: Envoy | None = None
    stack: Stack | None = None
    ok = False
    try:
        fake_port = free_port()
        fake = start_envoy(work / "fake-upstream", fake_upstream_config(fake_port))
        print("starting uplion's stack (Pulsar, PostgreSQL, Redis, gateway, remote worker, accounts, authz, "
              "rate limiter and settler, Envoy, billing)", flush=True)  # fmt: skip
        stack, key = start_uplion(work, f"http://127.0.0.1:{fake_port}/v1", upstream_key)
        assert stack.postgres is not None
        answered: set[str] = set()
        first_answers(stack.http_port, key, answered)
        targets = targets_file(work, stack.http_port, key)
        log = work / "vegeta.log"

        ramp_rows: list[dict[str, Any]] = []
        if args.rate:
            rate, source = args.rate, "given by --rate"
        else:
            print(f"ramp: closed loop, {args.ramp_seconds:g} s at each concurrency", flush=True)
            ramp_rows = ramp(targets, args.ramp_seconds, log, answered)
            best = max(r["rps"] for r in ramp_rows)
            rate, source = best / 2, f"half the measured maximum of {best:.1f} req/s"
        seconds = args.minutes * 60
        warmup_s = WARMUP_SHARE * seconds
        settings = {"minutes": args.minutes, "rate": rate, "rate_source": source, "interval_s": args.interval,
                    "warmup_s": warmup_s, "ramp_seconds": args.ramp_seconds, "request_timeout_s": REQUEST_TIMEOUT_S,
                    "load_generator": f"{VEGETA[0]}@{VEGETA[1]}", "rules": {
                        "warmup": f"the first {100 * WARMUP_SHARE:g}% of the soak",
                        "errors": "no request answered other than the fake's text and usage",
                        "p99": f"p99 of the last third of the intervals after warm-up <= {P99_RATIO_MAX:g}x the first "
                               "third's",
                        "rss": f"median of the last {EDGE_SAMPLES} samples < {RSS_GROWTH_MAX:g}% above the median of "
                               f"the {EDGE_SAMPLES} samples after warm-up, per process",
                        "billing": "answered task ids == COMPLETED usage events' ids"}}  # fmt: skip
        services = services_of(stack)
        before_rss, _ = Probe(services, []).memory()
        print(f"soak: {rate:.1f} req/s ({source}) for {args.minutes:g} min, a sample every {args.interval:g} s",
              flush=True)  # fmt: skip
        # enough workers to keep the schedule through a stall as long as the request timeout
        workers = max(16, min(10_000, round(rate * REQUEST_TIMEOUT_S)))
        attack = Attack(targets, rate, seconds, 16, workers, log)
        try:
            probe = Probe(services, [attack.attack.pid, attack.encode.pid, os.getpid()], stack.pulsar)
            samples = run_soak(attack, args.interval, probe, stack, answered)
        finally:
            attack.stop()
        print("checking billing (usage_events in PostgreSQL) against the answered requests", flush=True)
        billing = check_billing(stack.postgres.dsn, answered)
        goals = verdict(samples, warmup_s, billing)
        text = table(settings, goals)
        print(text, flush=True)

        out_dir = args.out
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"soak-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
        stem.with_suffix(".json").write_text(json.dumps({
            "benchmark": "soak", "when": datetime.now(UTC).isoformat(), "uplion": git_state(), "cores": cores(),
            "load_average": os.getloadavg(), "settings": settings, "ramp": ramp_rows,
            "rss_before_load_mb": before_rss, "samples": [s.row() for s in samples], "goals": goals, "table": text,
            "wrong_answers": attack.wrong,
        }, indent=2))  # fmt: skip
        write_csv(stem.with_suffix(".csv"), samples)
        plot(stem.with_suffix(".png"), samples, settings, goals)
        for suffix in (".json", ".csv", ".png"):
            print(f"written: {stem.with_suffix(suffix)}", flush=True)
        ok = bool(goals["pass"])  # the work folder (every service's log) is kept when a goal failed
        return 0 if ok else 1
    finally:
        for stop in (stack.stop if stack else None, fake.stop if fake else None):
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def entry() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--minutes", type=_positive, default=20.0, help="length of the soak (default 20)")
    parser.add_argument("--rate", type=_positive, default=None,
                        help="requests/s of the soak (default: half the maximum the ramp measures)")  # fmt: skip
    parser.add_argument("--interval", type=_positive, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--ramp-seconds", type=_positive, default=10.0,
                        help="seconds of the ramp at each concurrency (default 10)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON, CSV and PNG (bench/results)")
    args = parser.parse_args()
    # SIGTERM (and Ctrl-C) unwind through main's finally: every process started here is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main(args, workdir()))


if __name__ == "__main__":
    entry()
