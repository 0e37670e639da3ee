"""The devstack's OpenTelemetry Collector (devstack/otelcol, built from the Go module proxy): spans
sent by the Python SDK's OTLP/gRPC exporter come back from its file, ids in hex, parent links and
attributes as plain values; and the Go rate limiter's decision span reaches it, under its caller's
span, exported at SIGTERM."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from uplion.devstack import gotools
from uplion.devstack.cache import RECIPE_FILE
from uplion.devstack.otelcol import Collector, start_otelcol
from uplion.devstack.ratelimit import start_ratelimit
from uplion.devstack.redis import start_redis


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    c = start_otelcol(Path(tmp_path_factory.mktemp("otelcol")))
    yield c
    c.stop()


def test_it_builds_into_an_empty_cache_with_every_collector_module_at_one_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPLION_CACHE", str(tmp_path / "cache"))
    binary = gotools.otelcol_binary()  # seconds: Go's own build cache stays warm
    assert binary.parent == tmp_path / "cache" / gotools.otelcol_recipe().folder
    assert (binary.parent / RECIPE_FILE).is_file()
    out = subprocess.run([str(binary), "components"], capture_output=True, text=True, timeout=60, check=True).stdout
    for section, name in (("receivers", "otlp"), ("processors", "batch"), ("exporters", "file")):
        assert f"{section}:\n    - name: {name}\n" in out, out
    info = subprocess.run([gotools.go_command(), "version", "-m", str(binary)], capture_output=True, text=True,
                          timeout=60, check=True).stdout  # fmt: skip
    modules = [line.split("\t")[2:4] for line in info.splitlines() if line.startswith("\tdep\t")]
    prefixes = ("go.opentelemetry.io/collector", "github.com/open-telemetry/opentelemetry-collector")
    collector = {m: v for m, v in modules if m.startswith(prefixes)}
    assert collector["github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"] == "v0.161.0"
    assert collector["go.opentelemetry.io/collector/otelcol"] == "v0.161.0"
    assert set(collector.values()) == {"v0.161.0", "v1.67.0"}, collector


def test_a_span_sent_over_otlp_grpc_is_read_back_from_the_file(collector: Collector) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "uplion-test"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.endpoint, insecure=True)))
    tracer = provider.get_tracer("tests.unit.test_otelcol")
    attrs: dict[str, AttributeValue] = {
        "uplion.model": "echo", "uplion.user_id": "u_1", "uplion.descriptors": 3, "uplion.ratio": 0.5,
        "uplion.stream": True, "uplion.tags": ["a", "b"],
    }  # fmt: skip
    with (
        tracer.start_as_current_span("test parent", kind=SpanKind.SERVER, attributes=attrs) as parent,
        tracer.start_as_current_span("test child") as child,
    ):
        child.set_status(Status(StatusCode.ERROR, "upstream failed"))
    provider.shutdown()

    spans = collector.wait_for_spans(lambda spans: {"test parent", "test child"} <= {s["name"] for s in spans})
    by_name = {s["name"]: s for s in spans}
    p, c = by_name["test parent"], by_name["test child"]
    trace_id = format(parent.get_span_context().trace_id, "032x")
    assert p["trace_id"] == c["trace_id"] == trace_id
    assert p["span_id"] == format(parent.get_span_context().span_id, "016x")
    assert c["span_id"] == format(child.get_span_context().span_id, "016x")
    assert c["parent_span_id"] == p["span_id"]
    assert p["parent_span_id"] == ""
    assert (p["kind"], c["kind"]) == ("SERVER", "INTERNAL")
    assert p["service"] == c["service"] == "uplion-test"
    assert p["attributes"] == attrs
    assert (c["status"], c["status_message"]) == ("ERROR", "upstream failed")
    assert p["status"] == "UNSET"
    assert p["start_ns"] <= c["start_ns"] <= c["end_ns"] <= p["end_ns"]


def test_the_rate_limiters_decision_span_is_exported_under_its_callers_span(
    collector: Collector, tmp_path: Path
) -> None:
    redis = start_redis(tmp_path / "redis")
    try:
        rls = start_ratelimit(tmp_path, redis.url, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint)
        try:
            req = rls_pb2.RateLimitRequest(domain="uplion", hits_addend=1)  # the built-in rules
            for entries in ([("generic_key", "requests"), ("user_id", "u_trace")],
                            [("generic_key", "requests"), ("token_id", "tok_trace")],
                            [("uplion_request_id", "req-trace")]):  # fmt: skip
                req.descriptors.add().entries.extend(ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v)
                                                     for k, v in entries)  # fmt: skip
            trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"  # Envoy's span
            with grpc.insecure_channel(f"127.0.0.1:{rls.port}") as channel:
                reply = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
                    req, timeout=5, metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")]
                )
            assert reply.overall_code == rls_pb2.RateLimitResponse.OK
        finally:
            rls.stop()  # SIGTERM: the batch of spans still held is exported before the process exits
    finally:
        redis.stop()

    spans = collector.wait_for_spans(lambda spans: any(s["trace_id"] == trace_id for s in spans))
    [span] = [s for s in spans if s["trace_id"] == trace_id]
    assert (span["name"], span["kind"], span["service"]) == ("ratelimit ShouldRateLimit", "SERVER", "uplion-ratelimit")
    assert span["parent_span_id"] == parent_id
    assert span["span_id"] not in ("", parent_id)
    attrs = span["attributes"]
    assert {k: v for k, v in attrs.items() if k.startswith("uplion.")} == {
        "uplion.domain": "uplion",
        "uplion.descriptors": 3,
        "uplion.overall_code": "OK",
        "uplion.user_id": "u_trace",
        "uplion.token_id": "tok_trace",
        "uplion.request_id": "req-trace",
    }
    assert span["status"] == "UNSET"
