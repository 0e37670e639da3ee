"""Running an asyncio service until SIGTERM/SIGINT, then draining it."""

from __future__ import annotations

import asyncio
import signal


def install_stop_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT (call from inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
