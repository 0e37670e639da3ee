"""One trace per request across every hop (issue #18, docs/tracing.md): the real edge (Envoy with its
OpenTelemetry tracer, authz, the Go rate limiter), the gateway, Pulsar, a remote worker and its
upstream call (the wire-true fake OpenAI account), and billing, each exporting OTLP to a real
OpenTelemetry Collector built from Go modules (devstack/otelcol), whose file exporter the test reads.

Asserted: one trace holds a span of every service, linked parent to child as the request travelled
(Envoy → authz and rate limiter; Envoy → gateway → publish → worker → upstream; gateway → billing);
the spans name the model and the user, never the key; a worker's log line about a failed request
carries that request's x-request-id and trace id."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from tests.edge.conftest import _new_database
from uplion.accounts.cli import Client
from uplion.core.credentials import secret_hash
from uplion.devstack.otelcol import Collector, start_otelcol
from uplion.devstack.platform import (
    bootstrap_admin,
    start_accounts,
    start_authz,
    start_billing,
    start_edge,
    start_gateway,
    start_worker,
)
from uplion.devstack.postgres import Postgres
from uplion.devstack.pulsar import Pulsar
from uplion.devstack.ratelimit import start_ratelimit
from uplion.devstack.redis import Redis
from uplion.devstack.stack import Stoppable

from ..fakes.openai_server import threaded

MODEL, BROKEN = "trace-remote", "trace-broken"
NAMESPACE = "tracing"
# a short batch delay: the spans reach the collector within a second of the request
TRACE_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "200"}


S = TypeVar("S", bound=Stoppable)


@dataclass
class Traced:
    url: str
    key: str
    user_id: str
    collector: Collector
    worker_logs: list[Path]


@pytest.fixture(scope="module")
async def traced(broker: Pulsar, postgres: Postgres, redis_server: Redis, run_dir: Path) -> AsyncIterator[Traced]:
    d = run_dir / "tracing"
    d.mkdir()
    dsn = await _new_database(postgres, "tracing")
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/5"
    broker.create_namespace(NAMESPACE)
    ns = {"UPLION_PULSAR_NAMESPACE": NAMESPACE}
    # everything started is stopped in reverse order, also when a later start fails
    with ExitStack() as started, pytest.MonkeyPatch.context() as mp:

        def up(svc: S) -> S:
            started.callback(svc.stop)
            return svc

        collector = up(start_otelcol(d / "otelcol"))
        upstream = started.enter_context(threaded())
        # every process started here traces (they inherit this environment)
        mp.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        for name, value in TRACE_ENV.items():
            mp.setenv(name, value)
        accounts = up(start_accounts(d, dsn, redis_url))
        authz = up(start_authz(d, dsn, redis_url))
        admin = Client(f"127.0.0.1:{accounts.port}", bootstrap_admin(dsn, "root@tracing.test")["secret"])
        started.callback(admin.channel.close)
        user, token = admin.create_user_with_token("member@tracing.test")
        gw = up(start_gateway(d, broker.service_url, [MODEL, BROKEN], UPLION_REMOTE_MODELS=f"{MODEL},{BROKEN}",
                              UPLION_PULSAR_NAMESPACE=NAMESPACE))  # fmt: skip
        up(start_worker(d, broker.service_url, MODEL, "remote", UPLION_BASE_URL=upstream.base_url,
                        UPLION_API_KEYS="good-1", UPLION_WORKER_ID="trace-ok", **ns))  # fmt: skip
        up(start_worker(d, broker.service_url, BROKEN, "remote", UPLION_BASE_URL=upstream.base_url,
                        UPLION_API_KEYS="bad-1", UPLION_WORKER_ID="trace-bad", **ns))  # fmt: skip
        up(start_billing(d, broker.service_url, dsn, redis_url, **ns))
        conn = await asyncpg.connect(dsn)  # billing has made its tables; a price, so the model's usage is billed
        await conn.execute("INSERT INTO model_prices VALUES ($1, to_timestamp(0), 1, 2) ON CONFLICT DO NOTHING", MODEL)
        await conn.close()
        ratelimit = up(start_ratelimit(d, redis_url))
        envoy, port = start_edge(d, gw.port, authz_port=authz.port, accounts_port=accounts.port,
                                 ratelimit_ports=(ratelimit.port,), otlp_port=collector.port)  # fmt: skip
        started.callback(envoy.stop)
        mp.undo()  # the test's own process and later suites: no tracing
        yield Traced(f"http://127.0.0.1:{port}", token.secret, user.user_id, collector,
                     [d / "worker-trace-ok.log", d / "worker-trace-bad.log"])  # fmt: skip


def _chat(t: Traced, model: str) -> tuple[httpx.Response, str]:
    """The answer and the edge's request id (Envoy makes its own: a client's x-request-id is not trusted)."""
    body = {"model": model, "messages": [{"role": "user", "content": "trace me"}], "max_tokens": 16}
    headers = {"authorization": f"Bearer {t.key}", "x-request-id": "chosen-by-the-client"}
    r = httpx.post(f"{t.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert r.headers["x-request-id"] != "chosen-by-the-client"
    return r, r.headers["x-request-id"]


SERVICES = {"uplion-edge", "uplion-authz", "uplion-ratelimit", "uplion-gateway", "uplion-worker", "uplion-billing"}


def _trace_of(t: Traced, request_id: str, services: set[str], wait_s: float = 30.0) -> list[dict[str, Any]]:
    """The spans of the trace whose gateway span names `request_id`, once every service in
    `services` has exported its span(s) to the collector."""
    deadline = time.monotonic() + wait_s
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        everything = t.collector.spans()
        ids = {s["trace_id"] for s in everything if s["attributes"].get("uplion.request_id") == request_id}
        spans = [s for s in everything if s["trace_id"] in ids]
        if len(ids) == 1 and services <= {s["service"] for s in spans}:
            return spans
        time.sleep(0.3)
    seen = sorted({(s["service"], s["name"]) for s in spans})
    raise AssertionError(f"the trace of {request_id} did not reach the collector in {wait_s} s: {seen}")


def _one(spans: list[dict[str, Any]], service: str, name_part: str) -> dict[str, Any]:
    found = [s for s in spans if s["service"] == service and name_part in s["name"]]
    assert len(found) == 1, f"{service} {name_part!r}: {[(s['service'], s['name']) for s in spans]}"
    return found[0]


def test_one_trace_shows_every_hop_of_a_request_linked_parent_to_child(traced: Traced) -> None:
    r, request_id = _chat(traced, MODEL)
    assert r.status_code == 200, r.text
    spans = _trace_of(traced, request_id, SERVICES)
    by_id = {s["span_id"]: s for s in spans}

    def parent(s: dict[str, Any]) -> dict[str, Any]:
        assert s["parent_span_id"] in by_id, f"{s['service']} {s['name']!r} has no parent in the trace"
        return by_id[s["parent_span_id"]]

    roots = [s for s in spans if not s["parent_span_id"]]
    assert [(s["service"], s["kind"]) for s in roots] == [("uplion-edge", "SERVER")], roots
    edge = roots[0]
    authz = _one(spans, "uplion-authz", "authz check")
    ratelimit = _one(spans, "uplion-ratelimit", "ShouldRateLimit")
    gateway = _one(spans, "uplion-gateway", "gateway chat")
    publish = _one(spans, "uplion-gateway", "publish task")
    worker = _one(spans, "uplion-worker", "worker task")
    upstream = _one(spans, "uplion-worker", "upstream POST /chat/completions")
    billing = _one(spans, "uplion-billing", "billing usage event")
    # Envoy's own client spans sit between it and each service it called
    for server in (authz, ratelimit, gateway):
        call = parent(server)
        assert (call["service"], call["kind"]) == ("uplion-edge", "CLIENT"), (server["name"], call)
        assert parent(call) is edge
    assert parent(publish) is gateway
    assert publish["kind"] == "PRODUCER"
    assert parent(worker) is publish
    assert worker["kind"] == "CONSUMER"
    assert parent(upstream) is worker
    assert upstream["kind"] == "CLIENT"
    assert parent(billing) is gateway
    assert billing["kind"] == "CONSUMER"
    # what the spans say: model, user, request, outcome and tokens; the key nowhere
    for s in (gateway, worker, billing):
        assert s["attributes"]["uplion.model"] == MODEL, s
        assert s["attributes"]["uplion.user_id"] == traced.user_id, s
        assert s["attributes"]["uplion.request_id"] == request_id, s
    assert authz["attributes"]["uplion.user_id"] == traced.user_id
    assert authz["attributes"]["uplion.allowed"] is True
    assert gateway["attributes"]["uplion.outcome"] == "completed"
    usage = r.json()["usage"]
    assert gateway["attributes"]["uplion.prompt_tokens"] == usage["prompt_tokens"]
    assert gateway["attributes"]["uplion.completion_tokens"] == usage["completion_tokens"]
    assert upstream["attributes"]["http.response.status_code"] == 200
    assert ratelimit["attributes"]["uplion.overall_code"] == "OK"
    # each hop's time is inside its parent's (clocks of one machine)
    for s in (authz, ratelimit, gateway, publish, worker, upstream):
        p = parent(s)
        assert p["start_ns"] <= s["start_ns"], (p["name"], s["name"])
    text = json.dumps(spans)
    assert traced.key not in text
    assert secret_hash(traced.key).hex() not in text


def test_a_failed_request_is_a_failed_trace_and_the_worker_log_line_names_it(traced: Traced) -> None:
    r, request_id = _chat(traced, BROKEN)
    assert r.status_code >= 400, r.text
    spans = _trace_of(traced, request_id, {"uplion-edge", "uplion-gateway", "uplion-worker"})
    gateway = _one(spans, "uplion-gateway", "gateway chat")
    upstream = _one(spans, "uplion-worker", "upstream POST /chat/completions")
    worker = _one(spans, "uplion-worker", "worker task")
    assert gateway["status"] == "ERROR"
    assert gateway["attributes"]["uplion.outcome"] == "failed"
    assert upstream["status"] == "ERROR"
    assert upstream["attributes"]["http.response.status_code"] == 401
    assert worker["status"] == "ERROR"
    lines = [json.loads(x) for x in traced.worker_logs[1].read_text().splitlines() if x.startswith("{")]
    about = [x for x in lines if x.get("request_id") == request_id]
    assert about, f"no worker log line names {request_id}: {lines[-3:]}"
    assert {x["trace_id"] for x in about} == {worker["trace_id"]}
    assert all(x["task_id"] == worker["attributes"]["uplion.task_id"] for x in about)
