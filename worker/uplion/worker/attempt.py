"""One delivery of a task to this worker, and the numbered events it sends to the reply topic."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from uplion.v1 import common_pb2, task_pb2

Send = Callable[[str, bytes], Awaitable[None]]


@dataclass
class Attempt:
    task: task_pb2.Task
    attempt_id: str
    worker_id: str
    send: Send
    seq: int = 0
    completion_tokens: int = 0
    chunks_sent: int = 0
    usage: common_pb2.Usage = field(default_factory=common_pb2.Usage)

    async def emit(self, event: task_pb2.TaskEvent) -> None:
        event.task_id = self.task.task_id
        event.attempt_id = self.attempt_id
        event.seq = self.seq
        event.worker_id = self.worker_id
        event.completion_tokens = self.completion_tokens
        await self.send(self.task.reply_topic, event.SerializeToString())
        self.seq += 1
        if event.WhichOneof("payload") in ("chat_chunk", "completion_chunk"):
            self.chunks_sent += 1

    async def error(self, kind: task_pb2.TaskErrorKind.ValueType, message: str, *, retryable: bool) -> None:
        err = task_pb2.TaskError(kind=kind, message=message, retryable=retryable, usage=self.usage)
        await self.emit(task_pb2.TaskEvent(error=err))
