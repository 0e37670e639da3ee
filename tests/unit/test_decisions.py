"""The pure decisions of the request path, tested directly (no services)."""

from __future__ import annotations

import pytest

from uplion.core.config import ConfigError
from uplion.core.topics import Topics
from uplion.gateway.config import GatewayConfig
from uplion.gateway.cursor import ReplyCursor, Verdict
from uplion.gateway.usage import billable
from uplion.v1 import common_pb2, task_pb2, usage_pb2
from uplion.worker.backends.accounts import AccountState, parse_retry_after, pick_order
from uplion.worker.backends.echo import pieces, plan
from uplion.worker.config import Account, WorkerConfig
from uplion.worker.decisions import FailureAction, on_failure, retry_delay_s


def ev(attempt: str, seq: int, **payload: object) -> task_pb2.TaskEvent:
    return task_pb2.TaskEvent(task_id="t", attempt_id=attempt, seq=seq, **payload)  # type: ignore[arg-type]


def chunk(attempt: str, seq: int, text: str) -> task_pb2.TaskEvent:
    from uplion.v1 import chat_pb2

    c = chat_pb2.ChatCompletionChunk(
        choices=[chat_pb2.ChatCompletionChunkChoice(delta=chat_pb2.ChatCompletionDelta(content=text))]
    )
    return ev(attempt, seq, chat_chunk=c, completion_tokens=seq)


class TestReplyCursor:
    def test_resumes_a_stream_from_a_second_attempt_without_repeating_chunks(self) -> None:
        cur = ReplyCursor()
        assert cur.accept(ev("A", 0, started=task_pb2.TaskStarted(prompt_tokens=7))) is Verdict.SKIP
        assert [cur.accept(chunk("A", i, f"a{i}")) for i in (1, 2)] == [Verdict.DELIVER, Verdict.DELIVER]
        # A dies; B starts over: its first two chunks were delivered already, the third is new
        assert cur.accept(ev("B", 0, started=task_pb2.TaskStarted())) is Verdict.SKIP
        assert [cur.accept(chunk("B", i, f"b{i}")) for i in (1, 2, 3)] == [Verdict.SKIP, Verdict.SKIP, Verdict.DELIVER]
        assert cur.accept(ev("B", 4, result=task_pb2.TaskResult())) is Verdict.RESULT
        assert cur.accept(ev("A", 3, result=task_pb2.TaskResult())) is Verdict.SKIP  # a zombie's late result
        assert (cur.delivered, cur.attempts, cur.prompt_tokens) == (3, {"A", "B"}, 7)

    def test_attempts_are_counted_from_any_event(self) -> None:
        cur = ReplyCursor()
        cur.accept(ev("A", 0, error=task_pb2.TaskError(retryable=True)))
        cur.accept(ev("B", 0, result=task_pb2.TaskResult()))
        assert cur.attempts == {"A", "B"}

    def test_retryable_errors_wait_for_the_next_attempt_final_errors_end(self) -> None:
        cur = ReplyCursor()
        assert cur.accept(ev("A", 1, error=task_pb2.TaskError(retryable=True))) is Verdict.SKIP
        assert cur.accept(ev("B", 1, error=task_pb2.TaskError(retryable=False))) is Verdict.ERROR
        assert cur.accept(ev("C", 1, result=task_pb2.TaskResult())) is Verdict.SKIP


class TestBillingRule:
    def test_completed_bills_reported_usage(self) -> None:
        usage = common_pb2.Usage(prompt_tokens=10, completion_tokens=20)
        got = billable(usage_pb2.REQUEST_OUTCOME_COMPLETED, final_usage=usage, prompt_tokens_seen=9,
                       delivered_chunks=20, delivered_completion_tokens=20)  # fmt: skip
        assert got == (10, 20)

    @pytest.mark.parametrize(
        "outcome",
        [usage_pb2.REQUEST_OUTCOME_FAILED, usage_pb2.REQUEST_OUTCOME_CLIENT_CANCELLED,
         usage_pb2.REQUEST_OUTCOME_DEADLINE_EXCEEDED],
    )  # fmt: skip
    def test_nothing_delivered_bills_nothing_and_partial_bills_what_was_delivered(
        self, outcome: usage_pb2.RequestOutcome.ValueType
    ) -> None:
        none = billable(outcome, final_usage=None, prompt_tokens_seen=9, delivered_chunks=0,
                        delivered_completion_tokens=0)  # fmt: skip
        assert none == (0, 0)
        some = billable(outcome, final_usage=None, prompt_tokens_seen=9, delivered_chunks=4,
                        delivered_completion_tokens=4)  # fmt: skip
        assert some == (9, 4)


class TestWorkerFailures:
    def test_retry_until_attempts_run_out_then_dead_letter(self) -> None:
        kw = {"retryable": True, "chunks_sent": 0, "max_attempts": 3}
        assert on_failure(attempt_number=1, **kw) is FailureAction.RETRY  # type: ignore[arg-type]
        assert on_failure(attempt_number=2, **kw) is FailureAction.RETRY  # type: ignore[arg-type]
        assert on_failure(attempt_number=3, **kw) is FailureAction.DEAD_LETTER  # type: ignore[arg-type]

    def test_permanent_or_partially_streamed_failures_are_final(self) -> None:
        assert on_failure(retryable=False, chunks_sent=0, attempt_number=1, max_attempts=3) is FailureAction.FAIL
        assert on_failure(retryable=True, chunks_sent=2, attempt_number=1, max_attempts=3) is FailureAction.FAIL


