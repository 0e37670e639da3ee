"""The pure parts of counting worker crashes (tests/chaos/test_poison_task.py runs the whole path):
the worker's crash journal, the gateway's give-up decision, its error, and how it follows a task it
set aside."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pulsar
import pytest

from uplion.core.topics import Topics
from uplion.gateway.config import GatewayConfig
from uplion.gateway.cursor import ReplyCursor, Verdict
from uplion.gateway.dispatcher import Dispatcher
from uplion.gateway.errors import crashed_workers, from_task_error
from uplion.v1 import task_pb2
from uplion.worker.backends.echo import EchoSettings
from uplion.worker.config import WorkerConfig
from uplion.worker.journal import Journal, JournalRecord, forget, report_crashes
from uplion.worker.processes import child_env

RECORD = JournalRecord("t1", "persistent://public/default-replies/gateway-gw-1-replies", "a1", "w-0", 1.8e9)


class TestJournalRecord:
    def test_a_record_decodes_to_what_was_encoded(self) -> None:
        assert JournalRecord.decode(RECORD.encode()) == RECORD

    @pytest.mark.parametrize(
        "raw",
        [b"", RECORD.encode()[:20], b"\xff\xfe", b"[]", b'{"task_id": "t1"}',
         b'{"task_id":"","reply_topic":"r","attempt_id":"a","worker_id":"w","deadline":1}'],
    )  # fmt: skip
    def test_anything_else_is_refused(self, raw: bytes) -> None:
        with pytest.raises(ValueError, match="not a journal record"):
            JournalRecord.decode(raw)


class TestJournal:
    def test_an_attempt_that_ends_leaves_nothing_and_one_that_dies_leaves_its_record(self, tmp_path: Path) -> None:
        journal = Journal(tmp_path / "j")
        finished = journal.begin(JournalRecord("t0", "r", "a0", "w", 1.8e9))
        journal.end(finished)  # its slot is blanked, then reused
        journal.begin(JournalRecord("t-long", "r" * 2000, "a-long", "w", 1.8e9))  # longer than a slot
        journal.end(journal.begin(RECORD))
        journal.begin(RECORD)  # the process "dies" here: nothing ends it
        (tmp_path / "j" / "cut.attempt").write_bytes(RECORD.encode()[:10])  # a write cut short
        # the next process with the same folder: the blank slot is removed, the records are found
        left = Journal(tmp_path / "j").leftovers()
        assert sorted(((r.task_id if r else None) for _, r in left), key=str) == [None, "t-long", "t1"]
        assert RECORD in [r for _, r in left]
        for path, _ in left:
            forget(path)
        assert journal.leftovers() == []
        journal.close()
        assert not (tmp_path / "j").exists()

    def test_a_journal_that_cannot_be_written_never_stops_a_task(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        journal = Journal(blocker / "j")
        assert journal.begin(RECORD) is None
        journal.end(None)
        assert journal.leftovers() == []


class _Topic:
    def __init__(self, topic: str, sent: list[tuple[str, task_pb2.TaskEvent]], broken: bool) -> None:
        self.topic, self.sent, self.broken = topic, sent, broken

    async def send(self, content: bytes) -> None:
        if self.broken:
            raise pulsar.PulsarException("the broker is away")
        self.sent.append((self.topic, task_pb2.TaskEvent.FromString(content)))


class TestCrashReports:
    async def test_each_live_record_is_reported_to_its_gateway_and_removed(self, tmp_path: Path) -> None:
        journal = Journal(tmp_path)
        journal.begin(RECORD)
        journal.begin(JournalRecord("t-old", "r", "a-old", "w-0", time.time() - 1))  # nobody waits for it
        sent: list[tuple[str, task_pb2.TaskEvent]] = []

        async def producer_for(topic: str) -> _Topic:
            return _Topic(topic, sent, broken=False)

        assert await report_crashes(journal, producer_for, keep_unsent=True) == 1
        [(topic, event)] = sent
        assert topic == RECORD.reply_topic
        assert (event.task_id, event.attempt_id, event.worker_id) == ("t1", "a1", "w-0")
        assert event.error.kind == task_pb2.TASK_ERROR_KIND_WORKER_CRASHED
        assert event.error.retryable
        assert journal.leftovers() == []

    async def test_a_report_not_sent_is_kept_for_the_next_process_only_when_asked(self, tmp_path: Path) -> None:
        journal = Journal(tmp_path)
        journal.begin(RECORD)

        async def producer_for(topic: str) -> _Topic:
            return _Topic(topic, [], broken=True)

        assert await report_crashes(journal, producer_for, keep_unsent=True) == 0  # the supervisor's
        assert [r for _, r in journal.leftovers()] == [RECORD]
        assert await report_crashes(journal, producer_for, keep_unsent=False) == 0  # a process starting
        assert journal.leftovers() == []


class TestWorkerSettings:
    def test_the_journal_is_per_worker_id_and_each_child_has_its_own(self) -> None:
        env = {"UPLION_MODEL": "m", "UPLION_WORKER_ID": "pod/a", "UPLION_MAX_PROCESS_NUM": "2"}
        cfg = WorkerConfig.from_env(env)
        assert cfg.journal_dir.endswith("/uplion-worker-journal/pod-a")
        assert cfg.cancel_lookback_s == 600.0
        assert child_env(env, cfg, 1, 1)["UPLION_WORKER_JOURNAL_DIR"] == f"{cfg.journal_dir}/1"
        set_dir = WorkerConfig.from_env({**env, "UPLION_WORKER_JOURNAL_DIR": "/var/lib/uplion/journal"})
        assert set_dir.journal_dir == "/var/lib/uplion/journal"

    def test_the_echo_crash_marker_is_off_unless_set_and_spares_other_prompts(self) -> None:
        EchoSettings().crash_if_marked(["[[crash]] anything"])  # not set: nothing happens
        EchoSettings(crash_on="[[crash]]").crash_if_marked(["hello", "world"])
        assert WorkerConfig.from_env({"UPLION_MODEL": "m", "UPLION_ECHO_CRASH_ON": "x"}).echo_crash_on == "x"


def crash(attempt: str) -> task_pb2.TaskEvent:
    err = task_pb2.TaskError(kind=task_pb2.TASK_ERROR_KIND_WORKER_CRASHED, retryable=True, message="died")
    return task_pb2.TaskEvent(task_id="t", attempt_id=attempt, error=err)


def result(attempt: str) -> task_pb2.TaskEvent:
    return task_pb2.TaskEvent(task_id="t", attempt_id=attempt, result=task_pb2.TaskResult())


class TestGiveUpDecision:
    def test_the_nth_distinct_crashed_attempt_sets_the_task_aside(self) -> None:
        cur = ReplyCursor(max_crashes=3)
        assert [cur.accept(crash(a)) for a in ("A", "B", "B", "A")] == [Verdict.SKIP] * 4  # a report twice is one
        assert cur.accept(crash("C")) is Verdict.POISON
        assert cur.crashed == {"A", "B", "C"}
        assert cur.attempts == {"A", "B", "C"}
        assert cur.accept(crash("D")) is Verdict.SKIP  # the request is over
        assert cur.accept(result("E")) is Verdict.SKIP

    def test_an_answer_before_the_limit_wins_and_later_reports_change_nothing(self) -> None:
        cur = ReplyCursor(max_crashes=2)
        assert cur.accept(crash("A")) is Verdict.SKIP  # a worker was killed once (not the task's fault)
        assert (
            cur.accept(task_pb2.TaskEvent(task_id="t", attempt_id="B", result=task_pb2.TaskResult())) is Verdict.RESULT
        )
        assert cur.accept(crash("C")) is Verdict.SKIP

    def test_a_limit_of_one_gives_up_at_the_first_crash(self) -> None:
        assert ReplyCursor(max_crashes=1).accept(crash("A")) is Verdict.POISON

    def test_the_limit_is_a_gateway_setting(self) -> None:
        assert GatewayConfig.from_env({}).max_worker_crashes == 3
        assert GatewayConfig.from_env({"UPLION_MAX_WORKER_CRASHES": "5"}).max_worker_crashes == 5


class TestTheClientsError:
    def test_it_is_a_500_api_error_saying_what_happened(self) -> None:
        e = crashed_workers(3)
        assert e.status == grpc.StatusCode.INTERNAL  # HTTP 500 at the edge
        assert (e.type, e.code, e.param) == ("api_error", "task_crashed_workers", None)
        assert e.message == "The request crashed 3 workers; it was set aside and will not be retried."
        assert from_task_error(crash("A").error).code == "task_crashed_workers"


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.topic = ""

    async def subscribe(self, topic: str, subscription: str, **_: Any) -> _Recorder:
        return self

    async def close(self) -> None:
        return None

    async def create_producer(self, topic: str, **_: Any) -> _Recorder:
        producer = _Recorder()
        producer.sent, producer.topic = self.sent, topic
        return producer

    async def send(self, data: bytes, **_: Any) -> None:
        self.sent.append((self.topic, data))


async def _settle(dispatcher: Dispatcher) -> None:
    """Let the publishes the dispatcher runs in the background finish."""
    await asyncio.gather(*dispatcher._background)


class TestFollowingASetAsideTask:
    async def test_a_crash_after_the_mark_announces_it_again_until_a_worker_parks_it(self) -> None:
        client = _Recorder()
        dispatcher = Dispatcher(client, Topics(), "gw-1")
        await dispatcher.mark_poison("m", "t", "the request crashed 3 workers", time.time() + 60)
        dispatcher.route(crash("late"))  # a worker that started too late to read the mark took it
        await _settle(dispatcher)
        marks = [task_pb2.CancelTask.FromString(data) for _, data in client.sent]
        assert {t for t, _ in client.sent} == {"persistent://public/default/model-m-cancel"}
        assert [(c.task_id, c.poison, c.reason) for c in marks] == [("t", True, "the request crashed 3 workers")] * 2
        parked = task_pb2.TaskError(kind=task_pb2.TASK_ERROR_KIND_DEAD_LETTERED, message="set aside")
        dispatcher.route(task_pb2.TaskEvent(task_id="t", attempt_id="p", error=parked))
        assert "t" not in dispatcher.set_aside
        dispatcher.route(crash("later"))  # nothing followed any more
        await _settle(dispatcher)
        assert len(client.sent) == 2

    async def test_a_task_past_its_deadline_is_no_longer_followed(self) -> None:
        client = _Recorder()
        dispatcher = Dispatcher(client, Topics(), "gw-1")
        await dispatcher.mark_poison("m", "old", "r", time.time() - 1)
        await dispatcher.mark_poison("m", "new", "r", time.time() + 60)  # marking prunes the expired ones
        assert set(dispatcher.set_aside) == {"new"}
