"""Running an asyncio service until SIGTERM/SIGINT, then draining it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import tracing
from .config import ConfigError
from .logs import setup_logging

T = TypeVar("T")


def install_stop_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT (call from inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_service(name: str, load_config: Callable[[], T], serve: Callable[[T], Coroutine[Any, Any, None]]) -> int:
    """The `main()` of every service: structured logs, config from the environment (a clear
    message and exit 2 when it is wrong), then `serve` until SIGTERM, then a clean exit (`exit_now`).
    An exception out of `serve` is one log record and exit 1."""
    setup_logging(name, os.environ.get("UPLION_LOG_LEVEL", "INFO"))
    tracing.setup_tracing(name)
    try:
        cfg = load_config()
    except ConfigError as e:
        print(f"uplion {name}: configuration error: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(cfg))
    except Exception:  # a failed start (e.g. the broker unreachable): one log record, then the same clean exit
        logging.getLogger(f"uplion.{name}").exception("service failed")
        exit_now(1)
    exit_now(0)
    return 0  # not reached


def exit_now(code: int) -> None:
    """End the process once `serve` has drained and closed everything: logs and standard streams
    flushed, then `os._exit`, skipping the interpreter's finalization. The Pulsar C++ client's
    threads outlive `Client.close()` and can crash that finalization (clean-clone runs saw a worker
    end with SIGSEGV after a complete drain, and services end with "terminate called without an
    active exception"), which would turn a clean shutdown into a failed one. Nothing is left to
    run by then: every task, reply and usage event was finished or handed back by `serve`."""
    tracing.shutdown()  # the spans still buffered
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
