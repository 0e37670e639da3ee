"""A gateway SIGKILLed with requests in flight (billing/README.md, "A gateway that dies"): its clients
get a connection error at once, not a hang; the other gateway replica keeps serving; and the work
the workers completed for the dead gateway is billed all the same, exactly once. Each worker sends a
recovery record of every task it completes, delivered after the task's deadline plus a grace period;
billing applies it only if the gateway's own event never came (same event id) and only with the
gateway's proof of the caller, so a forged record bills no one.

Two gateways with the shared proof key, two echo workers slow enough (100 ms a token) that the
requests are still running when the gateway dies, and billing, in a Pulsar namespace and a database
of their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pulsar
import pytest
from google.protobuf import struct_pb2

from tests.edge.conftest import _new_database
from tests.kube_api import eventually
from uplion.core import pulsar_auth
from uplion.core.topics import Topics
from uplion.devstack.platform import Service, start_billing, start_gateway, start_worker, wait_metric
from uplion.devstack.postgres import Postgres
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import chat_pb2, common_pb2, inference_pb2_grpc, usage_pb2

MODEL = "gwkill-echo"
NAMESPACE = "gwkill"
KEY = "proof-key-of-the-gateway-kill-test-0123456789"
CLIENT_TIMEOUT_S = 8.0  # the tasks' deadline: their recovery records come GRACE_S after it
GRACE_S = 1
IN_FLIGHT, SURVIVOR_REQUESTS = 6, 6
PROMPT = " ".join(f"word{i}" for i in range(20))  # echo answers it a token at a time: 2 s of work


@dataclass
class Cluster:
    doomed: Service
    survivor: Service
    workers: list[Service]
    billing: Service
    dsn: str


@pytest.fixture(scope="module")
async def cluster(broker: Pulsar, postgres: Postgres, run_dir: Path) -> AsyncIterator[Cluster]:
    d = run_dir / "gateway-kill"
    d.mkdir()
    broker.create_namespace(NAMESPACE)
    dsn = await _new_database(postgres, "gateway_kill")
    ns = {"UPLION_PULSAR_NAMESPACE": NAMESPACE}
    with ExitStack() as started:  # stopped in reverse order, also when a later start fails

        def up(svc: Service) -> Service:
            started.callback(svc.stop)
            return svc

        gateways = [
            up(start_gateway(d, broker.service_url, [MODEL], UPLION_USAGE_PROOF_KEY=KEY,
                             UPLION_PULSAR_NAMESPACE=NAMESPACE))
            for _ in range(2)
        ]  # fmt: skip
        workers = [
            up(start_worker(d, broker.service_url, MODEL, UPLION_MAX_PROCESS_NUM="8", UPLION_ECHO_TOKEN_DELAY_MS="100",
                            UPLION_USAGE_RECOVERY_GRACE_S=str(GRACE_S), UPLION_WORKER_ID=f"gwkill-{i}", **ns))
            for i in range(2)
        ]  # fmt: skip
        billing = up(start_billing(d, broker.service_url, dsn, UPLION_USAGE_PROOF_KEY=KEY,
                                   UPLION_BILLING_BATCH_DELAY_MS="50", **ns))  # fmt: skip
        conn = await asyncpg.connect(dsn)  # billing made its tables: a price, so the model's usage is billed
        await conn.execute("INSERT INTO model_prices VALUES ($1, to_timestamp(0), 1000, 1000)", MODEL)
        await conn.close()
        yield Cluster(gateways[0], gateways[1], workers, billing, dsn)


def chat(tag: str) -> chat_pb2.ChatCompletionRequest:
    content = struct_pb2.Value(string_value=f"{tag} {PROMPT}")
    return chat_pb2.ChatCompletionRequest(model=MODEL, messages=[chat_pb2.ChatMessage(role="user", content=content)])


async def _call(port: int, tag: str, stream: bool) -> str:
    """The answer's text, or the gRPC status code's name when the call failed."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        try:
            if stream:
                parts = [c.choices[0].delta.content async for c in stub.StreamChatCompletion(chat(tag),
                         timeout=CLIENT_TIMEOUT_S) if c.choices]  # fmt: skip
                return "".join(parts)
            reply = await stub.CreateChatCompletion(chat(tag), timeout=CLIENT_TIMEOUT_S)
            return str(reply.choices[0].message.content)
        except grpc.aio.AioRpcError as e:
            return e.code().name


