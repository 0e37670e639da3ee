"""1,000 concurrent requests over 3 workers; then the same with one worker SIGKILLed mid-run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING

from uplion.devstack.platform import Service, wait_metric
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import usage_pb2

from .conftest import WorkerFactory, usage_events
from .test_request_path import chat

if TYPE_CHECKING:
    from uplion.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub

N = 1000
OK = "uplion_worker_tasks_total"


async def _fire(stub: Stub, model: str, stream_every: int = 0) -> list[str]:
    """N concurrent requests; with `stream_every` k, every k-th one is streamed (chunks joined)."""

    async def one(i: int) -> str:
        request = chat(model, f"request {i} says hello")
        if stream_every and i % stream_every == 0:
            chunks = [c async for c in stub.StreamChatCompletion(request, timeout=120)]
            return "".join(c.choices[0].delta.content for c in chunks if c.choices)
        reply = await stub.CreateChatCompletion(request, timeout=120)
        return reply.choices[0].message.content

    return await asyncio.gather(*(one(i) for i in range(N)))


def _done(workers: list[Service], total: int | None = None) -> list[float]:
    """Tasks each worker completed. A worker counts a task after acknowledging it, which can be a
    moment after the client got the answer: with `total`, wait (bounded) until the counts add up."""
    for _ in range(100):
        done = [w.metric(OK, outcome="ok") for w in workers]
        if total is None or sum(done) >= total:
            break
        time.sleep(0.05)
    return done


async def test_1000_concurrent_requests_spread_over_3_workers(stub: Stub, workers: WorkerFactory) -> None:
    pool = [workers("load", UPLION_MAX_PROCESS_NUM="16", UPLION_ECHO_TOKEN_DELAY_MS="2") for _ in range(3)]
    answers = await _fire(stub, "load")
    assert answers == [f"request {i} says hello" for i in range(N)]  # each its own, correct answer
    done = _done(pool, total=N)
    assert sum(done) == N
    assert all(d > 0 for d in done), done  # every worker did work


async def test_sigkill_of_a_worker_loses_nothing_and_answers_once(
    stub: Stub, workers: WorkerFactory, broker: Pulsar
) -> None:
    pool = [workers("kill", UPLION_MAX_PROCESS_NUM="16", UPLION_ECHO_TOKEN_DELAY_MS="50") for _ in range(3)]
    victim = pool[0]
    run = asyncio.ensure_future(_fire(stub, "kill", stream_every=2))  # half streamed: resumed exactly once
    # wait until the victim is mid-run, holding tasks
    await asyncio.to_thread(wait_metric, victim, OK, 50, 60, outcome="ok")
    victim.kill()
    answers = await asyncio.wait_for(run, 180)
    assert answers == [f"request {i} says hello" for i in range(N)]  # none lost, none mixed up
    events = await usage_events(broker, "kill", N, wait_s=60)
    ids = Counter(e.event_id for e in events)
    assert len(ids) == N
    assert max(ids.values()) == 1  # one usage event per request, never two
    assert all(e.outcome == usage_pb2.REQUEST_OUTCOME_COMPLETED for e in events)
    # the victim held streams when it died: they were redelivered, resumed and finished elsewhere
    assert any(e.attempts >= 2 for e in events if e.streamed), Counter(e.attempts for e in events)
    survivors = _done(pool[1:])
    assert all(s > 0 for s in survivors)
