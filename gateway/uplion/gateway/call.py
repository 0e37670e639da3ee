"""One client request from task to final answer: deadline, attempts, cancel, and its usage event."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from opentelemetry.trace import Span
from prometheus_client import Counter, Histogram

from uplion.core import tracing, usage_proof
from uplion.core.pulsar import SEND_ERRORS
from uplion.core.timestamps import timestamp
from uplion.v1 import common_pb2, task_pb2, usage_pb2

from .cursor import ReplyCursor, Verdict
from .dispatcher import Dispatcher
from .errors import ApiError, crashed_workers, deadline_exceeded, from_task_error, queue_unavailable
from .metadata import RequestMeta
from .usage import billable

log = logging.getLogger("uplion.gateway")
REQUESTS = Counter("uplion_gateway_requests_total", "Requests by model, kind and outcome", ["model", "kind", "outcome"])
LATENCY = Histogram("uplion_gateway_request_seconds", "Request duration", ["model", "kind"])

_OUTCOME_NAMES = {v: k.removeprefix("REQUEST_OUTCOME_").lower() for k, v in usage_pb2.RequestOutcome.items()}
KIND_NAMES = {v: k.removeprefix("REQUEST_KIND_").lower() for k, v in usage_pb2.RequestKind.items()}


@dataclass
class Call:
    dispatcher: Dispatcher
    task: task_pb2.Task
    kind: usage_pb2.RequestKind.ValueType
    gateway_id: str
    timeout_s: float
    cursor: ReplyCursor = field(default_factory=ReplyCursor)
    outcome: usage_pb2.RequestOutcome.ValueType = usage_pb2.REQUEST_OUTCOME_CLIENT_CANCELLED
    final_usage: common_pb2.Usage | None = None
    started_at: float = field(default_factory=time.time)
    edge_request_id: str = ""
    poisoned: bool = False  # the task crashed too many workers: set aside (dead-letter topic)
    span: Span | None = None  # the request's span in the gateway (tracing on), ended with its usage event

    def __post_init__(self) -> None:
        self.cursor.max_crashes = self.dispatcher.max_worker_crashes

    @property
    def task_deadline(self) -> float:
        return self.started_at + self.timeout_s

    @classmethod
    def new_task_id(cls) -> str:
        return uuid.uuid4().hex

    async def events(self) -> AsyncIterator[task_pb2.TaskEvent]:
        """Yields chunk events to forward, then the result event; raises ApiError on failure.

        Whatever happens (including the client going away mid-iteration), exactly one usage
        event is published when the iteration ends.
        """
        queue = self.dispatcher.expect(self.task.task_id)
        # The deadline bounds each wait, never a yield: a timeout spanning a yield would fire in the
        # caller's code instead of here.
        until = asyncio.get_running_loop().time() + self.timeout_s
        try:
            self.task.deadline.CopyFrom(timestamp(self.task_deadline))
            self.task.created_at.CopyFrom(timestamp(self.started_at))
            self.task.kind = self.kind
            if self.dispatcher.usage_proof_key:
                claim = usage_proof.claim(self.task.task_id, self.task.model, self.task.caller, self.kind,
                                          self.task.created_at)  # fmt: skip
                self.task.usage_proof = usage_proof.sign(self.dispatcher.usage_proof_key, claim)
            await self._publish(until)
            while True:
                async with asyncio.timeout_at(until):
                    event = await queue.get()
                verdict = self.cursor.accept(event)
                if verdict is Verdict.DELIVER:
                    yield event
                elif verdict is Verdict.RESULT:
                    self.outcome = usage_pb2.REQUEST_OUTCOME_COMPLETED
                    self.final_usage = event.result.usage
                    yield event
                    return
                elif verdict is Verdict.ERROR:
                    self.outcome = usage_pb2.REQUEST_OUTCOME_FAILED
                    raise from_task_error(event.error)
                elif verdict is Verdict.POISON:
                    self.outcome = usage_pb2.REQUEST_OUTCOME_FAILED
                    self.poisoned = True
                    crashes = len(self.cursor.crashed)
                    extra = {"task_id": self.task.task_id, "model": self.task.model, "crashes": crashes}
                    log.error("task set aside: it crashed the workers that took it", extra=extra)
                    raise crashed_workers(crashes)
        except TimeoutError:
            self.outcome = usage_pb2.REQUEST_OUTCOME_DEADLINE_EXCEEDED
            raise deadline_exceeded() from None
        except ApiError:
            raise
        except BaseException:
            # client cancelled (CancelledError / GeneratorExit) or a gateway fault
            if self.outcome not in (usage_pb2.REQUEST_OUTCOME_COMPLETED, usage_pb2.REQUEST_OUTCOME_FAILED):
                self.outcome = usage_pb2.REQUEST_OUTCOME_CLIENT_CANCELLED
            raise
        finally:
            self.dispatcher.forget(self.task.task_id)
            self.dispatcher.in_background(self._finish())

    async def _publish(self, until: float) -> None:
        """Put the task on the model's queue within the publish timeout (or the request's deadline,
        if sooner); a broker that does not take it is a 503 the client may retry, never a hang."""
        loop = asyncio.get_running_loop()
        bound = min(until, loop.time() + self.dispatcher.publish_timeout_s)
        try:
            async with asyncio.timeout_at(bound):
                with tracing.span("publish task", tracing.PRODUCER, self.span) as sent:
                    await self.dispatcher.publish_task(self.task, tracing.carrier(sent))
        except SEND_ERRORS as e:
            if loop.time() >= until:
                raise TimeoutError from None
            log.warning("task not queued", extra={"model": self.task.model, "error": type(e).__name__})
            self.outcome = usage_pb2.REQUEST_OUTCOME_REJECTED  # no worker saw it: nothing to bill
            raise queue_unavailable(retry_after_s=max(1, round(self.dispatcher.publish_timeout_s))) from None

    async def _finish(self) -> None:
        if self.poisoned:
            reason = f"the request crashed {len(self.cursor.crashed)} workers"
            mark = self.dispatcher.mark_poison(self.task.model, self.task.task_id, reason, self.task_deadline)
            self.dispatcher.in_background(mark)
        if self.outcome in (usage_pb2.REQUEST_OUTCOME_CLIENT_CANCELLED, usage_pb2.REQUEST_OUTCOME_DEADLINE_EXCEEDED):
            reason = "client cancelled" if self.outcome == usage_pb2.REQUEST_OUTCOME_CLIENT_CANCELLED else "deadline"
            await self.dispatcher.publish_cancel(self.task.model, self.task.task_id, reason)
        prompt, completion = billable(
            self.outcome,
            final_usage=self.final_usage,
            prompt_tokens_seen=self.cursor.prompt_tokens,
            delivered_chunks=self.cursor.delivered,
            delivered_completion_tokens=self.cursor.delivered_completion_tokens,
        )
        event = usage_pb2.UsageEvent(
            event_id=self.task.task_id,
            model=self.task.model,
            caller=self.task.caller,
            kind=self.kind,
            outcome=self.outcome,
            streamed=self.task.stream,
            prompt_tokens=prompt,
            completion_tokens=completion,
            started_at=timestamp(self.started_at),
            finished_at=timestamp(),
            attempts=len(self.cursor.attempts),
            gateway_id=self.gateway_id,
            edge_request_id=self.edge_request_id,
        )
        kind_name = KIND_NAMES[self.kind]
        outcome = _OUTCOME_NAMES[self.outcome]
        REQUESTS.labels(self.task.model, kind_name, outcome).inc()  # counted even if
        LATENCY.labels(self.task.model, kind_name).observe(time.time() - self.started_at)  # the publish fails
        try:
            await self.dispatcher.publish_usage(event, tracing.carrier(self.span))
        finally:
            if self.span is not None:  # tracing on: the request's span ends with what it came to
                if self.outcome != usage_pb2.REQUEST_OUTCOME_COMPLETED:
                    tracing.fail(self.span, outcome)
                tracing.end(self.span, **{"uplion.outcome": outcome, "uplion.prompt_tokens": prompt,
                                          "uplion.completion_tokens": completion,
                                          "uplion.attempts": len(self.cursor.attempts)})  # fmt: skip


def rejected(
    meta: RequestMeta, model: str, kind: usage_pb2.RequestKind.ValueType, stream: bool, gateway_id: str
) -> usage_pb2.UsageEvent:
    """The usage event of a request refused before any worker saw it: no tokens, no attempts."""
    now = timestamp()
    return usage_pb2.UsageEvent(
        event_id=Call.new_task_id(), model=model, caller=meta.caller, kind=kind,
        outcome=usage_pb2.REQUEST_OUTCOME_REJECTED, streamed=stream, started_at=now, finished_at=now,
        gateway_id=gateway_id, edge_request_id=meta.edge_request_id,
    )  # fmt: skip
