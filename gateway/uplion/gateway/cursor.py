"""Which worker events reach the client: a pure state machine over TaskEvents.

A task may be attempted more than once (a retryable failure is redelivered; a killed worker's task
goes to another worker). Every attempt numbers its events from 0 (`started`), so chunk k of any
attempt has seq k+1. The client receives chunk k exactly once, from whichever attempt delivers it
first; deterministic generation makes a resumed stream seamless. Non-final errors (retryable) are
not shown: another attempt is coming. The first final event (result or non-retryable error) ends
the request.

Crash reports (`TASK_ERROR_KIND_WORKER_CRASHED`: an attempt died with its worker process, told by
the process that started next) are counted per distinct attempt. Below `max_crashes` they wait like
any retryable error (the broker redelivers the task); the report that reaches it ends the request
with Verdict.POISON: the task kills the workers that take it, and the gateway sets it aside.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from uplion.v1 import task_pb2


class Verdict(enum.Enum):
    SKIP = "skip"  # bookkeeping only, or a duplicate
    DELIVER = "deliver"  # a chunk the client has not seen
    RESULT = "result"  # final success
    ERROR = "error"  # final failure
    POISON = "poison"  # final failure: the task crashed `max_crashes` workers


@dataclass
class ReplyCursor:
    delivered: int = 0
    attempts: set[str] = field(default_factory=set)
    prompt_tokens: int = 0
    delivered_completion_tokens: int = 0
    done: bool = False
    max_crashes: int = 3  # UPLION_MAX_WORKER_CRASHES
    crashed: set[str] = field(default_factory=set)  # attempts reported dead with their worker

    def accept(self, event: task_pb2.TaskEvent) -> Verdict:
        if self.done:
            return Verdict.SKIP
        self.attempts.add(event.attempt_id)
        payload = event.WhichOneof("payload")
        if payload == "started":
            self.prompt_tokens = max(self.prompt_tokens, event.started.prompt_tokens)
            return Verdict.SKIP
        if payload in ("chat_chunk", "completion_chunk", "response_event"):
            index = event.seq - 1
            if index != self.delivered:
                return Verdict.SKIP  # already delivered by another attempt (or out of place)
            self.delivered += 1
            self.delivered_completion_tokens = max(self.delivered_completion_tokens, event.completion_tokens)
            return Verdict.DELIVER
        if payload == "result":
            self.done = True
            return Verdict.RESULT
        if payload == "error":
            if event.error.kind == task_pb2.TASK_ERROR_KIND_WORKER_CRASHED:
                self.crashed.add(event.attempt_id)
                if len(self.crashed) < self.max_crashes:
                    return Verdict.SKIP
                self.done = True
                return Verdict.POISON
            if event.error.retryable:
                return Verdict.SKIP
            self.done = True
            return Verdict.ERROR
        return Verdict.SKIP
