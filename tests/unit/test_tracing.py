"""uplion.core.tracing and the log lines' request ids (uplion.core.logs): off by default at no cost,
and, when on, trace context that survives a trip through message properties."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from uplion.core import logs, tracing


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory (setup_tracing would export to a collector)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def test_off_unless_a_collector_is_named() -> None:
    assert not tracing.configured({})
    assert not tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"})
    assert not tracing.setup_tracing("test", {})
    assert not tracing.enabled()


def test_when_off_nothing_is_created_or_read() -> None:
    class Unread:
        def properties(self) -> dict[str, str]:
            raise AssertionError("read while tracing is off")

    assert tracing.start("x") is None
    assert tracing.message_context(Unread()) is None
    assert tracing.context_from({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None
    with tracing.span("x") as s:
        assert s is None
    assert tracing.carrier(None) == {}
    assert tracing.log_ids() == {}
    tracing.end(None, a=1)
    tracing.fail(None, "e")


def test_context_crosses_a_message_as_properties(exported: InMemorySpanExporter) -> None:
    with tracing.span("publish", SpanKind.PRODUCER) as sent:
        properties = tracing.carrier(sent)
    assert set(properties) == {"traceparent"}
    received = tracing.start("consume", SpanKind.CONSUMER, tracing.context_from(properties), {"uplion.model": "m",
                                                                                              "empty": ""})  # fmt: skip
    tracing.end(received, **{"uplion.outcome": "completed"})
    publish, consume = exported.get_finished_spans()
    assert consume.parent is not None
    assert consume.parent.span_id == publish.context.span_id
    assert consume.context.trace_id == publish.context.trace_id
    assert dict(consume.attributes or {}) == {"uplion.model": "m", "uplion.outcome": "completed"}  # empty left out


def test_context_from_grpc_metadata_pairs_ignores_other_headers(exported: InMemorySpanExporter) -> None:
    parent = tracing.start("edge")
    pairs = [("x-request-id", "r1"), *tracing.carrier(parent).items(), ("authorization", "Bearer k")]
    tracing.end(tracing.start("authz", SpanKind.SERVER, tracing.context_from(pairs)))
    tracing.end(parent)
    child, edge = exported.get_finished_spans()
    assert child.parent is not None
    assert child.parent.span_id == edge.context.span_id
    assert tracing.context_from([("x-request-id", "r1")]) is None


def _nested_then_raise() -> None:
    with tracing.span("outer") as outer:
        with tracing.span("inner") as inner:
            assert inner is not None
            assert outer is not None
        raise ValueError("boom")


def test_an_exception_fails_the_span_and_a_child_span_nests(exported: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="boom"):
        _nested_then_raise()
    inner_done, outer_done = exported.get_finished_spans()
    assert inner_done.parent is not None
    assert inner_done.parent.span_id == outer_done.context.span_id
    assert outer_done.status.status_code is StatusCode.ERROR
    assert outer_done.status.description == "ValueError: boom"
    assert inner_done.status.status_code is StatusCode.UNSET


def _record(msg: str) -> dict[str, object]:
    record = logging.LogRecord("uplion.test", logging.WARNING, __file__, 1, msg, (), None)
    return dict(json.loads(logs.JsonFormatter("test").format(record)))


def test_log_lines_carry_the_request_ids_and_the_trace(exported: InMemorySpanExporter) -> None:
    assert "request_id" not in _record("before")
    with logs.about_request(request_id="r-1", task_id="t-1", empty=""), tracing.span("worker task") as s:
        line = _record("inside")
    assert s is not None
    assert line["request_id"] == "r-1"
    assert line["task_id"] == "t-1"
    assert "empty" not in line
    assert line["trace_id"] == format(s.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(s.get_span_context().span_id, "016x")
    after = _record("after")
    assert "request_id" not in after
    assert "trace_id" not in after


def test_the_otlp_exporter_gets_opentelemetry_protos_own_generated_files() -> None:
    """xds-protos ships an old copy of OpenTelemetry's generated protos in the same files; the
    install (scripts/bootstrap.sh, the images) puts opentelemetry-proto's back last. With the old
    copy the exporter cannot be imported, and a service with tracing on would not start."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.common.v1 import common_pb2

    assert OTLPSpanExporter.__name__ == "OTLPSpanExporter"
    assert "InstrumentationScope" in common_pb2.DESCRIPTOR.message_types_by_name
