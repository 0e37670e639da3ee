"""uplion's whole production path vs the LiteLLM proxy, side by side, on one fake upstream.

    ./scripts/bench.sh peers [--duration S]     (or: .venv/bin/python -m bench.peers)

Both sides get the same bytes: wrk (one thread, keep-alive connections, a small Lua script) posts
one OpenAI chat body, `{"model": "bench-chat", "messages": [one user message]}` (streamed: plus
`"stream": true, "stream_options": {"include_usage": true}`) with `Authorization: Bearer <key>`
to `/v1/chat/completions` on 127.0.0.1. Each side answers from the same fake upstream.

LiteLLM: `litellm[proxy]==1.108.7`, installed once into its own venv in the uplion build cache,
run as its docs say for production without a database: master-key auth (the key wrk sends is the
master key: virtual keys need the database), `--num_workers 2` (uvicorn, one per core),
`LITELLM_LOCAL_MODEL_COST_MAP=True`, `LITELLM_LOG=ERROR`, `set_verbose: false`, `json_logs: true`,
`request_timeout: 600`, explicit per-token prices on the model. Path: wrk -> a uvicorn worker
(auth, router, cost tracking) -> the fake upstream (streamed only when the client streams) -> wrk.

uplion: the stack `./scripts/run.sh` starts (uplion.devstack.stack.Stack) with one `remote`
worker (64 slots, UPLION_BASE_URL = the fake upstream) instead of the default models. Path: wrk
-> Envoy edge (Lua stream dispatch, ext_authz -> authz: the API key, made through the accounts
service, looked up in Redis, PostgreSQL behind it; rate limit -> uplion-ratelimit: RPM/TPM in Redis, limits raised far
above the load; gRPC-JSON transcoder) -> gateway -> Pulsar topic `model-bench-chat` -> remote
worker -> the fake upstream (always streamed, with include_usage) -> worker -> Pulsar reply topic
-> gateway -> Envoy -> wrk. Each request's usage event goes over Pulsar to billing (PostgreSQL,
spend mirrored into Redis) and to the rate limiter's settler (reservations reconciled in Redis).
As in run.sh, usage recovery is on: the worker also sends each completed task's recovery record
(Pulsar, delivered to billing after the task's deadline; billing/README.md); `--no-usage-recovery`
runs uplion without it, to measure what it costs.

The fake upstream: one Envoy listener (json_to_metadata + buffer filters) whose routes answer with
`direct_response`, chosen by the body's `stream` field: a fixed `chat.completion` JSON, or a fixed
`text/event-stream` body (8 content chunks, a finish chunk, a usage chunk, `data: [DONE]`) with
the same text and usage. Before measuring, one non-streamed and one streamed request to each side
must return that same text and usage, or the benchmark stops.

Scenarios, sides alternated (LiteLLM, uplion, uplion, LiteLLM; then the reverse) to cancel drift,
each half of `--duration` seconds after 1 s of warm-up, with 1 s after each run for the requests
wrk abandoned: non-streaming and streaming (wrk reads the whole SSE response) at concurrency 16 and
64 (req/s is concurrency / mean latency, Little's law for wrk's closed loop: wrk's own count, in
the JSON, loses the requests in flight when each run ends, about concurrency/2 a run, which
understates a slow side at short runs); sequential added latency (c=1 p50 minus the
fake upstream's own c=1 p50); streaming time to the first body byte at c=1 (a Python client,
minus the fake's own). Memory: PSS of each side's processes after the load; CPU: psutil
cpu_percent of every process while wrk runs (printed by process for c=64 non-streaming; per
scenario as each side's CPU per request, and the CPU of processes this benchmark did not start). Raw results go to
bench/results/peers-<time>.json. Everything, load generator included, shares the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

from uplion.accounts.cli import Client
from uplion.core.aimodels import local_secret_variable
from uplion.core.model_folder import write_model
from uplion.devstack.cache import Recipe, build
from uplion.devstack.envoy import Envoy, start_envoy
from uplion.devstack.procs import Proc, free_port, http_status, spawn, wait_until
from uplion.devstack.stack import Stack
from uplion.v1 import admin_pb2

from .common import parser_for, workdir

MODEL = "bench-chat"
LITELLM_REQUIREMENT = "litellm[proxy]==1.108.7"
PROMPT = "the quick brown fox jumps over the lazy dog"
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]})
STREAM_BODY = BODY[:-1] + ', "stream": true, "stream_options": {"include_usage": true}}'
PATH = "/v1/chat/completions"
# what the fake upstream answers, streamed in these 8 pieces or whole
PIECES = ["Eight ", "pieces ", "of ", "one ", "answer, ", "streamed ", "or ", "whole."]
USAGE = {"prompt_tokens": 16, "completion_tokens": 8, "total_tokens": 24}
# the same price on both sides: micro-credits per 1k tokens == 1e-6 per token in LiteLLM's unit
PRICE_PROMPT_PER_1K, PRICE_COMPLETION_PER_1K = 1000, 2000
UPLION_BACKING = ("pulsar", "postgres", "redis")
MARK = "PEERS-JSON "
CPU_SCENARIO = "non-streaming c=64"  # the one whose CPU use is printed by process


# --- the fake upstream ---------------------------------------------------------------------------


def fake_answers() -> tuple[str, str]:
    """The whole `chat.completion` JSON and the SSE body, same text and usage."""
    base = {"id": "chatcmpl-peers", "created": 1767225600, "model": MODEL}
    message = {"role": "assistant", "content": "".join(PIECES)}
    whole = {**base, "object": "chat.completion", "usage": USAGE,
             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}  # fmt: skip
    chunk = {**base, "object": "chat.completion.chunk"}
    events = []
    for i, piece in enumerate(PIECES):
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        events.append({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({**chunk, "choices": [], "usage": USAGE})
    sse = "".join(f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events) + "data: [DONE]\n\n"
    return json.dumps(whole, separators=(",", ":")), sse


def fake_upstream_config(port: int) -> str:
    """One listener; json_to_metadata reads the body's `stream` (and clears the route cache), the
    buffer filter keeps Envoy from answering before the body is read (it would add
    `connection: close`)."""
    whole, sse = fake_answers()

    def answer(body: str, content_type: str) -> dict[str, Any]:
        header = {"header": {"key": "content-type", "value": content_type},
                  "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}  # fmt: skip
        direct = {"status": 200, "body": {"inline_string": body}}
        return {"direct_response": direct, "response_headers_to_add": [header]}

    streamed = {"filter": "fake.body", "path": [{"key": "stream"}], "value": {"bool_match": True}}
    routes = [
        {"match": {"path": PATH, "dynamic_metadata": [streamed]}, **answer(sse, "text/event-stream")},
        {"match": {"path": PATH}, **answer(whole, "application/json")},
    ]
    typed = "type.googleapis.com/envoy.extensions.filters.http"
    filters = [
        {"name": "envoy.filters.http.json_to_metadata", "typed_config": {
            "@type": f"{typed}.json_to_metadata.v3.JsonToMetadata",
            "request_rules": {"rules": [
                {"selectors": [{"key": "stream"}], "on_present": {"metadata_namespace": "fake.body", "key": "stream"}},
            ]},
        }},
        {"name": "envoy.filters.http.buffer",
         "typed_config": {"@type": f"{typed}.buffer.v3.Buffer", "max_request_bytes": 1 << 20}},
        {"name": "envoy.filters.http.router", "typed_config": {"@type": f"{typed}.router.v3.Router"}},
    ]  # fmt: skip
    hcm_name = "envoy.filters.network.http_connection_manager"
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "fake_upstream",
        "route_config": {"virtual_hosts": [{"name": "fake", "domains": ["*"], "routes": routes}]},
        "http_filters": filters,
    }
    listener = {
        "name": "fake_upstream",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": hcm_name, "typed_config": hcm}]}],
    }
    return str(yaml.safe_dump({"static_resources": {"listeners": [listener]}}, sort_keys=False))


# --- LiteLLM ---------------------------------------------------------------------------------------


def litellm_python() -> Path:
    """The interpreter of a venv holding the pinned LiteLLM proxy, built once per requirement and
    Python version (in a temporary folder, renamed into place when complete)."""
    recipe = Recipe("litellm-proxy", {"requirement": LITELLM_REQUIREMENT, "python": platform.python_version()})

    def make(out: Path) -> None:
        print(f"installing {LITELLM_REQUIREMENT} into the build cache (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(out / "venv")], check=True)
        pip = [str(out / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, LITELLM_REQUIREMENT], check=True, timeout=1800)

    # run as `python -m`: a venv's scripts name the folder it was built in, not the renamed one
    return build(recipe, make) / "venv" / "bin" / "python"


def cores() -> int:
    return len(os.sched_getaffinity(0))


def spawn_litellm(work: Path, upstream: str, master_key: str, upstream_key: str) -> tuple[Proc, int]:
    """Started, not waited for (it starts while uplion's stack does): see `wait_litellm`."""
    python = litellm_python()
    port = free_port()
    per_token = {"input_cost_per_token": PRICE_PROMPT_PER_1K / 1e9,
                 "output_cost_per_token": PRICE_COMPLETION_PER_1K / 1e9}  # fmt: skip
    config = {
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": upstream, "api_key": upstream_key, **per_token}}],
        "general_settings": {"master_key": master_key},
        "litellm_settings": {"set_verbose": False, "json_logs": True, "request_timeout": 600},
    }  # fmt: skip
    root = work / "litellm"
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", NO_PROXY="127.0.0.1,localhost")
    argv = [str(python), "-m", "litellm.proxy.proxy_cli", "--config", str(root / "config.yaml"),
            "--host", "127.0.0.1", "--port", str(port), "--num_workers", str(cores())]  # fmt: skip
    return spawn("litellm", argv, root / "litellm.log", env=env, cwd=root), port


def wait_litellm(proc: Proc, port: int) -> None:
    """Until it answers, and every worker has started and gone quiet: the first worker up answers
    the health check while the others may still be importing the proxy."""
    wait_until(proc, lambda: http_status(f"http://127.0.0.1:{port}/health/liveliness") == 200, 300, interval=0.5)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(spawned_workers(proc.pid)) < cores():
        time.sleep(0.5)
    workers = spawned_workers(proc.pid)
    for w in workers:
        w.cpu_percent(None)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        with contextlib.suppress(psutil.Error):
            if all(w.cpu_percent(None) < 20 for w in workers):
                return


def spawned_workers(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [c for c in psutil.Process(pid).children() if "spawn_main" in " ".join(c.cmdline())]
    return []


# --- uplion ----------------------------------------------------------------------------------------


def start_uplion(work: Path, upstream: str, upstream_key: str, usage_recovery: bool = True) -> tuple[Stack, str]:
    """run.sh's stack serving one remote model; a member's API key with limits far above the load.
    `usage_recovery`: as run.sh (on: each completed task also sends billing a delayed recovery record)."""
    models = work / "models"
    spec = {"type": "remote", "model": MODEL, "baseURL": upstream, "maxProcessNum": 64,
            "apiKeys": [{"secretName": "upstream", "key": "api-key"}]}  # fmt: skip
    write_model(models, MODEL, spec)
    secrets = {local_secret_variable("upstream", "api-key"): upstream_key}
    stack = Stack(work / "uplion", models_dir=models, secrets=secrets, usage_recovery=usage_recovery)
    try:
        stack.start()
        assert stack.accounts is not None
        admin = Client(f"127.0.0.1:{stack.accounts.port}", stack.admin_token)
        try:
            admin.call("SetModelPrice", admin_pb2.SetModelPriceRequest(
                model=MODEL, prompt_micro_credits_per_1k=PRICE_PROMPT_PER_1K,
                completion_micro_credits_per_1k=PRICE_COMPLETION_PER_1K))  # fmt: skip
            user, token = admin.create_user_with_token("bench@peers.test")
            limits = admin_pb2.RateLimits(requests_per_minute=2**31, tokens_per_minute=2**31)
            admin.call("UpdateUser", admin_pb2.UpdateUserRequest(user_id=user.user_id, rate_limits=limits))
            admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=token.token.token_id, rate_limits=limits))
        finally:
            admin.channel.close()
    except BaseException:
        stack.stop()
        raise
    return stack, token.secret


