"""The self-serving task loop.

The worker owns `max_concurrency` slots. Each slot asks Pulsar for one task only when it is free
(Shared subscription, receiver queue 0: no prefetch, so an idle worker never watches another hoard
a backlog). A task is acknowledged only after its final event is on the reply topic; a retryable
failure is republished with a delay (exponential backoff, never past the deadline) and the original
acknowledged, until `max_attempts`, then parked on the dead-letter topic with a final error to the
client. A reply that cannot be published is negatively acknowledged (redelivered after the nack delay).

A crash is counted by uplion itself (the broker does not count a redelivery after its consumer died):
each running attempt has a record in the crash journal (journal.py); what a dead process leaves is
reported to the gateways (TASK_ERROR_KIND_WORKER_CRASHED) by its supervisor or by the process that
starts next, and a task a gateway then marks poison (CancelTask.poison) is parked on the dead-letter
topic instead of run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pulsar
import pulsar.asyncio as pa
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Gauge, Histogram

from uplion.core import logs, tracing
from uplion.core.pulsar import ERRORS as PULSAR_ERRORS
from uplion.core.pulsar import SEND_ERRORS, Producers
from uplion.core.timestamps import seconds
from uplion.v1 import task_pb2
from uplion.v1.task_pb2 import CancelTask

from .attempt import Attempt, ProducerFor
from .backends.base import Backend, BackendError
from .config import WorkerConfig
from .decisions import FailureAction, on_failure, recovery_record, retry_delay_s
from .execute import execute
from .journal import Journal, JournalRecord, report_crashes
from .k8s_events import EventReporter
from .recovery import RecoveryRecords

log = logging.getLogger("uplion.worker")

TASKS = Counter("uplion_worker_tasks_total", "Task attempts by outcome", ["model", "outcome"])
INFLIGHT = Gauge("uplion_worker_inflight", "Tasks being processed", ["model"])
DURATION = Histogram("uplion_worker_task_seconds", "Attempt duration", ["model"])

_RECENT_CANCELS = 10_000
# At start, the cancels of the recent past are read before any task is taken, for at most this long
# (the rest is read by the cancel loop as usual).
CATCH_UP_BOUND_S = 10.0
# The Pulsar client groups acknowledgements and sends them every 100 ms (its default; the Python
# client cannot change it), so an ack is lost if the process dies before that. After parking a
# poison task a slot waits this long before taking another task, which may be the next poison task:
# seen in tests/chaos/test_poison_task.py as the same task parked again by another worker.
ACK_FLUSH_S = 0.2
# Which attempt a (re)published task is; the original publish has none (attempt 1).
ATTEMPT_PROPERTY = "uplion-attempt"


def _attempt_number(msg: pulsar.Message) -> int:
    try:
        return max(1, int(msg.properties().get(ATTEMPT_PROPERTY, "1")))
    except ValueError:
        return 1


class Runner:
    def __init__(
        self, cfg: WorkerConfig, backend: Backend, client: pa.Client, events: EventReporter | None = None
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.client = client
        self.events = events
        self.topics = cfg.pulsar.topics
        self._producers = Producers(client)
        self._executing: dict[str, asyncio.Task[None]] = {}
        self._cancelled: OrderedDict[str, CancelTask] = OrderedDict()
        self.journal = Journal(Path(cfg.journal_dir))
        self._slots: list[asyncio.Task[None]] = []
        self._idle: set[asyncio.Task[None]] = set()
        self._cancel_loop: asyncio.Task[None] | None = None
        self._stopping = False
        self.recovery = RecoveryRecords(
            lambda: self._producers.get(self.topics.usage_recovery(), batching_enabled=False),
            cfg.usage_recovery_grace_s, cfg.usage_recovery_flush_s,
        )  # fmt: skip

    async def start(self) -> None:
        model = self.cfg.model
        # Cancels first, from the recent past (a mark published while this process was down counts
        # too), then the crash reports (the gateway's answer to them arrives on a reader already
        # reading), and only then the tasks.
        self.cancel_reader = await self.client.create_reader(self.topics.cancels(model), pulsar.MessageId.latest)
        await self._catch_up_cancels()
        self._cancel_loop = asyncio.create_task(self._read_cancels())
        self.recovery.start()
        await self._report_crashes()
        self.consumer = await self.client.subscribe(
            self.topics.tasks(model),
            self.topics.subscription(model),
            consumer_type=pulsar.ConsumerType.Shared,
            receiver_queue_size=0,
            negative_ack_redelivery_delay_ms=self.cfg.nack_delay_ms,
            consumer_name=self.cfg.worker_id,
            initial_position=pulsar.InitialPosition.Earliest,
        )
        self.dlq = await self.client.create_producer(self.topics.dead_letters(model), batching_enabled=False)
        self._slots = [asyncio.create_task(self._slot()) for _ in range(self.cfg.max_concurrency)]
        log.info("worker started", extra={"model": model, "slots": self.cfg.max_concurrency})

    @property
    def busy(self) -> int:
        return len(self._executing)

    async def _slot(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self._stopping:
            self._idle.add(me)
            try:
                msg = await self.consumer.receive()
            except PULSAR_ERRORS:
                if self._stopping:
                    return
                log.exception("receive failed")
                await asyncio.sleep(1)
                continue
            finally:
                self._idle.discard(me)
            try:
                await self._handle(msg)
            except asyncio.CancelledError:
                if self._stopping:
                    raise
                # a cancellation that did not come through the task's own cancel path: keep the
                # slot alive and let Pulsar redeliver the message
                me.uncancel()
                log.error("slot survived a stray cancellation; task redelivered")
                await self.consumer.negative_acknowledge(msg)

    async def _handle(self, msg: pulsar.Message) -> None:
        try:
            task = task_pb2.Task.FromString(msg.data())
        except DecodeError:
            await self._dead_letter(msg, "undecodable task")
            await self.consumer.acknowledge(msg)
            TASKS.labels(self.cfg.model, "poison").inc()
            return
        cancel = self._cancelled.get(task.task_id)
        if cancel is not None and cancel.poison:
            await self._park(msg, task, cancel)
            return
        now = time.time()
        deadline = seconds(task.deadline) if task.HasField("deadline") else now + 3600
        if deadline <= now or cancel is not None:
            # the gateway has already answered the client; nobody waits for this work
            await self.consumer.acknowledge(msg)
            TASKS.labels(self.cfg.model, "skipped").inc()
            return
        attempt = Attempt(task, uuid.uuid4().hex, self.cfg.worker_id, self._producer_for(batched=task.stream))
        INFLIGHT.labels(self.cfg.model).inc()
        started = time.monotonic()
        attributes = self._span_attributes(task, attempt, msg) if tracing.enabled() else None
        try:
            with (
                logs.about_request(request_id=task.edge_request_id, task_id=task.task_id),
                tracing.span("worker task", tracing.CONSUMER, tracing.message_context(msg), attributes),
            ):
                await self._run(msg, task, attempt, deadline)
        finally:
            self._executing.pop(task.task_id, None)
            INFLIGHT.labels(self.cfg.model).dec()
            DURATION.labels(self.cfg.model).observe(time.monotonic() - started)

    def _span_attributes(self, task: task_pb2.Task, attempt: Attempt, msg: pulsar.Message) -> dict[str, Any]:
        return {
            "uplion.model": task.model, "uplion.user_id": task.caller.user_id, "uplion.task_id": task.task_id,
            "uplion.request_id": task.edge_request_id, "uplion.worker_id": self.cfg.worker_id,
            "uplion.attempt_id": attempt.attempt_id, "uplion.redeliveries": msg.redelivery_count(),
            "uplion.backend": self.cfg.model_type, "uplion.stream": task.stream,
        }  # fmt: skip

    async def _run(self, msg: pulsar.Message, task: task_pb2.Task, attempt: Attempt, deadline: float) -> None:
        me = asyncio.current_task()
        assert me is not None
        redeliveries = msg.redelivery_count()
        # Redeliveries count as attempts. Pulsar counts nack redeliveries (a reply that could not be
        # sent); it does not count those after a consumer died (seen on 4.0.7): those are counted by
        # the crash journal's reports and the gateway, which marks a task poison after too many.
        attempt_number = _attempt_number(msg) + redeliveries
        if attempt_number > self.cfg.max_attempts:
            await self._dead_letter(msg, f"no answer after {attempt_number - 1} deliveries", task.task_id)
            text = f"gave up after {attempt_number - 1} attempts"
            with contextlib.suppress(*PULSAR_ERRORS):
                await attempt.error(task_pb2.TASK_ERROR_KIND_DEAD_LETTERED, text, retryable=False)
            await self.consumer.acknowledge(msg)
            TASKS.labels(self.cfg.model, "dead_letter").inc()
            return
        # Cancellable (by a client's cancel) only while executing: each outcome below first leaves
        # the set, with no await in between, so a late cancel cannot interrupt reporting and acking.
        self._executing[task.task_id] = me
        record = JournalRecord(task.task_id, task.reply_topic, attempt.attempt_id, self.cfg.worker_id, deadline)
        entry = self.journal.begin(record)  # removed however the attempt ends, unless the process dies
        try:
            await self._attempt(msg, task, attempt, deadline, attempt_number, redeliveries)
        finally:
            self.journal.end(entry)

    async def _attempt(
        self,
        msg: pulsar.Message,
        task: task_pb2.Task,
        attempt: Attempt,
        deadline: float,
        attempt_number: int,
        redeliveries: int,
    ) -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            started = task_pb2.TaskStarted(
                redelivery_count=redeliveries, prompt_tokens=self.backend.prompt_tokens(task)
            )
            async with asyncio.timeout(deadline - time.time()):
                if task.stream:  # a non-streamed task's result carries all the gateway needs
                    await attempt.emit(task_pb2.TaskEvent(started=started))
                await execute(task, attempt, self.backend, self.cfg.max_output_tokens)
        except asyncio.CancelledError:
            self._executing.pop(task.task_id, None)
            cancel = self._cancelled.get(task.task_id)
            if cancel is None:
                raise  # shutdown: leave it unacknowledged, Pulsar redelivers it to another worker
            me.uncancel()
            if cancel.poison:  # marked while this worker held it (a task that crashes others slowly)
                await self._park(msg, task, cancel, attempt)
                return
            await self._finish(msg, attempt, "cancelled", task_pb2.TASK_ERROR_KIND_CANCELLED, "cancelled by client")
            return
        except TimeoutError:
            self._executing.pop(task.task_id, None)
            await self._finish(msg, attempt, "expired", task_pb2.TASK_ERROR_KIND_DEADLINE_EXCEEDED, "deadline exceeded")
            return
        except BackendError as e:
            self._executing.pop(task.task_id, None)
            await self._failed(msg, attempt, e, attempt_number, deadline)
            return
        except PULSAR_ERRORS:
            self._executing.pop(task.task_id, None)
            log.exception("reply failed; task will be redelivered", extra={"task_id": task.task_id})
            await self.consumer.negative_acknowledge(msg)
            TASKS.labels(self.cfg.model, "reply_failed").inc()
            return
        except Exception as e:  # a bug or an unexpected backend failure: bounded retries, then DLQ
            self._executing.pop(task.task_id, None)
            log.exception("task failed unexpectedly", extra={"task_id": task.task_id})
            internal = BackendError(
                task_pb2.TASK_ERROR_KIND_INTERNAL, f"worker error: {type(e).__name__}", retryable=True
            )
            await self._failed(msg, attempt, internal, attempt_number, deadline)
            return
        self._executing.pop(task.task_id, None)
        if task.usage_proof:  # the gateway signed its caller: usage recovery is on (recovery.py)
            self.recovery.add(recovery_record(task, attempt.usage, time.time()), seconds(task.deadline))
        await self.consumer.acknowledge(msg)
        TASKS.labels(self.cfg.model, "ok").inc()
        if self.events is not None:
            await self.events.ok()

    async def _finish(
        self, msg: pulsar.Message, attempt: Attempt, outcome: str, kind: task_pb2.TaskErrorKind.ValueType, text: str
    ) -> None:
        tracing.fail_current(f"{outcome}: {text}")
        with contextlib.suppress(*PULSAR_ERRORS):
            await attempt.error(kind, text, retryable=False)
        await self.consumer.acknowledge(msg)
        TASKS.labels(self.cfg.model, outcome).inc()

    async def _failed(
        self, msg: pulsar.Message, attempt: Attempt, e: BackendError, attempt_number: int, deadline: float
    ) -> None:
        tracing.fail_current(f"{task_pb2.TaskErrorKind.Name(e.kind)}: {e.message}")
        if self.events is not None:
            await self.events.failed(e.kind, e.message)
        action = on_failure(
            retryable=e.retryable,
            chunks_sent=attempt.chunks_sent,
            attempt_number=attempt_number,
            max_attempts=self.cfg.max_attempts,
        )
        delay = None
        if action is FailureAction.RETRY:
            delay = retry_delay_s(
                attempt_number,
                base_s=self.cfg.retry_backoff_s,
                cap_s=self.cfg.retry_backoff_max_s,
                retry_after_s=e.retry_after,
                remaining_s=deadline - time.time(),
            )
            if delay is None:  # the deadline would pass first: report the error now
                action = FailureAction.FAIL
        extra = {"task_id": attempt.task.task_id, "kind": task_pb2.TaskErrorKind.Name(e.kind), "action": action.value}
        log.warning("attempt %d failed: %s", attempt_number, e.message, extra=extra)
        if action is FailureAction.RETRY and delay is not None:
            await attempt.error(e.kind, e.message, retryable=True)
            await self._retry_later(msg, attempt_number + 1, delay)
            await self.consumer.acknowledge(msg)
        elif action is FailureAction.DEAD_LETTER:
            await self._dead_letter(msg, e.message, attempt.task.task_id)
            text = f"gave up after {attempt_number} attempts: {e.message}"
            await attempt.error(task_pb2.TASK_ERROR_KIND_DEAD_LETTERED, text, retryable=False)
            await self.consumer.acknowledge(msg)
        else:
            await attempt.error(e.kind, e.message, retryable=False)
            await self.consumer.acknowledge(msg)
        TASKS.labels(self.cfg.model, action.value).inc()

    async def _retry_later(self, msg: pulsar.Message, next_attempt: int, delay_s: float) -> None:
        """Publish the task again, delivered after the backoff to any worker; the caller then acks
        the original. A crash between the two runs the task twice: the gateway keeps the first answer."""
        producer = await self._producers.get(self.topics.tasks(self.cfg.model), batching_enabled=False)
        properties = {**msg.properties(), ATTEMPT_PROPERTY: str(next_attempt)}  # the trace context too, if any
        await producer.send(msg.data(), properties=properties, deliver_after=timedelta(seconds=delay_s))

    async def _park(
        self, msg: pulsar.Message, task: task_pb2.Task, cancel: CancelTask, attempt: Attempt | None = None
    ) -> None:
        """A task the gateway marked poison (it crashed too many workers): onto the dead-letter topic,
        acknowledged, never run (again) here; the gateway hears it was parked and stops announcing
        the mark. `attempt`: the one that was running when the mark arrived (its reply ends it)."""
        try:
            await self._dead_letter(msg, f"poison: {cancel.reason}", task.task_id)
        except PULSAR_ERRORS:
            log.exception("poison task not parked; it will be redelivered", extra={"task_id": task.task_id})
            await self.consumer.negative_acknowledge(msg)
            return
        attempt = attempt or Attempt(task, uuid.uuid4().hex, self.cfg.worker_id, self._producer_for(batched=False))
        text = f"set aside on the dead-letter topic: {cancel.reason}"
        await self._finish(msg, attempt, "poison_parked", task_pb2.TASK_ERROR_KIND_DEAD_LETTERED, text)
        log.warning("poison task parked on the dead-letter topic",
                    extra={"task_id": task.task_id, "reason": cancel.reason})  # fmt: skip
        await asyncio.sleep(ACK_FLUSH_S)

    async def _report_crashes(self) -> None:
        """The attempts this process's predecessor died in (what its supervisor, if any, did not
        report): told to their gateways before this process takes a task."""
        sent = await report_crashes(self.journal, lambda topic: self._producer(topic, batched=False), keep_unsent=False)
        if sent:
            TASKS.labels(self.cfg.model, "crash_reported").inc(sent)

    async def _dead_letter(self, msg: pulsar.Message, reason: str, task_id: str = "") -> None:
        props = {"reason": reason[:500], "worker": self.cfg.worker_id, "redeliveries": str(msg.redelivery_count())}
        if task_id:  # the request's id (its usage event's id)
            props["task_id"] = task_id
        await self.dlq.send(msg.data(), properties=props)

    async def _producer(self, topic: str, batched: bool) -> pa.Producer:
        # Streams batch their chunks (1 ms window: many chunks, one broker entry); non-streamed
        # tasks send one result and must not wait for a batch to fill.
        return await self._producers.get(topic, batching_enabled=batched, batching_max_publish_delay_ms=1)

    def _producer_for(self, batched: bool) -> ProducerFor:
        """All events of one task go through one producer, which keeps them in order."""

        async def get(topic: str) -> pa.Producer:
            return await self._producer(topic, batched)

        return get

    def _note_cancel(self, msg: pulsar.Message) -> None:
        try:
            cancel = CancelTask.FromString(msg.data())
        except DecodeError:
            return
        known = self._cancelled.get(cancel.task_id)
        if known is not None and known.poison:
            return  # a later ordinary cancel (the deadline) must not unmark a poison task
        self._cancelled[cancel.task_id] = cancel
        self._cancelled.move_to_end(cancel.task_id)
        if len(self._cancelled) > _RECENT_CANCELS:
            self._cancelled.popitem(last=False)
        running = self._executing.get(cancel.task_id)
        if running is not None:
            running.cancel()

    async def _catch_up_cancels(self) -> None:
        """Read the cancels published in the last `cancel_lookback_s` before taking any task: a
        task cancelled, or marked poison, while this process was down (it crashed on it, say) is
        then not run again. Reads what the broker still holds: a topic without subscriptions keeps
        at least its current ledger (the gateway announces a poison mark again when the task
        crashes another worker, for a worker that could not read it here)."""
        if self.cfg.cancel_lookback_s <= 0:
            return
        read = 0
        try:
            await self.cancel_reader.seek(int((time.time() - self.cfg.cancel_lookback_s) * 1000))
            async with asyncio.timeout(CATCH_UP_BOUND_S):
                while await self.cancel_reader.has_message_available():
                    self._note_cancel(await self.cancel_reader.read_next())
                    read += 1
        except SEND_ERRORS as e:
            log.warning("recent cancels not all read before serving", extra={"read": read, "error": type(e).__name__})

    async def _read_cancels(self) -> None:
        while True:
            try:
                msg = await self.cancel_reader.read_next()
            except PULSAR_ERRORS:
                if self._stopping:
                    return
                await asyncio.sleep(1)
                continue
            self._note_cancel(msg)

    async def drain(self, grace_s: float) -> None:
        """Stop taking tasks, let running ones finish (up to `grace_s`), then close the consumer so
        Pulsar hands anything unfinished to another worker."""
        self._stopping = True
        for slot in list(self._idle):
            slot.cancel()
        busy = [t for t in self._slots if not t.done()]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=grace_s)
            for t in pending:
                t.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        if self._cancel_loop:
            self._cancel_loop.cancel()
            await asyncio.gather(self._cancel_loop, return_exceptions=True)
        await self.recovery.close()  # the records of the tasks this worker finished, before its producers close
        # everything this worker opened is closed before the client is: a reader or producer left
        # open has C++ threads that can still call back into Python while the process exits
        # (seen once as `terminate called without an active exception` at a worker's shutdown)
        for closable in (self.consumer, self.cancel_reader, self.dlq):
            with contextlib.suppress(*PULSAR_ERRORS):
                await closable.close()
        await self._producers.close()
        self.journal.close()
