"""The gateway's Pulsar side: publish tasks, read this instance's reply topic, publish cancels and usage.

Replies come back on one topic per gateway instance, read with a non-durable Reader (no
subscription to leak when a gateway dies, no acks on the hot path). Each in-flight task has a queue
that the reader loop feeds; events for tasks no longer waited on are dropped, except those of a task
set aside as poison (it crashed too many workers), which is followed until a worker says it parked
it on the dead-letter topic or its deadline passes: each further crash report announces the poison
mark again, for a worker process that started too late to read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import pulsar
import pulsar.asyncio as pa
from google.protobuf.message import DecodeError

from uplion.core.pulsar import ERRORS as PULSAR_ERRORS
from uplion.core.pulsar import Producers
from uplion.core.subscriptions import BILLING_SUBSCRIPTION, RECOVERY_SUBSCRIPTION, ensure_subscription
from uplion.core.topics import Topics
from uplion.v1 import task_pb2, usage_pb2

log = logging.getLogger("uplion.gateway")


@dataclass
class SetAside:
    """A task marked poison, followed until parked or past its deadline."""

    model: str
    reason: str
    deadline: float  # unix seconds


class Dispatcher:
    def __init__(
        self,
        client: pa.Client,
        topics: Topics,
        gateway_id: str,
        publish_timeout_s: float = 5.0,
        max_worker_crashes: int = 3,
        usage_proof_key: bytes = b"",
    ) -> None:
        self.client = client
        self.usage_proof_key = usage_proof_key  # tasks carry a proof of their caller (usage recovery on)
        self.publish_timeout_s = publish_timeout_s
        self.max_worker_crashes = max_worker_crashes
        # no batching: a batch would be dispatched to one worker as a unit; a send the broker has not
        # acknowledged within the publish timeout fails (and is dropped by the client, never sent late)
        self._task_producer_options = {
            "batching_enabled": False, "send_timeout_millis": max(1, int(publish_timeout_s * 1000)),
        }  # fmt: skip
        self.topics = topics
        self.reply_topic = topics.replies(gateway_id)
        self._waiting: dict[str, asyncio.Queue[task_pb2.TaskEvent]] = {}
        self.set_aside: dict[str, SetAside] = {}
        self._producers = Producers(client)
        self._background: set[asyncio.Task[None]] = set()
        self._reader_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # usage events are kept for billing even while billing is down or not yet deployed
        await ensure_subscription(self.client, self.topics.usage(), BILLING_SUBSCRIPTION, pulsar.ConsumerType.Failover)
        if self.usage_proof_key:  # workers' recovery records, likewise (Shared: they are delivered late)
            await ensure_subscription(
                self.client, self.topics.usage_recovery(), RECOVERY_SUBSCRIPTION, pulsar.ConsumerType.Shared
            )
        self.reader = await self.client.create_reader(
            self.reply_topic, pulsar.MessageId.latest, receiver_queue_size=5000
        )
        self.usage_producer = await self.client.create_producer(
            self.topics.usage(), batching_enabled=True, batching_max_publish_delay_ms=5, block_if_queue_full=True
        )
        self._reader_task = asyncio.create_task(self._read_replies())

    async def prepare(self, models: tuple[str, ...]) -> None:
        """Create each known model's subscription and task producer now, not on its first request
        (where the setup would eat into that request's deadline)."""
        for model in models:
            await self._ensure_subscription(model)
            await self._producer(self.topics.tasks(model))

    async def _producer(self, topic: str) -> pa.Producer:
        return await self._producers.get(topic, **self._task_producer_options)

    def expect(self, task_id: str) -> asyncio.Queue[task_pb2.TaskEvent]:
        queue: asyncio.Queue[task_pb2.TaskEvent] = asyncio.Queue()
        self._waiting[task_id] = queue
        return queue

    def forget(self, task_id: str) -> None:
        self._waiting.pop(task_id, None)

    async def publish_task(self, task: task_pb2.Task, properties: dict[str, str] | None = None) -> None:
        """`properties`: the message's (trace context, when tracing is on)."""
        topic = self.topics.tasks(task.model)
        if not self._producers.has(topic, **self._task_producer_options):
            await self._ensure_subscription(task.model)  # once per model: its first task, or prepare()
        producer = await self._producer(topic)
        await producer.send(task.SerializeToString(), properties=properties or None)

    async def _ensure_subscription(self, model: str) -> None:
        """Create the model's durable Shared subscription if no worker ever did, so tasks published
        while a model has zero workers are retained until one starts (scale from zero)."""
        await ensure_subscription(
            self.client, self.topics.tasks(model), self.topics.subscription(model), pulsar.ConsumerType.Shared
        )

    async def publish_cancel(self, model: str, task_id: str, reason: str, *, poison: bool = False) -> None:
        producer = await self._producer(self.topics.cancels(model))
        await producer.send(task_pb2.CancelTask(task_id=task_id, reason=reason, poison=poison).SerializeToString())

    async def mark_poison(self, model: str, task_id: str, reason: str, deadline: float) -> None:
        """Tell the model's workers to park the task on the dead-letter topic instead of running it,
        and follow it (`route`) until one says it did or its deadline passes."""
        now = time.time()
        for gone in [k for k, v in self.set_aside.items() if v.deadline <= now]:
            del self.set_aside[gone]
        self.set_aside[task_id] = SetAside(model, reason, deadline)
        await self.publish_cancel(model, task_id, reason, poison=True)

    async def publish_usage(self, event: usage_pb2.UsageEvent, properties: dict[str, str] | None = None) -> None:
        await self.usage_producer.send(
            event.SerializeToString(), properties=properties or None, partition_key=event.caller.user_id or None
        )

    def in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run bookkeeping (usage, cancels) to completion even if the request's task is cancelled;
        close() waits for all of it."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background publish failed", exc_info=task.exception())

    async def _read_replies(self) -> None:
        while True:
            try:
                msg = await self.reader.read_next()
            except PULSAR_ERRORS:
                log.exception("reply reader failed")
                await asyncio.sleep(0.5)
                continue
            try:
                event = task_pb2.TaskEvent.FromString(msg.data())
            except DecodeError:
                log.warning("undecodable reply dropped")
                continue
            self.route(event)

    def route(self, event: task_pb2.TaskEvent) -> None:
        """An event to the request waiting for it; or, for a task set aside as poison, what follows."""
        queue = self._waiting.get(event.task_id)
        if queue is not None:
            queue.put_nowait(event)
            return
        aside = self.set_aside.get(event.task_id)
        if aside is None or event.WhichOneof("payload") != "error":
            return
        extra = {"task_id": event.task_id, "model": aside.model, "worker_id": event.worker_id}
        if aside.deadline <= time.time():
            del self.set_aside[event.task_id]
        elif event.error.kind == task_pb2.TASK_ERROR_KIND_DEAD_LETTERED:
            del self.set_aside[event.task_id]
            log.warning("poison task parked on the dead-letter topic", extra=extra)
        elif event.error.kind == task_pb2.TASK_ERROR_KIND_WORKER_CRASHED:
            # a worker that did not know the mark (it started after it, beyond its look-back) took it
            log.warning("poison task crashed another worker; its mark is announced again", extra=extra)
            self.in_background(self.publish_cancel(aside.model, event.task_id, aside.reason, poison=True))

    @property
    def inflight(self) -> int:
        return len(self._waiting)

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._reader_task:
            # the read it waits on must be over before the reader and client close: a C++ callback
            # into a Python future that is gone can end the process with std::terminate at exit
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        with contextlib.suppress(*PULSAR_ERRORS):
            await self.usage_producer.flush()
        await self._producers.close()
        with contextlib.suppress(*PULSAR_ERRORS):
            await self.usage_producer.close()
        with contextlib.suppress(*PULSAR_ERRORS):
            await self.reader.close()