async def _count_usage_events(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM usage_events"))
    finally:
        await conn.close()


# --- one HTTP exchange, the correctness check, time to first byte -----------------------------------


def post(port: int, body: str, key: str, conn: http.client.HTTPConnection | None = None) -> bytes:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    try:
        c.request("POST", PATH, body.encode(), headers)
        resp = c.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"127.0.0.1:{port} answered {resp.status}: {raw[:300]!r}")
        return raw
    finally:
        if conn is None:
            c.close()


def answer_of(raw: bytes, streamed: bool) -> tuple[str, dict[str, int]]:
    """(text, usage) of a chat completion, whole or as SSE."""
    if not streamed:
        obj = json.loads(raw)
        text, usage = obj["choices"][0]["message"]["content"], obj.get("usage") or {}
    else:
        text, usage = "", {}
        for line in raw.decode().splitlines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            obj = json.loads(line[5:])
            for choice in obj.get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
            usage = obj.get("usage") or usage
    return text, {k: int(usage.get(k, -1)) for k in USAGE}


def check_same_answers(sides: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """The same request to both sides, whole and streamed: the same text and usage as the fake sent."""
    expected = ("".join(PIECES), USAGE)
    seen: dict[str, Any] = {}
    for streamed in (False, True):
        for name, (port, key) in sides.items():
            got = answer_of(post(port, STREAM_BODY if streamed else BODY, key), streamed)
            seen[f"{name} {'streamed' if streamed else 'whole'}"] = {"text": got[0], "usage": got[1]}
            if got != expected:
                raise SystemExit(f"answers differ: {name} ({'streamed' if streamed else 'whole'}) gave {got}, "
                                 f"the upstream sent {expected}; not measuring")  # fmt: skip
    return seen


def first_byte_ms(port: int, key: str, seconds: float) -> list[float]:
    """Sequential streamed requests on one keep-alive connection: ms until the first body byte."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    out: list[float] = []
    try:
        post(port, STREAM_BODY, key, conn)  # connect and warm up outside the timing
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            conn.request("POST", PATH, STREAM_BODY.encode(), headers)
            resp = conn.getresponse()
            first = resp.read1(1)
            took = (time.perf_counter() - t0) * 1000
            rest = resp.read()
            if resp.status != 200 or not first + rest:
                raise RuntimeError(f"127.0.0.1:{port} answered {resp.status}")
            out.append(took)
    finally:
        conn.close()
    return out


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


# --- wrk -------------------------------------------------------------------------------------------

WRK_SCRIPT = """wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = [==[Bearer {key}]==]

function done(summary, latency, requests)
  local e = summary.errors
  local hist = {{}}
  for i = 1, #latency do
    local value, count = latency(i)
    hist[#hist + 1] = string.format("[%d,%d]", value, count)
  end
  io.write(string.format('{mark}{{"requests":%d,"duration_us":%d,"errors":%d,"latency_us":[%s]}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    table.concat(hist, ",")))
end
"""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install -y wrk)", flush=True)
        install = ["apt-get", "install", "-y", "-qq", "wrk"]
        if subprocess.run(install, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            subprocess.run(install, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("the peers benchmark needs wrk (Debian package `wrk`): apt-get install -y wrk (as root)")
    return found


@dataclass
class Run:
    """wrk's measurement: completed requests, seconds, errors and the latency histogram (µs -> n)."""

    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, other: Run) -> None:
        self.requests += other.requests
        self.seconds += other.seconds
        self.errors += other.errors
        for v, n in other.hist.items():
            self.hist[v] = self.hist.get(v, 0) + n

    @property
    def counted_rps(self) -> float:
        """wrk's own figure: requests completed within the runs / their seconds."""
        return self.requests / self.seconds if self.seconds else 0.0

    def rps(self, conns: int) -> float:
        """Little's law for wrk's closed loop (`conns` requests always outstanding): unlike the
        count, it does not lose the requests in flight when each run ends."""
        mean = self.mean_ms()
        return conns / mean * 1000 if mean else 0.0

    def pct(self, p: float) -> float:
        """The p-th percentile latency in ms."""
        total = sum(self.hist.values())
        if not total:
            return 0.0
        rank, seen = p / 100 * total, 0
        for v in sorted(self.hist):
            seen += self.hist[v]
            if seen >= rank:
                return v / 1000
        return max(self.hist) / 1000

    def mean_ms(self) -> float:
        total = sum(self.hist.values())
        return sum(v * n for v, n in self.hist.items()) / total / 1000 if total else 0.0

    def summary(self, conns: int) -> dict[str, Any]:
        return {"rps": self.rps(conns), "rps_counted_by_wrk": self.counted_rps, "requests": self.requests,
                "seconds": self.seconds, "errors": self.errors, "mean_ms": self.mean_ms(), "p50_ms": self.pct(50),
                "p90_ms": self.pct(90), "p99_ms": self.pct(99)}  # fmt: skip


@dataclass
class Target:
    name: str
    port: int
    key: str
    scripts: dict[bool, Path] = field(default_factory=dict)

    def script(self, streamed: bool, folder: Path) -> Path:
        if streamed not in self.scripts:
            path = folder / f"wrk-{self.name}-{'stream' if streamed else 'whole'}.lua"
            path.write_text(WRK_SCRIPT.format(body=STREAM_BODY if streamed else BODY, key=self.key, mark=MARK))
            self.scripts[streamed] = path
        return self.scripts[streamed]


class CpuSampler:
    """psutil cpu_percent of named process trees, twice a second while wrk runs, in core-seconds per
    side (which side was under load) and label; "(whole machine)" is psutil's system-wide figure."""

    def __init__(self, trees: list[tuple[str, str, int, bool]]) -> None:
        self.trees = trees  # (group, label, pid, with its children)
        self.core_s: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.seconds: dict[str, float] = defaultdict(float)
        self._procs: dict[str, list[psutil.Process]] = {}
        self._side = ""
        self._t = 0.0

    def begin(self, side: str, wrk_pid: int) -> None:
        self._side, self._procs = side, {}
        for _, label, pid, tree in [*self.trees, ("load", "wrk (load generator)", wrk_pid, False)]:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)] if tree else [root]
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        p.cpu_percent(None)
                self._procs[label] = procs
        psutil.cpu_percent(None)
        self._t = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        dt, self._t = now - self._t, now
        side = self.core_s[self._side]
        for label, procs in self._procs.items():
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    side[label] += p.cpu_percent(None) / 100 * dt
        side["(whole machine)"] += psutil.cpu_percent(None) / 100 * (psutil.cpu_count() or 1) * dt
        self.seconds[self._side] += dt

    def labels(self) -> list[str]:
        return [label for _, label, _, _ in self.trees] + ["wrk (load generator)"]

    def own(self, side: str) -> float:
        """CPU of `side`'s own processes (and its backing services) while it was under load."""
        return sum(self.percent(side, label) for group, label, _, _ in self.trees if group.split()[0] == side)

    def percent(self, side: str, label: str) -> float:
        """Mean CPU of `label` while `side` was under load, in % of one core."""
        secs = self.seconds.get(side, 0.0)
        return 100 * self.core_s[side].get(label, 0.0) / secs if secs else 0.0


def wrk(target: Target, port: int, streamed: bool, conns: int, seconds: int, folder: Path,
        sampler: CpuSampler | None = None) -> Run:  # fmt: skip
    argv = [wrk_binary(), "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "30s",
            "-s", str(target.script(streamed, folder)), f"http://127.0.0.1:{port}{PATH}"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            if sampler is not None:
                sampler.begin(target.name, proc.pid)
            while True:
                try:
                    out, err = proc.communicate(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if sampler is not None:
                        sampler.tick()
            if sampler is not None:
                sampler.tick()  # the last part (without wrk, gone by now)
        except BaseException:
            proc.kill()
            raise
    # requests still in flight when wrk closed its connections: let the side finish them first
    time.sleep(1.0)
    line = next((ln for ln in out.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()[-500:]} {out[-500:]}")
    raw = json.loads(line[len(MARK) :])
    return Run(raw["requests"], raw["duration_us"] / 1e6, raw["errors"], {int(v): int(n) for v, n in raw["latency_us"]})


# --- the benchmark ---------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    conns: int
    streamed: bool
    runs: dict[str, Run] = field(default_factory=dict)
    cpu: CpuSampler | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "concurrency": self.conns, "streamed": self.streamed}
        for side, run in self.runs.items():
            out[side] = {
                **run.summary(self.conns),
                "own_cpu_percent": self.cpu.own(side) if self.cpu else 0.0,
                "cpu_ms_per_request": self.cpu_ms_per_request(side),
                "others_cpu_percent": self.others(side),
            }
        return out  # fmt: skip

    def cpu_ms_per_request(self, side: str) -> float:
        rps = self.runs[side].rps(self.conns)
        return 10 * self.cpu.own(side) / rps if self.cpu is not None and rps else 0.0

    def others(self, side: str) -> float:
        """CPU (% of one core) of processes this benchmark did not start, while `side` was measured."""
        if self.cpu is None:
            return 0.0
        ours = sum(self.cpu.percent(side, label) for label in self.cpu.labels())
        return max(0.0, self.cpu.percent(side, "(whole machine)") - ours)


def alternate(i: int, names: list[str]) -> list[str]:
    """A B B A for even scenarios, B A A B for odd ones."""
    a, b = names if i % 2 == 0 else names[::-1]
    return [a, b, b, a]


def measure(scenario: Scenario, index: int, targets: dict[str, Target], seg: int, folder: Path,
            trees: list[tuple[str, str, int, bool]]) -> None:  # fmt: skip
    order = alternate(index, list(targets))
    scenario.cpu = sampler = CpuSampler(trees)
    warmed: set[str] = set()
    for name in order:
        t = targets[name]
        if name not in warmed:  # 1 s of the same load first: connections opened, caches filled
            wrk(t, t.port, scenario.streamed, scenario.conns, 1, folder)
            warmed.add(name)
        run = wrk(t, t.port, scenario.streamed, scenario.conns, seg, folder, sampler)
        scenario.runs.setdefault(name, Run()).add(run)
    row = " ".join(
        f"{n} {r.rps(scenario.conns):6.1f} req/s p50 {r.pct(50):7.2f} ms, others' CPU {scenario.others(n):3.0f} %;"
        for n, r in scenario.runs.items()
    )
    print(f"  {scenario.name:26} {row}", flush=True)


def trees_of(stack: Stack, litellm: Proc) -> list[tuple[str, str, int, bool]]:
    """(group, label, pid, with children) of every process this benchmark started."""
    out: list[tuple[str, str, int, bool]] = [("LiteLLM", "litellm supervisor", litellm.pid, False)]
    workers = spawned_workers(litellm.pid)
    out += [("LiteLLM", f"litellm worker {i + 1}", p.pid, True) for i, p in enumerate(workers)]
    with contextlib.suppress(psutil.Error):  # anything else the supervisor runs (multiprocessing's helpers)
        for c in psutil.Process(litellm.pid).children():
            if c.pid not in {w.pid for w in workers}:
                what = "resource tracker" if "resource_tracker" in " ".join(c.cmdline()) else c.name()
                out.append(("LiteLLM", f"litellm {what}", c.pid, True))
    for name, pid in stack.processes():
        group = "uplion backing" if name in UPLION_BACKING else "uplion"
        label = {"envoy": "envoy (edge)", "postgres": "postgres (all backends)"}.get(name, name)
        out.append((group, label, pid, name == "postgres" or name.startswith("worker ")))
    return out


def pss_mb(pid: int, tree: bool) -> float:
    total = 0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)] if tree else [root]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_full_info().pss
    return total / 2**20


def git_state() -> str:
    root = Path(__file__).resolve().parents[1]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()  # fmt: skip
        return f"{head}{' + working-tree changes' if dirty else ''}"
    return "unknown"


def report(scenarios: list[Scenario], extra: dict[str, Any], seg: int) -> str:
    names = ["LiteLLM", "uplion"]
    head = (f"{'scenario':20} {'LiteLLM req/s':>13} {'uplion req/s':>12} {'uplion/LiteLLM':>14} "
            f"{'LiteLLM p50/p99 ms':>19} {'uplion p50/p99 ms':>18} {'CPU ms/req L/U':>15} {'errors L/U':>10} "
            f"{'others CPU% L/U':>15}")  # fmt: skip
    lines = [f"== uplion (full production path) vs LiteLLM proxy 1.108.7: same fake upstream, wrk, {cores()} cores, "
             f"{2 * seg} s per side per scenario (A B B A)", head, "-" * len(head)]  # fmt: skip
    for s in scenarios:
        lite, upl = (s.runs[n] for n in names)
        lite_rps, upl_rps = lite.rps(s.conns), upl.rps(s.conns)
        ratio = upl_rps / lite_rps if lite_rps else 0.0
        lines.append(f"{s.name:20} {lite_rps:13.1f} {upl_rps:12.1f} {ratio:14.2f} "
                     f"{lite.pct(50):9.2f}/{lite.pct(99):<9.2f} {upl.pct(50):8.2f}/{upl.pct(99):<9.2f} "
                     f"{s.cpu_ms_per_request('LiteLLM'):9.1f}/{s.cpu_ms_per_request('uplion'):<5.1f} "
                     f"{lite.errors:>4d}/{upl.errors:<5d} "
                     f"{s.others('LiteLLM'):9.0f}/{s.others('uplion'):<5.0f}")  # fmt: skip
    seq, ttfb = extra["sequential"], extra["ttfb"]
    lines += [
        "req/s: concurrency / mean latency (Little's law; wrk's own count, which loses the requests in flight at "
        "the end of each run, is in the JSON)",
        "CPU ms/req: CPU of the side's own processes (uplion: with Pulsar, PostgreSQL, Redis) per request",
        "others CPU%: processes this benchmark did not start (concurrent tests, builds), in % of one core, "
        "while that side was measured",
        "",
        f"sequential added p50 (c=1, total minus the upstream's own c=1 p50 of {seq['upstream_json_p50_ms']:.3f} ms "
        f"whole / {seq['upstream_sse_p50_ms']:.3f} ms SSE): LiteLLM {seq['LiteLLM_added_ms']:.2f} ms, "
        f"uplion {seq['uplion_added_ms']:.2f} ms",
        f"streaming time to first byte, added p50 (c=1, Python client; upstream's own "
        f"{ttfb['upstream_p50_ms']:.3f} ms): LiteLLM {ttfb['LiteLLM_added_ms']:.2f} ms, "
        f"uplion {ttfb['uplion_added_ms']:.2f} ms",
    ]  # fmt: skip
    pss = extra["pss"]
    totals = pss["totals_mb"]
    lines += [
        f"PSS totals: LiteLLM {totals['LiteLLM']:.0f} MB; uplion's own processes {totals['uplion']:.0f} MB "
        f"(+ backing services {totals['uplion backing']:.0f} MB: Pulsar, PostgreSQL, Redis; "
        f"{totals['uplion'] + totals['uplion backing']:.0f} MB in all)",
        f"billing: {extra['usage_events']} usage events in PostgreSQL at the end",
        "",
        "== PSS by process (MB, after the load)",
    ]  # fmt: skip
    for group in ("LiteLLM", "uplion", "uplion backing"):
        rows = [(label, mb) for g, label, mb in pss["by_process"] if g == group]
        lines.append(f"{group + ':':16} " + ", ".join(f"{label} {mb:.0f}" for label, mb in rows))
    cpu = extra["cpu"]
    lines += ["", f"== CPU share by process during {cpu['scenario']} (psutil cpu_percent, % of one core; "
              f"{cores()} cores = {100 * cores()} %)",
              f"{'process':34} {'during LiteLLM runs':>20} {'during uplion runs':>19}"]  # fmt: skip
    for label, lite_pct, upl_pct in cpu["rows"]:
        lines.append(f"{label:34} {lite_pct:19.1f}% {upl_pct:18.1f}%")
    lines.append("(other processes: everything on the machine this benchmark did not start, e.g. concurrent tests)")
    return "\n".join(lines)


def main(duration: float, work: Path, usage_recovery: bool = True) -> None:
    seg = max(1, round(duration / 2))
    wrk_binary()
    litellm_python()
    print(f"work folder {work}", flush=True)
    master_key, upstream_key = f"sk-{os.urandom(24).hex()}", f"sk-upstream-{os.urandom(12).hex()}"
    fake: Envoy | None = None
    litellm: Proc | None = None
    stack: Stack | None = None
    ok = False
    try:
        fake_port = free_port()
        fake = start_envoy(work / "fake-upstream", fake_upstream_config(fake_port))
        upstream = f"http://127.0.0.1:{fake_port}/v1"
        litellm, litellm_port = spawn_litellm(work, upstream, master_key, upstream_key)
        print("starting uplion's stack (Pulsar, PostgreSQL, Redis, gateway, worker, accounts, authz, rate limiter, "
              "Envoy, billing) and LiteLLM", flush=True)  # fmt: skip
        stack, api_key = start_uplion(work, upstream, upstream_key, usage_recovery)
        wait_litellm(litellm, litellm_port)
        targets = {"LiteLLM": Target("LiteLLM", litellm_port, master_key),
                   "uplion": Target("uplion", stack.http_port, api_key)}  # fmt: skip
        answers = check_same_answers({n: (t.port, t.key) for n, t in targets.items()})
        print(f"same answers on both sides, whole and streamed: {''.join(PIECES)!r}, usage {USAGE}", flush=True)

        scripts = work / "wrk"
        scripts.mkdir(exist_ok=True)
        fake_t = Target("upstream", fake_port, upstream_key)
        ours = [*trees_of(stack, litellm), ("upstream", "fake upstream (Envoy)", fake.proc.pid, False)]
        print(f"measuring, {seg} s per run:", flush=True)
        # the upstream's own time at c=1 (LiteLLM's whole answers are its JSON, uplion always reads SSE)
        up_json, up_sse = (wrk(fake_t, fake_port, streamed, 1, seg, scripts) for streamed in (False, True))
        scenarios = [Scenario("non-streaming c=1", 1, False), Scenario("non-streaming c=16", 16, False),
                     Scenario("non-streaming c=64", 64, False), Scenario("streaming c=16", 16, True),
                     Scenario("streaming c=64", 64, True)]  # fmt: skip
        for i, s in enumerate(scenarios):
            measure(s, i, targets, seg, scripts, ours)

        # time to first byte, sequential (a Python client is fine at c=1)
        up_ttfb = median(first_byte_ms(fake_port, upstream_key, seg))
        firsts: dict[str, list[float]] = defaultdict(list)
        for name in alternate(len(scenarios), list(targets)):
            firsts[name] += first_byte_ms(targets[name].port, targets[name].key, seg)

        trees = trees_of(stack, litellm)
        by_process = [(group, label, pss_mb(pid, tree)) for group, label, pid, tree in trees]
        totals: dict[str, float] = defaultdict(float)
        for group, _, mb in by_process:
            totals[group] += mb
        usage_events = asyncio.run(_count_usage_events(stack.postgres.dsn)) if stack.postgres else -1

        seq = scenarios[0].runs
        extra: dict[str, Any] = {
            "sequential": {"upstream_json_p50_ms": up_json.pct(50), "upstream_sse_p50_ms": up_sse.pct(50),
                           "LiteLLM_added_ms": seq["LiteLLM"].pct(50) - up_json.pct(50),
                           "uplion_added_ms": seq["uplion"].pct(50) - up_sse.pct(50)},
            "ttfb": {"upstream_p50_ms": up_ttfb, "samples": {n: len(v) for n, v in firsts.items()},
                     **{f"{n}_p50_ms": median(v) for n, v in firsts.items()},
                     **{f"{n}_added_ms": median(v) - up_ttfb for n, v in firsts.items()}},
            "pss": {"by_process": by_process, "totals_mb": dict(totals)},
            "usage_events": usage_events,
        }  # fmt: skip
        sampler = next(s.cpu for s in scenarios if s.name == CPU_SCENARIO)
        assert sampler is not None
        labels = sampler.labels()
        rows = [(label, sampler.percent("LiteLLM", label), sampler.percent("uplion", label)) for label in labels]
        machine = [sampler.percent(side, "(whole machine)") for side in ("LiteLLM", "uplion")]
        other = (max(0.0, machine[0] - sum(r[1] for r in rows)), max(0.0, machine[1] - sum(r[2] for r in rows)))
        rows += [("other processes", *other), ("(whole machine)", machine[0], machine[1])]
        extra["cpu"] = {"scenario": CPU_SCENARIO, "rows": rows}
        print(report(scenarios, extra, seg), flush=True)

        results = Path(__file__).parent / "results"
        results.mkdir(exist_ok=True)
        out = results / f"peers-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(json.dumps({
            "benchmark": "peers", "when": datetime.now(UTC).isoformat(), "duration_per_side_s": 2 * seg,
            "cores": cores(), "load_average": os.getloadavg(), "uplion": git_state(), "litellm": LITELLM_REQUIREMENT,
            "answers": answers,
            "upstream_c1": {"json": up_json.summary(1), "sse": up_sse.summary(1)},
            "scenarios": [s.summary() for s in scenarios],
            **extra,
        }, indent=2))  # fmt: skip
        print(f"raw results: {out}", flush=True)
        ok = True
    finally:
        for stop in (stack.stop if stack else None, litellm.stop if litellm else None, fake.stop if fake else None):
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)


def _duration(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 300:
        raise argparse.ArgumentTypeError("--duration must be between 1 and 300 seconds")
    return value


def entry() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--duration", type=_duration, default=10.0,
                        help="measured seconds per scenario and side (1-300; split into two runs)")  # fmt: skip
    parser.add_argument("--no-usage-recovery", action="store_true",
                        help="uplion without usage recovery (no recovery record per task): its cost")  # fmt: skip
    args = parser.parse_args()
    # SIGTERM (and Ctrl-C) unwind through main's finally: every process started here is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main(args.duration, workdir(), usage_recovery=not args.no_usage_recovery)


if __name__ == "__main__":
    entry()
