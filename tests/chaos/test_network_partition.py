"""The gateway and the broker separated by a dropped link, then healed, under a steady load of
streaming and non-streaming requests (issue 18).

The gateway runs in a network namespace of this test's own, joined to the host by a veth pair; it
reaches the session's broker (which listens and advertises on loopback) through two TCP forwarders
(`tcp_forward.py`: loopback inside the namespace → the host end of the link → the broker). Clients
call the gateway over the same link. The partition drops, inside the namespace only (iptables on its
end of the link), the packets between the gateway and the broker's forwarder, so clients still
reach the gateway while it cannot reach the broker.

What must hold: every call ends with the gateway's own answer before its deadline (none hangs until
the client gives up); a request made while the broker is unreachable is a 503 `service_unavailable`
(the publish bound); once the link is back every client is served again without restarting
anything; and every call has exactly one usage event (none lost, none twice)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from tests.spine.conftest import usage_events
from uplion.devstack.platform import Service, start_gateway, start_worker
from uplion.devstack.procs import Proc, free_port, spawn, wait_until
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import chat_pb2, inference_pb2_grpc, usage_pb2

REPO = Path(__file__).resolve().parents[2]
MODEL = f"part-echo-{uuid.uuid4().hex[:6]}"
DEADLINE_S = 20  # the gateway's default deadline here
PUBLISH_TIMEOUT_S = 2
CLIENT_TIMEOUT_S = 60  # far beyond the deadline: a call that reaches it was left hanging
LOOPS = 6
PARTITION_S = 10


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Link:
    ns: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str

    def exec(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *args]

    def drop(self, port: int) -> None:
        """Drops, inside the namespace, every packet to or from `port` on the host end of the link."""
        for rule in (["OUTPUT", "-o", self.ns_if, "-p", "tcp", "--dport", str(port)],
                     ["INPUT", "-i", self.ns_if, "-p", "tcp", "--sport", str(port)]):  # fmt: skip
            subprocess.run(self.exec("iptables", "-I", *rule, "-j", "DROP"), check=True, timeout=10)

    def heal(self) -> None:
        subprocess.run(self.exec("iptables", "-F"), check=True, timeout=10)


@pytest.fixture
def link() -> Iterator[Link]:
    tag = uuid.uuid4().hex[:6]
    net = int(tag[:2], 16)
    link = Link(f"upl-part-{tag}", f"vp{tag}h", f"vp{tag}n", f"10.211.{net}.1", f"10.211.{net}.2")
    ip("netns", "add", link.ns)
    try:
        ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if)
        ip("link", "set", link.ns_if, "netns", link.ns)
        ip("addr", "add", f"{link.host_addr}/30", "dev", link.host_if)
        ip("link", "set", link.host_if, "up")
        ip("netns", "exec", link.ns, "ip", "addr", "add", f"{link.ns_addr}/30", "dev", link.ns_if)
        ip("netns", "exec", link.ns, "ip", "link", "set", link.ns_if, "up")
        ip("netns", "exec", link.ns, "ip", "link", "set", "lo", "up")
        yield link
    finally:
        subprocess.run(["ip", "link", "del", link.host_if], capture_output=True, timeout=10)
        ip("netns", "del", link.ns)


def _forwarder(tmp_path: Path, argv: list[str], listen: str) -> Proc:
    proc = spawn("forward", argv, tmp_path / f"forward-{listen.replace(':', '-')}.log", cwd=REPO)
    wait_until(proc, lambda: "forwarding" in proc.log_path.read_text(), 20, interval=0.1)
    return proc


@dataclass
class Partitioned:
    gateway: Service
    target: str  # the gateway's address, on the namespace's end of the link
    link: Link
    hop_port: int  # the broker's forwarder on the host end of the link: what the partition cuts


@pytest.fixture
def partitioned(link: Link, broker: Pulsar, tmp_path: Path) -> Iterator[Partitioned]:
    broker_host, broker_port = broker.service_url.removeprefix("pulsar://").rsplit(":", 1)
    hop = free_port()
    procs = [
        _forwarder(tmp_path, [sys.executable, "-m", "tests.chaos.tcp_forward", f"{link.host_addr}:{hop}",
                              f"{broker_host}:{broker_port}"], "host"),
        _forwarder(tmp_path, link.exec(sys.executable, "-m", "tests.chaos.tcp_forward",
                                       f"{broker_host}:{broker_port}", f"{link.host_addr}:{hop}"), "ns"),
    ]  # fmt: skip
    port = free_port()
    services = [start_worker(tmp_path, broker.service_url, MODEL, UPLION_ECHO_TOKEN_DELAY_MS="20")]
    gateway = start_gateway(
        tmp_path, broker.service_url, [MODEL], port=port, wrap=link.exec(),
        UPLION_GATEWAY_LISTEN=f"{link.ns_addr}:{port}", UPLION_PUBLISH_TIMEOUT_S=str(PUBLISH_TIMEOUT_S),
        UPLION_DEFAULT_TIMEOUT_S=str(DEADLINE_S),
    )  # fmt: skip
    services.append(gateway)
    yield Partitioned(gateway, f"{link.ns_addr}:{port}", link, hop)
    link.heal()
    for svc in reversed(services):
        svc.stop()
    for proc in procs:
        proc.stop()


@dataclass
class Outcome:
    started: float
    ended: float
    streamed: bool
    code: grpc.StatusCode
    error_code: str = ""


def _chat(text: str, stream: bool) -> chat_pb2.ChatCompletionRequest:
    msg = chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))
    return chat_pb2.ChatCompletionRequest(model=MODEL, messages=[msg], stream=stream)


def _error_code(err: grpc.aio.AioRpcError) -> str:
    meta: Any = err.trailing_metadata() or ()
    raw = {str(k): str(v) for k, v in meta}.get("x-uplion-error")
    return str(json.loads(raw)["error"]["code"]) if raw else ""


async def _one(stub: Any, i: int) -> Outcome:  # an InferenceServiceStub on an aio channel
    stream = i % 2 == 1
    started = time.monotonic()
    try:
        if stream:
            chunks = [c async for c in stub.StreamChatCompletion(_chat(f"s{i} a b c", True), timeout=CLIENT_TIMEOUT_S)]
            assert chunks
        else:
            reply = await stub.CreateChatCompletion(_chat(f"u{i}", False), timeout=CLIENT_TIMEOUT_S)
            assert reply.choices[0].message.content == f"u{i}"
        return Outcome(started, time.monotonic(), stream, grpc.StatusCode.OK)
    except grpc.aio.AioRpcError as e:
        return Outcome(started, time.monotonic(), stream, e.code(), _error_code(e))


async def _load(target: str, stop: asyncio.Event, out: list[Outcome]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        i = 0
        while not stop.is_set():
            out.append(await _one(stub, i))
            i += 1
            await asyncio.sleep(0.05)


async def _drive(p: Partitioned) -> tuple[list[list[Outcome]], float, float]:
    stop = asyncio.Event()
    outcomes: list[list[Outcome]] = [[] for _ in range(LOOPS)]
    loops = [asyncio.create_task(_load(p.target, stop, out)) for out in outcomes]
    await asyncio.sleep(3)
    cut = time.monotonic()
    p.link.drop(p.hop_port)
    await asyncio.sleep(PARTITION_S)
    p.link.heal()
    healed = time.monotonic()
    # until every client has been served again (or long past any reconnect)
    for _ in range(120):
        if all(any(o.code == grpc.StatusCode.OK and o.started > healed for o in out) for out in outcomes):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    stop.set()
    await asyncio.gather(*loops)
    return outcomes, cut, healed


def test_a_partition_between_gateway_and_broker_fails_fast_and_heals(partitioned: Partitioned, broker: Pulsar) -> None:
    outcomes, cut, healed = asyncio.run(_drive(partitioned))
    calls = [o for out in outcomes for o in out]
    codes = {(o.code.name, o.error_code) for o in calls}

    # none was left hanging: the gateway answered every call itself, within its deadline
    assert all(o.ended - o.started < DEADLINE_S + 5 for o in calls), codes
    assert all(o.code != grpc.StatusCode.DEADLINE_EXCEEDED or o.ended - o.started >= DEADLINE_S - 1 for o in calls)
    # served before, refused during (a task the broker cannot take is a 503 at once), served after
    before = [o for o in calls if o.ended < cut]
    during = [o for o in calls if cut + 1 < o.started and o.ended < healed - 1]
    after = [o for o in calls if o.started > healed]
    assert before, "no request before the partition"
    assert all(o.code == grpc.StatusCode.OK for o in before), codes
    assert during, "no request was made while the link was down"
    assert all((o.code, o.error_code) == (grpc.StatusCode.UNAVAILABLE, "service_unavailable") for o in during), codes
    assert all(any(o.code == grpc.StatusCode.OK and o.started > healed for o in out) for out in outcomes), codes
    assert any(o.streamed and o.code == grpc.StatusCode.OK for o in after)

    # exactly one usage event per call: refused ones (never published) included, none lost, none twice
    events = asyncio.run(usage_events(broker, MODEL, len(calls), refused=None))
    assert len({e.event_id for e in events}) == len(events) == len(calls), (len(events), len(calls))
    served = sum(o.code == grpc.StatusCode.OK for o in calls)
    assert sum(e.outcome == usage_pb2.REQUEST_OUTCOME_COMPLETED for e in events) == served
