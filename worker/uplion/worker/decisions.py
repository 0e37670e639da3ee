"""What to do with a failed attempt: a pure decision, tested directly."""

from __future__ import annotations

import enum


class FailureAction(enum.Enum):
    RETRY = "retry"  # nack: Pulsar redelivers after the nack delay, to any worker
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
