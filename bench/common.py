"""Shared pieces of the benchmarks: timed closed-loop load, percentiles, the printed table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    rss_mb: float = 0.0
    errors: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank, 0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def closed_loop(
    one: Callable[[], Awaitable[float | None]], concurrency: int, duration_s: float, warmup_s: float = 1.0
) -> tuple[int, float, list[float], int]:
    """`concurrency` clients each issue requests back to back for `duration_s` after a warm-up.
    `one` returns its own latency in ms (e.g. time to first chunk) or None to use the call's time."""
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start_measure = loop.time() + warmup_s
    stop_at = start_measure + duration_s
    count = 0

    async def client() -> None:
        nonlocal count, errors
        while loop.time() < stop_at:
            t0 = time.perf_counter()
            try:
                own = await one()
            except Exception:
                errors += 1
                continue
            took = own if own is not None else (time.perf_counter() - t0) * 1000
            if loop.time() >= start_measure:
                latencies.append(took)
                count += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return count, duration_s, latencies, errors


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total / 2**20


def memory_mb(pid: int, tree: bool = False) -> tuple[float, float]:
    """(RSS, PSS) in MB of a process, with its descendants when `tree` (PostgreSQL's backends); PSS
    from /proc/<pid>/smaps_rollup (0 where it cannot be read); (0, 0) for a process that is gone."""
    rss = pss = 0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)] if tree else [root]:
            with contextlib.suppress(psutil.Error):
                full = p.memory_full_info()
                rss += full.rss
                pss += getattr(full, "pss", 0)
    return rss / 2**20, pss / 2**20


@dataclass
class Measured:
    """A scenario measured by an external load generator that reports percentiles itself (ghz)."""

    name: str
    rps: float
    p50: float
    p99: float
    rss_mb: float = 0.0
    errors: int = 0

    def pct(self, p: float) -> float:
        assert p == 99
        return self.p99


def table(title: str, rows: Sequence[Result | Measured], ratios: dict[str, str]) -> str:
    head = f"{'scenario':44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>8} {'errors':>6}"
    lines = [f"== {title}", head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.name:44} {r.rps:9.1f} {r.p50:8.2f} {r.pct(99):8.2f} {r.rss_mb:8.0f} {r.errors:6d}")
    for k, v in ratios.items():
        lines.append(f"{k}: {v}")
    return "\n".join(lines)


def parser_for(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def workdir() -> Path:
    """A fresh folder for one benchmark's services (readable by PostgreSQL's unprivileged user)."""
    d = Path(tempfile.mkdtemp(prefix="uplion-bench-"))
    d.chmod(0o755)
    return d


def run_timed(main: Callable[[float, Path], Coroutine[Any, Any, None]], doc: str | None) -> None:
    """The entry point of the benchmarks that take only --duration."""
    parser = parser_for(doc)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per scenario")
    asyncio.run(main(parser.parse_args().duration, workdir()))