class TestRetryBackoff:
    def test_exponential_capped_and_never_before_retry_after(self) -> None:
        kw = {"base_s": 0.5, "cap_s": 10.0, "retry_after_s": None, "remaining_s": 100.0}
        assert [retry_delay_s(n, **kw) for n in (1, 2, 3, 6)] == [0.5, 1.0, 2.0, 10.0]  # type: ignore[arg-type]
        assert retry_delay_s(1, base_s=0.5, cap_s=10, retry_after_s=3.0, remaining_s=100) == 3.0

    def test_no_retry_that_would_land_after_the_deadline(self) -> None:
        assert retry_delay_s(3, base_s=0.5, cap_s=10, retry_after_s=None, remaining_s=1.5) is None


class TestEcho:
    def test_pieces_reassemble_exactly(self) -> None:
        text = "  two  spaces\tand\nlines "
        assert "".join(pieces(text)) == text

    def test_max_tokens_stop_and_directives(self) -> None:
        p = plan("a b c d [[delay:50]]", 2, [], 0.0)
        assert (p.tokens, p.finish_reason, p.delay_s) == (["a ", "b "], "length", 0.05)
        assert plan("say STOP now", None, ["STOP"], 0.0).tokens == ["say "]
        assert plan("x [[fail:auth]]", None, [], 0.0).fail == "auth"


class TestAccounts:
    def test_least_busy_usable_first_and_retry_after(self) -> None:
        a, b, c = (AccountState(Account(f"u{i}", "k")) for i in range(3))
        a.inflight, b.inflight = 2, 1
        c.rate_limited(now=100.0, retry_after=5.0)
        assert pick_order([a, b, c], now=101.0) == [b, a]
        assert pick_order([a, b, c], now=106.0) == [c, b, a]
        assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
        assert parse_retry_after({"retry-after": "3"}) == 3.0
        assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None

    def test_api_key_is_not_in_repr(self) -> None:
        assert "sk-secret" not in repr(Account("http://x", "sk-secret"))


class TestConfig:
    def test_worker_env_matches_crd_fields_and_rejects_bad_values(self) -> None:
        cfg = WorkerConfig.from_env(
            {"UPLION_MODEL": "m", "UPLION_MODEL_TYPE": "remote", "UPLION_BASE_URL": "http://a/v1",
             "UPLION_API_KEYS": "k1,k2", "UPLION_MAX_PROCESS_NUM": "7"}
        )  # fmt: skip
        assert cfg.max_concurrency == 7
        assert [a.base_url for a in cfg.accounts] == ["http://a/v1", "http://a/v1"]
        with pytest.raises(ConfigError, match="UPLION_MODEL_TYPE"):
            WorkerConfig.from_env({"UPLION_MODEL": "m", "UPLION_MODEL_TYPE": "gpu"})
        with pytest.raises(ConfigError, match="UPLION_MAX_PROCESS_NUM"):
            WorkerConfig.from_env({"UPLION_MODEL": "m", "UPLION_MAX_PROCESS_NUM": "0"})

    def test_gateway_deadline_budget(self) -> None:
        cfg = GatewayConfig.from_env({"UPLION_DEFAULT_TIMEOUT_S": "30", "UPLION_MAX_TIMEOUT_S": "100"})
        assert cfg.timeout_for(None) == 30
        assert cfg.timeout_for(5) == 5
        assert cfg.timeout_for(1000) == 100

    def test_topic_names_keep_the_original_convention(self) -> None:
        t = Topics()
        assert t.tasks("llama 3/8b") == "persistent://public/default/model-llama-3-8b"
        assert t.subscription("gpt-4o") == "model-gpt-4o-subscription"


def test_worker_slots_split_over_processes() -> None:
    from uplion.worker.processes import split_slots

    assert split_slots(16, 2) == [8, 8]
    assert split_slots(5, 3) == [2, 2, 1]
    assert split_slots(2, 2) == [1, 1]


def test_usage_events_to_settlements() -> None:
    from uplion.ratelimit.settle import settlements
    from uplion.v1 import usage_pb2

    ok = usage_pb2.UsageEvent(event_id="a", edge_request_id="r1", prompt_tokens=3, completion_tokens=4)
    anonymous = usage_pb2.UsageEvent(event_id="b", prompt_tokens=1)
    items, skipped = settlements([ok.SerializeToString(), anonymous.SerializeToString(), b"\xff\xff"])
    assert items == [("r1", 7)]
    assert skipped == {"undecodable": 1, "no_request_id": 1}


def test_a_taken_reservation_becomes_one_adjustment_per_counter() -> None:
    from uplion.ratelimit.settle import ADJUST, adjustments, reservation_key

    calls = adjustments({"uplion:rl:a": "60:f:0", "uplion:rl:g:b": "60:g:0.5", "junk": "x"}, actual=25)
    assert [(c.script, list(c.keys), list(c.args)) for c in calls] == [
        (ADJUST, ["uplion:rl:a"], [-35, "f", "0"]),
        (ADJUST, ["uplion:rl:g:b"], [-35, "g", "0.5"]),
    ]
    # the same names the Go service's KeyPart gives: as is, or hashed when long, braced or "sha256:"
    assert reservation_key("r-1") == "uplion:rl:resv:r-1"
    for odd in ("x" * 129, "{u1}", "sha256:abc"):
        assert reservation_key(odd).startswith("uplion:rl:resv:sha256:")
        assert len(reservation_key(odd)) == len("uplion:rl:resv:sha256:") + 64
