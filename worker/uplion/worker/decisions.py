"""What to do with a failed attempt, and what a completed one reports for usage recovery: pure
decisions, tested directly."""

from __future__ import annotations

import enum

from uplion.core.timestamps import timestamp
from uplion.v1 import common_pb2, task_pb2, usage_pb2


class FailureAction(enum.Enum):
    RETRY = "retry"  # republished with a delay (backoff), the original acked: any worker may take it
    DEAD_LETTER = "dead_letter"  # retries exhausted: park the task on the DLQ, tell the client
    FAIL = "fail"  # permanent, or output already reached the client: final error, ack


def on_failure(*, retryable: bool, chunks_sent: int, attempt_number: int, max_attempts: int) -> FailureAction:
    """`attempt_number` counts from 1. Once a chunk has been streamed the attempt is not retried:
    the client already holds partial output, so it gets an in-band error instead."""
    if not retryable or chunks_sent > 0:
        return FailureAction.FAIL
    if attempt_number < max_attempts:
        return FailureAction.RETRY
    return FailureAction.DEAD_LETTER


def retry_delay_s(
    attempt_number: int, *, base_s: float, cap_s: float, retry_after_s: float | None, remaining_s: float
) -> float | None:
    """Exponential backoff before attempt `attempt_number + 1` (base, 2x base, 4x base, ... up to
    the cap), never sooner than the backend's retry-after. None when the task's deadline would pass
    before it: a retry nobody waits for is not worth making."""
    delay: float = min(cap_s, base_s * 2.0 ** (attempt_number - 1))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, cap_s))
    if delay >= remaining_s:
        return None
    return delay


def recovery_record(task: task_pb2.Task, usage: common_pb2.Usage, now: float) -> usage_pb2.UsageEvent:
    """The usage event a worker publishes for a task it completed (billing/README.md, "A gateway that
    dies"): what the gateway's event for a completed request says, marked recovered, with the task's
    proof of its caller; billing applies it only if the gateway's never came."""
    return usage_pb2.UsageEvent(
        event_id=task.task_id,
        model=task.model,
        caller=task.caller,
        kind=task.kind,
        outcome=usage_pb2.REQUEST_OUTCOME_COMPLETED,
        streamed=task.stream,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        started_at=task.created_at,
        finished_at=timestamp(now),
        attempts=1,
        edge_request_id=task.edge_request_id,
        recovered=True,
        usage_proof=task.usage_proof,
    )