async def _rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch("SELECT * FROM usage_events WHERE model = $1 ORDER BY event_id", MODEL))
    finally:
        await conn.close()


def _in_flight(workers: list[Service]) -> float:
    return sum(w.metric("uplion_worker_inflight", model=MODEL) for w in workers)


async def test_work_done_for_a_killed_gateway_is_billed_once_and_the_other_replica_serves(
    cluster: Cluster, broker: Pulsar
) -> None:
    doomed = [asyncio.create_task(_call(cluster.doomed.port, f"doomed-{i}", stream=i % 2 == 0))
              for i in range(IN_FLIGHT)]  # fmt: skip
    await asyncio.to_thread(eventually, lambda: _in_flight(cluster.workers) >= IN_FLIGHT, 20, 0.05)
    cluster.doomed.proc.popen.kill()  # SIGKILL: no drain, no usage event for anything in flight
    survivors = [asyncio.create_task(_call(cluster.survivor.port, f"survivor-{i}", stream=i % 2 == 1))
                 for i in range(SURVIVOR_REQUESTS)]  # fmt: skip
    # the dead gateway's clients: a connection error, well before their deadline (not a hang)
    assert await asyncio.gather(*doomed) == ["UNAVAILABLE"] * IN_FLIGHT
    answers = await asyncio.gather(*survivors)
    assert answers == [f"survivor-{i} {PROMPT}" for i in range(SURVIVOR_REQUESTS)]

    # every task ran to the end on the workers; each completed task's record reaches billing after its
    # deadline plus the grace, and the survivor's own events before that
    completed = IN_FLIGHT + SURVIVOR_REQUESTS
    await asyncio.to_thread(
        wait_metric, cluster.billing, "uplion_billing_events_total", SURVIVOR_REQUESTS + completed, 60,
        result="applied_or_duplicate",
    )  # fmt: skip
    rows = await _rows(cluster.dsn)
    assert len(rows) == completed, [(r["event_id"], r["user_id"]) for r in rows]  # once each, none twice
    assert all(r["outcome"] == usage_pb2.REQUEST_OUTCOME_COMPLETED for r in rows)
    assert all(r["completion_tokens"] == len(PROMPT.split()) + 1 for r in rows), [r["completion_tokens"] for r in rows]
    assert all(r["cost_micro_credits"] > 0 for r in rows)
    assert sum(w.metric("uplion_worker_tasks_total", model=MODEL, outcome="ok") for w in cluster.workers) == completed


async def test_a_forged_recovery_record_bills_no_one(cluster: Cluster, broker: Pulsar) -> None:
    parked_before = cluster.billing.metric("uplion_billing_events_total", result="dead_lettered")
    forged = usage_pb2.UsageEvent(
        event_id="forged-by-a-worker", model=MODEL, caller=common_pb2.Caller(user_id="victim", token_id="t"),
        kind=usage_pb2.REQUEST_KIND_CHAT_COMPLETION, outcome=usage_pb2.REQUEST_OUTCOME_COMPLETED,
        prompt_tokens=1_000_000, completion_tokens=1_000_000, recovered=True, usage_proof=b"\0" * 32,
    )  # fmt: skip
    forged.started_at.GetCurrentTime()
    client = pulsar.Client(broker.service_url, authentication=broker.authentication(),
                           logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))  # fmt: skip
    try:
        # as the services name it: beside the replies (the devstack's reply namespace, pulsar_auth)
        topics = Topics(namespace=NAMESPACE, reply_namespace=pulsar_auth.reply_namespace(NAMESPACE))
        producer = client.create_producer(topics.usage_recovery())
        producer.send(usage_pb2.UsageRecords(events=[forged]).SerializeToString())
    finally:
        client.close()
    await asyncio.to_thread(
        wait_metric, cluster.billing, "uplion_billing_events_total", parked_before + 1, 30, result="dead_lettered"
    )
    assert not [r for r in await _rows(cluster.dsn) if r["user_id"] == "victim"]
