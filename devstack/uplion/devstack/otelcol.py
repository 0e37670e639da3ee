"""An OpenTelemetry Collector (uplion's build of it, devstack/otelcol) on a free loopback port: it
receives OTLP over gRPC and writes every span it gets to `<workdir>/spans.jsonl` (the file
exporter's OTLP JSON, one export batch a line, flushed every 100 ms), which `Collector.spans()` reads
back as flat dicts. Tests point a service at it with `OTEL_EXPORTER_OTLP_ENDPOINT=<endpoint>`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gotools import otelcol_binary
from .procs import Proc, free_port, spawn, tcp_open, wait_until

# OTLP's Span.SpanKind and Status.StatusCode, as the file exporter writes them (numbers)
KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}

CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
    timeout: 50ms
exporters:
  file:
    path: {path}
    format: json
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [file]
"""


def any_value(v: dict[str, Any]) -> Any:
    """A plain Python value of an OTLP JSON AnyValue (64-bit integers are JSON strings there;
    bytes stay base64 text)."""
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [any_value(x) for x in v["arrayValue"].get("values", [])]
    if "kvlistValue" in v:
        return attributes(v["kvlistValue"].get("values", []))
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def attributes(kvs: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: any_value(kv.get("value", {})) for kv in kvs}


def parse_spans(text: str) -> list[dict[str, Any]]:
    """Every span in the file exporter's output, flat: trace_id, span_id and parent_span_id (hex, ""
    for a root), name, kind ("SERVER", ...), service (the resource's service.name), scope,
    attributes (a dict of plain values), status ("UNSET", "OK", "ERROR"), status_message,
    start_ns, end_ns. A last line not yet complete is left for the next read."""
    out = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n") or not line.strip():
            continue
        for rs in json.loads(line).get("resourceSpans", []):
            resource = attributes(rs.get("resource", {}).get("attributes", []))
            for ss in rs.get("scopeSpans", []):
                scope = ss.get("scope", {}).get("name", "")
                for s in ss.get("spans", []):
                    status = s.get("status", {})
                    out.append({
                        "trace_id": s.get("traceId", ""),
                        "span_id": s.get("spanId", ""),
                        "parent_span_id": s.get("parentSpanId", ""),
                        "name": s.get("name", ""),
                        "kind": KINDS.get(int(s.get("kind", 0)), str(s.get("kind"))),
                        "service": resource.get("service.name", ""),
                        "scope": scope,
                        "attributes": attributes(s.get("attributes", [])),
                        "status": STATUS_CODES.get(int(status.get("code", 0)), str(status.get("code"))),
                        "status_message": status.get("message", ""),
                        "start_ns": int(s.get("startTimeUnixNano", 0)),
                        "end_ns": int(s.get("endTimeUnixNano", 0)),
                    })  # fmt: skip
    return out


@dataclass
class Collector:
    proc: Proc
    port: int
    path: Path  # the file exporter's output

    @property
    def endpoint(self) -> str:
        """For OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/gRPC, plaintext on loopback)."""
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[dict[str, Any]]:
        """The spans written so far (parse_spans)."""
        try:
            return parse_spans(self.path.read_text())
        except FileNotFoundError:
            return []

    def wait_for_spans(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """The spans once `done(spans)` holds (exporters batch, the collector flushes every 100 ms);
        fails with what arrived if it does not within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({f"{s['service']}: {s['name']}" for s in spans})
                raise AssertionError(f"the collector did not get the spans expected within {timeout:.0f} s; "
                                     f"it has {len(spans)}: {names}")  # fmt: skip
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: the collector writes what it holds, then exits."""
        self.proc.stop(timeout=10)


def start_otelcol(workdir: Path, timeout: float = 30.0) -> Collector:
    """Build (once per recipe) and start the collector; ready when its gRPC port accepts."""
    workdir.mkdir(parents=True, exist_ok=True)
    binary = otelcol_binary()
    port = free_port()
    path = workdir / "spans.jsonl"
    config = workdir / f"otelcol-{port}.yaml"
    config.write_text(CONFIG.format(port=port, path=json.dumps(str(path))))
    proc = spawn("otelcol", [str(binary), "--config", f"file:{config}"], workdir / f"otelcol-{port}.log")
    wait_until(proc, lambda: tcp_open("127.0.0.1", port), timeout, interval=0.05)
    return Collector(proc, port, path)
