"""Driving ghz (a Go gRPC load generator, built from the module proxy) against a local server: far
less CPU per request than a Python client, so the server, not the client, is what is measured."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from uplion.devstack.gotools import ghz

from .common import Measured


def protoset(root: FileDescriptor) -> Path:
    """A descriptor set of `root` and everything it imports, for ghz's --protoset."""
    files: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def add(fd: FileDescriptor) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files.append(proto)

    add(root)
    out = Path(tempfile.mkstemp(suffix=".protoset")[1])
    out.write_bytes(descriptor_pb2.FileDescriptorSet(file=files).SerializeToString())
    return out


def run(
    target: str, call: str, protoset_path: Path, data: dict[str, Any] | list[dict[str, Any]], concurrency: int,
    duration_s: float,
    rps: int = 0, connections: int = 2,
) -> dict[str, Any]:  # fmt: skip
    # a list of messages: ghz sends them round robin; from a file, since one argument may hold at most
    # 128 KiB on Linux (the production set of bench/ratelimit.py, 1,000 bodies, is about 1 MB)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as data_file:
        json.dump(data, data_file)
        data_file.flush()
        argv = [
            str(ghz()), "--insecure", "--protoset", str(protoset_path), "--call", call, "-D", data_file.name,
            "-c", str(concurrency), "--connections", str(connections), "-z", f"{duration_s}s", "--format", "json",
            "--rps", str(rps), target,
        ]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration_s + 60)
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def measured(name: str, report: dict[str, Any], rss_mb: float) -> Measured:
    pct = {int(p["percentage"]): p["latency"] / 1e6 for p in report.get("latencyDistribution") or []}
    ok = report.get("statusCodeDistribution", {}).get("OK", 0)
    # requests still in flight when ghz stops come back "transport is closing" or "the client connection
    # is closing": not the server's errors
    errors = sum(n for msg, n in (report.get("errorDistribution") or {}).items() if not _stopping(msg))
    return Measured(name, ok / (report["total"] / 1e9), pct.get(50, 0.0), pct.get(99, 0.0), rss_mb, errors)


def _stopping(message: str) -> bool:
    return "transport is closing" in message or "client connection is closing" in message


def mean(name: str, runs: list[Measured]) -> Measured:
    """Several runs of one scenario as one row: mean throughput and percentiles, worst errors/RSS."""
    n = len(runs)
    return Measured(name, sum(r.rps for r in runs) / n, sum(r.p50 for r in runs) / n, sum(r.p99 for r in runs) / n,
                    max(r.rss_mb for r in runs), sum(r.errors for r in runs))  # fmt: skip
