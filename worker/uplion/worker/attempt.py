"""One delivery of a task to this worker, and the numbered events it sends to the reply topic."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from uplion.v1 import common_pb2, task_pb2


class Producer(Protocol):
    async def send(self, content: bytes) -> object: ...


# The reply producer for a topic. Events are sent through it in the order they are emitted.
ProducerFor = Callable[[str], Awaitable[Producer]]


@dataclass
class Attempt:
    task: task_pb2.Task
    attempt_id: str
    worker_id: str
    producer_for: ProducerFor
    seq: int = 0
    completion_tokens: int = 0
    chunks_sent: int = 0
    usage: common_pb2.Usage = field(default_factory=common_pb2.Usage)
    _in_flight: list[asyncio.Future[object]] = field(default_factory=list)

    async def emit(self, event: task_pb2.TaskEvent) -> None:
        """Send an event. Non-final events are pipelined (the producer keeps their order); a final
        event (result or error) first waits until every earlier one is on the topic, so the caller
        may acknowledge the task once this returns."""
        event.task_id = self.task.task_id
        event.attempt_id = self.attempt_id
        event.seq = self.seq
        event.worker_id = self.worker_id
        event.completion_tokens = self.completion_tokens
        payload = event.WhichOneof("payload")
        self.seq += 1
        if payload in ("chat_chunk", "completion_chunk"):
            self.chunks_sent += 1
        data = event.SerializeToString()
        # The producer is obtained here, in emit order, before any send is scheduled: a send task
        # starts by handing its message to the producer, and tasks start in creation order.
        producer = await self.producer_for(self.task.reply_topic)
        if payload in ("result", "error"):
            await self.flush()
            await producer.send(data)
        else:
            self._in_flight.append(asyncio.ensure_future(producer.send(data)))
            if len(self._in_flight) > 64:
                await self.flush()

    async def flush(self) -> None:
        pending, self._in_flight = self._in_flight, []
        if pending:
            await asyncio.gather(*pending)

    async def error(self, kind: task_pb2.TaskErrorKind.ValueType, message: str, *, retryable: bool) -> None:
        err = task_pb2.TaskError(kind=kind, message=message, retryable=retryable, usage=self.usage)
        await self.emit(task_pb2.TaskEvent(error=err))
