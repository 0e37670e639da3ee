"""Structured (one JSON object per line) logging for every service."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from . import tracing

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# Extra fields are data an operator reads (ids, counts, reasons): plain JSON values only. Objects
# libraries attach to their records (kopf's whole OperatorSettings, ~3 KB, on every operator line)
# are left out rather than printed with their repr.
_PLAIN = (str, int, float, bool, type(None), list, tuple, dict)
# The ids of the request the running asyncio task works on (x-request-id, task id): on every line it logs.
_REQUEST: ContextVar[dict[str, str] | None] = ContextVar("uplion_request", default=None)


def _with(ids: dict[str, str]) -> dict[str, str]:
    return {**(_REQUEST.get() or {}), **{k: v for k, v in ids.items() if v}}


def bind_request(**ids: str) -> None:
    """Put these request ids on every line the current asyncio task (and the tasks it starts) logs
    from now on; for a task that serves one request, such as a gRPC call's (empty values are left out)."""
    _REQUEST.set(_with(ids))


@contextlib.contextmanager
def about_request(**ids: str) -> Iterator[None]:
    """`bind_request` for one block, in a task that serves many requests in turn (a worker's slot)."""
    token = _REQUEST.set(_with(ids))
    try:
        yield
    finally:
        _REQUEST.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            **(_REQUEST.get() or {}),
            **tracing.log_ids(),  # the request's trace, when the line is logged inside one of its spans
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_") and isinstance(value, _PLAIN):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
