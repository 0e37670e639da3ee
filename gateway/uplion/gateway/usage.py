"""The billing rule: what one request's single UsageEvent says (a pure function).

- completed: the prompt and completion tokens the backend reported.
- failed before any output reached the client: nothing.
- failed, cancelled by the client, or past its deadline after output reached the client: the
  prompt tokens and the completion tokens actually delivered (never the undelivered rest).
- cancelled or expired before any output: nothing.
Redeliveries never add anything: the event id is the request id, one event per request.
"""

from __future__ import annotations

from uplion.v1 import common_pb2, usage_pb2


def billable(
    outcome: usage_pb2.RequestOutcome.ValueType,
    *,
    final_usage: common_pb2.Usage | None,
    prompt_tokens_seen: int,
    delivered_chunks: int,
    delivered_completion_tokens: int,
) -> tuple[int, int]:
    if outcome == usage_pb2.REQUEST_OUTCOME_COMPLETED and final_usage is not None:
        return final_usage.prompt_tokens, final_usage.completion_tokens
    if delivered_chunks == 0:
        return 0, 0
    return prompt_tokens_seen, delivered_completion_tokens
