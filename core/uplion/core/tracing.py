"""OpenTelemetry traces, the same way in every service (docs/tracing.md).

Off unless OpenTelemetry's own setting names a collector: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP over gRPC; an `http://` address is plaintext). Then spans go
through a batch processor to that collector, named by `OTEL_SERVICE_NAME` (default
`uplion-<service>`), sampled as `OTEL_TRACES_SAMPLER` says (default: follow the parent, Envoy's
decision). When off, every function here returns at once and creates nothing: the request path pays
one boolean test per hop.

Context crosses hops as W3C trace context (`traceparent`, `tracestate`): gRPC metadata from Envoy to
authz and the gateway, Pulsar message properties from the gateway to workers (tasks) and to billing
(usage events). Span attributes name the model, the user and the request (`uplion.*`), never a key.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

ENDPOINT_SETTINGS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACE_HEADERS = ("traceparent", "tracestate")
SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = (
    SpanKind.SERVER,
    SpanKind.CLIENT,
    SpanKind.PRODUCER,
    SpanKind.CONSUMER,
    SpanKind.INTERNAL,
)

_tracer: trace.Tracer | None = None
_provider: Any = None


def enabled() -> bool:
    return _tracer is not None


def configured(env: Mapping[str, str]) -> bool:
    """Whether `env` names a collector (the only switch: no uplion-specific setting)."""
    return any(env.get(name) for name in ENDPOINT_SETTINGS)


def setup_tracing(service: str, env: Mapping[str, str] = os.environ) -> bool:
    """Install the exporter when a collector is configured; whether tracing is on."""
    global _tracer, _provider
    if not configured(env):
        return False
    # imported only when on: the SDK and its gRPC exporter are not loaded by services that do not trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or f"uplion-{service}"})
    _provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER, parent-based by default
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    _tracer = _provider.get_tracer("uplion")
    return True


def shutdown() -> None:
    """Export what is still buffered (a service's last step before it exits)."""
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.shutdown()


def context_from(pairs: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> otel_context.Context | None:
    """The parent a request or message carries (gRPC metadata pairs or Pulsar properties); None
    when tracing is off or it carries none."""
    if _tracer is None:
        return None
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    carrier = {k: v for k, v in items if k in TRACE_HEADERS and isinstance(v, str)}
    return propagate.extract(carrier) if carrier else None


Parent = otel_context.Context | Span | None


def message_context(message: Any) -> otel_context.Context | None:
    """The parent a Pulsar message's properties carry (None when off: the properties are not read)."""
    return None if _tracer is None else context_from(message.properties())


def start(name: str, kind: SpanKind = INTERNAL, parent: Parent = None,
          attributes: Mapping[str, Any] | None = None) -> Span | None:  # fmt: skip
    """A span the caller ends (`end`), child of `parent` (a context or a span) or else of the
    current span; None when off."""
    if _tracer is None:
        return None
    if isinstance(parent, Span):
        parent = trace.set_span_in_context(parent)
    attrs = {k: v for k, v in (attributes or {}).items() if v not in (None, "")}
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attrs)


@contextlib.contextmanager
def span(name: str, kind: SpanKind = INTERNAL, parent: Parent = None,
         attributes: Mapping[str, Any] | None = None) -> Iterator[Span | None]:  # fmt: skip
    """A span around a block, current inside it (child spans and log lines see it); an exception
    leaving the block marks it failed. Yields None when tracing is off."""
    s = start(name, kind, parent, attributes)
    if s is None:
        yield None
        return
    with trace.use_span(s, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        try:
            yield s
        except BaseException as e:
            fail(s, e)
            raise


def make_current(s: Span | None) -> None:
    """Make `s` the current span for the rest of the running asyncio task (and the tasks it starts):
    for a task that serves one request, such as a gRPC call's."""
    if s is not None:
        otel_context.attach(trace.set_span_in_context(s))


def fail(s: Span | None, error: BaseException | str) -> None:
    if s is not None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        s.set_status(Status(StatusCode.ERROR, text[:200]))


def fail_current(error: str) -> None:
    """Mark the current span failed (e.g. a worker's attempt that ends in an error reply)."""
    if _tracer is not None:
        fail(trace.get_current_span(), error)


def end(s: Span | None, **attributes: Any) -> None:
    if s is not None:
        for key, value in attributes.items():
            if value not in (None, ""):
                s.set_attribute(key, value)
        s.end()


def carrier(s: Span | None) -> dict[str, str]:
    """Trace context for `s` as headers or message properties (empty when off)."""
    if s is None:
        return {}
    out: dict[str, str] = {}
    propagate.inject(out, context=trace.set_span_in_context(s))
    return out


def log_ids() -> dict[str, str]:
    """The current trace and span ids for a log line (empty outside a span or when off)."""
    if _tracer is None:
        return {}
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
