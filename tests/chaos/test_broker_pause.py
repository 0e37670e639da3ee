"""The broker stops answering (SIGSTOP: the process is there, its sockets accept nothing), then
comes back: a request is never left hanging. A task the broker does not take within the gateway's
publish timeout is a 503 `service_unavailable` with `retry-after` (nothing ran, so a retry is
safe), and once the broker answers again requests are served without restarting anything.

This test runs its own broker: pausing the session's would stall every other test."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from uplion.devstack.platform import Service, start_gateway, start_worker
from uplion.devstack.pulsar import Pulsar, start_pulsar
from uplion.v1 import chat_pb2, inference_pb2_grpc

MODEL = "pause-echo"


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pulsar]:
    broker = start_pulsar(tmp_path_factory.mktemp("paused-broker"))
    yield broker
    os.kill(broker.proc.pid, signal.SIGCONT)  # never leave it stopped
    broker.stop()


@pytest.fixture(scope="module")
def paused_stack(own_broker: Pulsar, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    work: Path = tmp_path_factory.mktemp("paused-stack")
    gateway = start_gateway(work, own_broker.service_url, [MODEL], UPLION_PUBLISH_TIMEOUT_S="2")
    worker = start_worker(work, own_broker.service_url, MODEL)
    yield gateway
    worker.stop()
    gateway.stop()


def _chat(text: str) -> chat_pb2.ChatCompletionRequest:
    msg = chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))
    return chat_pb2.ChatCompletionRequest(model=MODEL, messages=[msg])


def _metadata(err: grpc.aio.AioRpcError) -> dict[str, str]:
    raw: Any = err.trailing_metadata() or ()
    return {str(k): str(v) for k, v in raw}


async def test_a_stopped_broker_is_a_prompt_503_and_service_resumes_when_it_is_back(
    paused_stack: Service, own_broker: Pulsar
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{paused_stack.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        assert (await stub.CreateChatCompletion(_chat("before"), timeout=30)).choices[0].message.content == "before"

        os.kill(own_broker.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                # the client would wait 30 s; the gateway answers as soon as the publish bound passes
                await stub.CreateChatCompletion(_chat("during"), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            meta = _metadata(err.value)
            assert json.loads(meta["x-uplion-error"])["error"]["code"] == "service_unavailable"
            assert meta["retry-after"] == "2"
        finally:
            os.kill(own_broker.proc.pid, signal.SIGCONT)

        # back: served again by the same gateway and worker, after their clients reconnect
        reply, refusals = None, []
        for _ in range(60):
            try:
                reply = await stub.CreateChatCompletion(_chat("after"), timeout=10)
                break
            except grpc.aio.AioRpcError as e:
                refusals.append(e.code())
                await asyncio.sleep(1)
        assert set(refusals) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
        assert reply is not None
        assert reply.choices[0].message.content == "after"
