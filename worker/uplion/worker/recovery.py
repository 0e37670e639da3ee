"""Recovery records of completed tasks, sent a batch at a time (billing/README.md, "A gateway that
dies").

A worker records each task it completes whose gateway signed its caller (`Task.usage_proof`), so
that billing can bill the work if the gateway died before it published the request's usage event.
One Pulsar message per task cost 6-20% of the remote path's throughput (bench/peers.py), so the
records of a worker process go together: one `UsageRecords` message on `usage-recovery` every
`UPLION_USAGE_RECOVERY_FLUSH_MS` (or at `MAX_RECORDS`), delivered by Pulsar
`UPLION_USAGE_RECOVERY_GRACE_S` after the latest deadline among its tasks, when every gateway
involved has answered or is gone. A batch is also sent when the worker drains. A record is lost
only if its worker dies before the batch is sent and its gateway dies too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

from uplion.core.pulsar import ERRORS as PULSAR_ERRORS
from uplion.v1 import usage_pb2

log = logging.getLogger("uplion.worker")
RECORDS = Counter("uplion_worker_recovery_records_total", "Recovery records of completed tasks", ["result"])
MAX_RECORDS = 1000  # a batch this full is sent at once (~200 bytes a record)


class RecoveryRecords:
    def __init__(
        self, producer: Callable[[], Awaitable[Any]], grace_s: float, flush_s: float, max_records: int = MAX_RECORDS
    ) -> None:
        self._producer = producer
        self.grace_s = grace_s
        self.flush_s = flush_s
        self.max_records = max_records
        self._batch = usage_pb2.UsageRecords()
        self._latest_deadline = 0.0
        self._full = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._closing = False

    def add(self, record: usage_pb2.UsageEvent, deadline: float) -> None:
        """Keep a completed task's record for the next batch (no I/O: the task's slot goes on)."""
        self._batch.events.append(record)
        self._latest_deadline = max(self._latest_deadline, deadline)
        if len(self._batch.events) >= self.max_records:
            self._full.set()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_s)
            await self.flush()

    async def flush(self) -> None:
        """Send the records kept so far as one message (nothing when there are none)."""
        if not self._batch.events:
            return
        batch, deliver_at = self._batch, self._latest_deadline + self.grace_s
        self._batch, self._latest_deadline = usage_pb2.UsageRecords(), 0.0
        self._full.clear()
        try:
            producer = await self._producer()
            await producer.send(batch.SerializeToString(), deliver_at=int(deliver_at * 1000))
        except PULSAR_ERRORS as e:
            log.warning("recovery records not sent", extra={"records": len(batch.events), "error": type(e).__name__})
            RECORDS.labels("lost").inc(len(batch.events))
            return
        RECORDS.labels("sent").inc(len(batch.events))

    async def close(self) -> None:
        """Send what is left and stop (the worker's drain; a send in progress is let finish)."""
        self._closing = True
        self._full.set()
        if self._loop is not None:
            await self._loop
        await self.flush()
