"""Unix seconds to and from the contract's google.protobuf.Timestamp (deadlines, starts, finishes)."""

from __future__ import annotations

import time

from google.protobuf import timestamp_pb2


def timestamp(seconds: float | None = None) -> timestamp_pb2.Timestamp:
    """`seconds` (default: now) as a Timestamp."""
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() if seconds is None else seconds) * 1e9))
    return ts


def seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9
