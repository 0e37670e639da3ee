"""Benchmarks of the request path (gateway → Pulsar → worker → gateway) against in-process baselines.

    ./scripts/bench.sh spine        (or: .venv/bin/python -m bench.spine)

1. non-streaming chat at concurrency 64 through the platform vs the echo backend called in-process;
2. scale-out on a 20 ms sleep-bound model: 1 worker vs 4 workers (4 slots each);
3. streaming time to first chunk through the platform vs in-process.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

from uplion.devstack.platform import Service, start_gateway, start_worker
from uplion.devstack.pulsar import Pulsar, start_pulsar
from uplion.v1 import chat_pb2, inference_pb2_grpc
from uplion.worker.backends.echo import EchoBackend, EchoSettings

from .common import Result, closed_loop, rss_mb, run_timed, table

PROMPT = "the quick brown fox jumps over the lazy dog"


def request(model: str) -> chat_pb2.ChatCompletionRequest:
    msg = chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value=PROMPT))
    return chat_pb2.ChatCompletionRequest(model=model, messages=[msg])


async def direct(settings: EchoSettings, concurrency: int, duration: float, first_chunk: bool) -> Result:
    backend = EchoBackend(settings)
    req = request("echo")

    async def one() -> float | None:
        t0 = time.perf_counter()
        async for chunk in backend.chat(req):
            if first_chunk and chunk.choices and chunk.choices[0].delta.content:
                return (time.perf_counter() - t0) * 1000
        return None

    n, secs, lat, err = await closed_loop(one, concurrency, duration)
    return Result("in-process echo backend", n, secs, lat, errors=err)


async def through(gw: Service, model: str, concurrency: int, duration: float, stream: bool, label: str,
                  pids: list[int]) -> Result:  # fmt: skip
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        req = request(model)

        async def one() -> float | None:
            if not stream:
                await stub.CreateChatCompletion(req, timeout=60)
                return None
            t0 = time.perf_counter()
            first: float | None = None
            async for chunk in stub.StreamChatCompletion(req, timeout=60):
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = (time.perf_counter() - t0) * 1000
            return first

        n, secs, lat, err = await closed_loop(one, concurrency, duration)
    return Result(label, n, secs, lat, rss_mb(pids), err)


async def main(duration: float, work: Path) -> None:
    pulsar: Pulsar = start_pulsar(work / "pulsar")
    started: list[Service] = []
    try:
        models = ["echo", "sleep20-1", "sleep20-4"]
        gw = start_gateway(work, pulsar.service_url, models)
        started.append(gw)
        echo = start_worker(work, pulsar.service_url, "echo", UPLION_MAX_PROCESS_NUM="64")
        started.append(echo)
        pids = [gw.proc.pid, echo.proc.pid]

        # 0. per-request overhead without queueing (concurrency 1)
        base1 = await direct(EchoSettings(), 1, duration, first_chunk=False)
        plat1 = await through(gw, "echo", 1, duration, False, "gateway+Pulsar+echo worker (c=1)", pids)
        print(table("non-streaming chat, concurrency 1", [base1, plat1], {
            "platform overhead p50": f"{plat1.p50 - base1.p50:.2f} ms (goal <= 5 ms)",
        }), flush=True)  # fmt: skip

        # 1. overhead at concurrency 64
        base = await direct(EchoSettings(), 64, duration, first_chunk=False)
        plat = await through(gw, "echo", 64, duration, False, "gateway+Pulsar+echo worker (c=64)", pids)
        overhead = plat.p50 - base.p50
        print(table("non-streaming chat, concurrency 64", [base, plat], {
            "platform overhead p50": f"{overhead:.2f} ms (mostly queueing: 64 / req/s)",
            "throughput ratio platform/in-process": f"{plat.rps / base.rps:.4f}",
        }), flush=True)  # fmt: skip

        # 3. streaming time to first chunk, alone and under load
        rows, ratios = [], {}
        for c in (1, 16):
            sbase = await direct(EchoSettings(), c, duration, first_chunk=True)
            sbase.name = f"in-process echo, time to first chunk (c={c})"
            splat = await through(gw, "echo", c, duration, True, f"platform stream, time to first chunk (c={c})", pids)
            rows += [sbase, splat]
            ratios[f"TTFC overhead p50 at c={c}"] = f"{splat.p50 - sbase.p50:.2f} ms (goal <= 10 ms)"
        print(table("streaming time to first chunk", rows, ratios), flush=True)

        # 2. scale-out on a 20 ms sleep-bound model
        sleepy = {"UPLION_ECHO_FIRST_TOKEN_DELAY_MS": "20", "UPLION_MAX_PROCESS_NUM": "4"}
        one = [start_worker(work, pulsar.service_url, "sleep20-1", **sleepy)]
        four = [start_worker(work, pulsar.service_url, "sleep20-4", **sleepy) for _ in range(4)]
        started += one + four
        r1 = await through(
            gw, "sleep20-1", 64, duration, False, "20 ms model, 1 worker x 4 slots", [w.proc.pid for w in one]
        )
        r4 = await through(
            gw, "sleep20-4", 64, duration, False, "20 ms model, 4 workers x 4 slots", [w.proc.pid for w in four]
        )
        print(table("scale-out, concurrency 64", [r1, r4], {
            "throughput ratio 4 workers / 1 worker": f"{r4.rps / r1.rps:.2f}x (goal >= 3.6x; ideal 4.0x)",
            "ideal req/s (slots / 20 ms)": "1 worker: 200, 4 workers: 800",
        }), flush=True)  # fmt: skip
    finally:
        for svc in reversed(started):
            svc.stop()
        pulsar.stop()


if __name__ == "__main__":
    run_timed(main, __doc__)
