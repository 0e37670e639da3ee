"""Usage recovery's pure parts (billing/README.md, "A gateway that dies"): the gateway's proof of a
task's caller (uplion.core.usage_proof), the record a worker makes of a completed task, and billing's
rule that a record counts only with a valid proof of its own fields."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from uplion.billing.consumer import decode, unproven
from uplion.core import usage_proof
from uplion.core.config import ConfigError
from uplion.v1 import common_pb2, task_pb2, usage_pb2
from uplion.worker.decisions import recovery_record
from uplion.worker.recovery import RecoveryRecords

KEY = b"k" * 32


def _task() -> task_pb2.Task:
    task = task_pb2.Task(task_id="t1", model="m", stream=True, edge_request_id="r1",
                         caller=common_pb2.Caller(user_id="u1", token_id="tok1", tier="free"),
                         kind=usage_pb2.REQUEST_KIND_RESPONSE)  # fmt: skip
    task.created_at.FromSeconds(1_700_000_000)
    task.deadline.FromSeconds(1_700_000_600)
    claim = usage_proof.claim(task.task_id, task.model, task.caller, task.kind, task.created_at)
    task.usage_proof = usage_proof.sign(KEY, claim)
    return task


def test_a_completed_tasks_record_says_what_the_gateways_event_would_and_carries_the_proof() -> None:
    task = _task()
    record = recovery_record(task, common_pb2.Usage(prompt_tokens=7, completion_tokens=5, total_tokens=12), 1.7e9 + 3)
    assert record.event_id == "t1"
    assert record.model == "m"
    assert record.caller == task.caller
    assert record.kind == usage_pb2.REQUEST_KIND_RESPONSE
    assert record.outcome == usage_pb2.REQUEST_OUTCOME_COMPLETED
    assert (record.prompt_tokens, record.completion_tokens) == (7, 5)
    assert record.started_at == task.created_at
    assert record.finished_at.seconds == 1_700_000_003
    assert record.edge_request_id == "r1"  # billing releases the request's quota holds by it
    assert record.recovered
    assert record.usage_proof == task.usage_proof
    assert not unproven(record, KEY)


def _altered(**change: object) -> usage_pb2.UsageEvent:
    record = recovery_record(_task(), common_pb2.Usage(prompt_tokens=1), 1.7e9)
    for name, value in change.items():
        if name == "user_id":
            record.caller.user_id = str(value)
        elif name == "started_at":
            record.started_at.FromSeconds(int(str(value)))
        else:
            setattr(record, name, value)
    return record


@pytest.mark.parametrize(
    "change",
    [
        {"user_id": "someone-else"},
        {"model": "pricier"},
        {"event_id": "t2"},
        {"started_at": "1"},
        {"kind": usage_pb2.REQUEST_KIND_EMBEDDING},
        {"usage_proof": b""},
        {"usage_proof": b"x" * 32},
        {"recovered": False},
    ],
)
def test_a_record_whose_fields_are_not_the_ones_the_gateway_signed_is_unproven(change: dict[str, object]) -> None:
    assert unproven(_altered(**change), KEY)
    assert not unproven(_altered(), KEY)
    assert unproven(_altered(), b"another key of thirty-two bytes!")


@dataclass
class Message:
    payload: bytes

    def data(self) -> bytes:
        return self.payload


def test_billing_parks_unproven_records_alone_and_applies_proven_ones() -> None:
    good, forged = _altered(), _altered(user_id="victim")
    batch = usage_pb2.UsageRecords(events=[good, forged])
    events, poison, refused, holds = decode([Message(batch.SerializeToString())], KEY)
    assert [e.caller.user_id for e, _ in events] == ["u1"]
    assert [(origin.data, reason) for origin, reason in poison] == [
        (forged.SerializeToString(), "recovery record without a valid proof of its caller")  # the record, not the batch
    ]
    assert refused == 0
    assert holds == [("u1", "tok1", "r1")]


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[usage_pb2.UsageRecords, int]] = []

    async def send(self, content: bytes, deliver_at: int) -> None:
        self.sent.append((usage_pb2.UsageRecords.FromString(content), deliver_at))


async def test_a_workers_records_go_together_delivered_after_the_latest_deadline_plus_the_grace() -> None:
    producer = Producer()

    async def get() -> Producer:
        return producer

    records = RecoveryRecords(get, grace_s=60, flush_s=3600, max_records=3)
    records.start()
    for i, deadline in enumerate((100.0, 300.5, 200.0)):
        records.add(usage_pb2.UsageEvent(event_id=f"t{i}"), deadline)
    for _ in range(100):  # the third record filled the batch: sent without waiting for the interval
        if producer.sent:
            break
        await asyncio.sleep(0.01)
    assert [([e.event_id for e in batch.events], at) for batch, at in producer.sent] == [(["t0", "t1", "t2"], 360_500)]
    records.add(usage_pb2.UsageEvent(event_id="t3"), 50.0)
    await records.close()  # the drain sends what is left
    assert [e.event_id for e in producer.sent[-1][0].events] == ["t3"]
    assert producer.sent[-1][1] == 110_000
    await records.flush()  # nothing left: nothing sent
    assert len(producer.sent) == 2


def test_the_key_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert usage_proof.key_from_env({}) == b""
    assert usage_proof.key_from_env({"UPLION_USAGE_PROOF_KEY": "a" * 32}) == b"a" * 32
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        usage_proof.key_from_env({"UPLION_USAGE_PROOF_KEY": "short"})
    path = tmp_path / "key"
    path.write_bytes(b"b" * 40 + b"\n")
    assert usage_proof.key_from_env({"UPLION_USAGE_PROOF_KEY_FILE": str(path)}) == b"b" * 40
    with pytest.raises(ConfigError, match="cannot read"):
        usage_proof.key_from_env({"UPLION_USAGE_PROOF_KEY_FILE": str(path) + ".missing"})
