"""Issue #15: native gRPC clients through the edge. grpcurl (the Go command-line client, built from
the Go module proxy by uplion.devstack.gotools.grpcurl) lists, describes and calls the gateway's
services through Envoy with uplion's filters, by server reflection: a bidi-streaming RPC whose
request the Lua filter must not buffer (it never ends while the call waits for answers). Reflection
needs a key like every RPC, and passes the rate limiter; gRPC health checking answers without one.
Unary inference RPCs keep their token estimate."""

from __future__ import annotations

import base64
import json
import os
import queue
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from uplion.devstack.gotools import grpcurl
from uplion.edge.filters import KEYLESS_METHODS, STREAMING_REQUEST_METHODS
from uplion.v1 import admin_pb2, chat_pb2, inference_pb2_grpc, models_pb2

from .conftest import Edge

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "uplion.v1.InferenceService"
CHAT = {"model": "edge-echo", "messages": [{"role": "user", "content": "one two three"}]}
CALL_BOUND = "60"  # grpcurl's -max-time: a bound on a call that would otherwise hang, not a timing assert


def run_grpcurl(edge: Edge, *args: str, key: str | None = None, data: Any = None, protoset: Path | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """grpcurl against the edge (plaintext HTTP/2 on its one port): flags, then the address, then `args`."""
    flags = ["-plaintext", "-max-time", CALL_BOUND]
    if key is not None:
        flags += ["-H", f"authorization: Bearer {key}"]
    if data is not None:
        flags += ["-d", json.dumps(data)]
    if protoset is not None:
        flags += ["-protoset", str(protoset)]
    out = subprocess.run([str(grpcurl()), *flags, edge.url.removeprefix("http://"), *args], capture_output=True,
                         text=True, timeout=float(CALL_BOUND) + 30)  # fmt: skip
    if check:
        assert out.returncode == 0, f"grpcurl {' '.join(args)}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def json_stream(text: str) -> list[dict[str, Any]]:
    """The JSON objects grpcurl prints one after another (one per response message)."""
    decoder, i = json.JSONDecoder(), 0
    objects: list[dict[str, Any]] = []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return objects
        obj, i = decoder.raw_decode(text, i)
        objects.append(obj)


@pytest.fixture(scope="module")
def health_protoset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """grpc.health.v1 as a descriptor set: without a key grpcurl cannot ask the server by reflection."""
    files = descriptor_pb2.FileDescriptorSet()
    health_pb2.DESCRIPTOR.CopyToProto(files.file.add())
    path = tmp_path_factory.mktemp("protoset") / "health.protoset"
    path.write_bytes(files.SerializeToString())
    return path


@pytest.fixture
def channel(edge: Edge) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(edge.url.removeprefix("http://")) as ch:
        yield ch


def key_metadata(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def test_list_with_a_key_lists_the_services(edge: Edge) -> None:
    services = run_grpcurl(edge, "list", key=edge.api_key).stdout.split()
    assert SERVICE in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    methods = run_grpcurl(edge, "list", SERVICE, key=edge.api_key).stdout.split()
    assert {f"{SERVICE}.CreateChatCompletion", f"{SERVICE}.StreamChatCompletion", f"{SERVICE}.ListModels"} <= set(
        methods
    )


def test_describe_with_a_key(edge: Edge) -> None:
    service = run_grpcurl(edge, "describe", SERVICE, key=edge.api_key).stdout
    assert f"{SERVICE} is a service:" in service
    stream = (
        "rpc StreamChatCompletion ( .uplion.v1.ChatCompletionRequest )"
        " returns ( stream .uplion.v1.ChatCompletionChunk );"
    )
    assert stream in service
    message = run_grpcurl(edge, "describe", "uplion.v1.ChatCompletionRequest", key=edge.api_key).stdout
    assert "uplion.v1.ChatCompletionRequest is a message:" in message
    assert "string model = " in message


def test_unary_chat_by_reflection(edge: Edge) -> None:
    out = run_grpcurl(edge, f"{SERVICE}/CreateChatCompletion", key=edge.api_key, data=CHAT).stdout
    [reply] = json_stream(out)
    assert reply["model"] == "edge-echo"
    assert reply["choices"][0]["message"]["content"] == "one two three"
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_server_streaming_chat_by_reflection(edge: Edge) -> None:
    out = run_grpcurl(edge, f"{SERVICE}/StreamChatCompletion", key=edge.api_key, data=CHAT).stdout
    chunks = json_stream(out)
    assert len(chunks) > 1
    text = "".join(c["choices"][0].get("delta", {}).get("content", "") for c in chunks if c.get("choices"))
    assert text == "one two three"


def test_without_a_key_reflection_is_unauthenticated(edge: Edge) -> None:
    out = run_grpcurl(edge, "list", check=False)
    assert out.returncode != 0
    assert "code = Unauthenticated" in out.stderr, out.stderr
    wrong = run_grpcurl(edge, "list", key="upl-not-a-key", check=False)
    assert wrong.returncode != 0
    assert "code = Unauthenticated" in wrong.stderr, wrong.stderr
    # the same with a call: grpcurl cannot even learn the method without reflection
    call = run_grpcurl(edge, f"{SERVICE}/CreateChatCompletion", data=CHAT, check=False)
    assert call.returncode != 0
    assert "Unauthenticated" in call.stderr, call.stderr


def test_health_answers_without_a_key(edge: Edge, health_protoset: Path, channel: grpc.Channel) -> None:
    for service in ("", SERVICE):
        out = run_grpcurl(edge, "grpc.health.v1.Health/Check", data={"service": service}, protoset=health_protoset)
        assert json_stream(out.stdout) == [{"status": "SERVING"}]
    # Watch (server streaming) too: its first message is the current status
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=60)
    try:
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        watch.cancel()
    # keyless is health checking only: the inference service next to it still needs a key
    with pytest.raises(grpc.RpcError) as refused:
        inference_pb2_grpc.InferenceServiceStub(channel).ListModels(models_pb2.ListModelsRequest(), timeout=60)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_bidi_reflection_is_interactive_through_the_edge(edge: Edge, channel: grpc.Channel) -> None:
    """Each answer of the bidi stream arrives while the request stream is still open: the client
    sends its second request only after reading the first answer, which a buffering edge (waiting
    for the request stream's end) would never deliver."""
    outbox: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        while (ask := outbox.get()) is not None:
            yield ask

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    stream = stub.ServerReflectionInfo(requests(), metadata=key_metadata(edge.api_key), timeout=60)
    try:
        outbox.put(reflection_pb2.ServerReflectionRequest(list_services=""))
        listed = next(stream)
        outbox.put(reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE))
        described = next(stream)
    finally:
        outbox.put(None)  # the request stream ends here, after both answers
        stream.cancel()
    assert SERVICE in [s.name for s in listed.list_services_response.service]
    protos = described.file_descriptor_response.file_descriptor_proto
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in protos]
    assert any(s.name == "InferenceService" for f in files for s in f.service)


def test_reflection_passes_the_rate_limiter(edge: Edge, channel: grpc.Channel) -> None:
    """The rate limiter runs on reflection calls, with the identity ext_authz set: a member allowed
    one request a day (the accounts service publishes the limit before UpdateUser returns) makes one
    reflection call, and the next is refused."""
    user_id, _, key = edge.new_key()
    edge.admin.call("UpdateUser", admin_pb2.UpdateUserRequest(
        user_id=user_id, rate_limits=admin_pb2.RateLimits(requests_per_day=1)))  # fmt: skip
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    def list_services() -> reflection_pb2.ServerReflectionResponse:
        ask = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        answer: reflection_pb2.ServerReflectionResponse = next(
            stub.ServerReflectionInfo(ask, metadata=key_metadata(key), timeout=60)
        )
        return answer

    assert SERVICE in [s.name for s in list_services().list_services_response.service]
    with pytest.raises(grpc.RpcError) as refused:
        list_services()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unary_inference_rpc_keeps_its_token_estimate(edge: Edge, channel: grpc.Channel) -> None:
    """Only the streamed-request methods skip the body: a unary chat over native gRPC still reserves
    its estimate (body / 4 plus the default output), which a member allowed 100 tokens a day cannot
    afford, while reflection (no tokens) still passes for the same member."""
    user_id, _, key = edge.new_key()
    edge.admin.call("UpdateUser", admin_pb2.UpdateUserRequest(
        user_id=user_id, rate_limits=admin_pb2.RateLimits(tokens_per_day=100)))  # fmt: skip
    request = chat_pb2.ChatCompletionRequest(model="edge-echo")
    request.messages.add(role="user").content.string_value = "hi"
    with pytest.raises(grpc.RpcError) as refused:
        inference_pb2_grpc.InferenceServiceStub(channel).CreateChatCompletion(
            request, metadata=key_metadata(key), timeout=60
        )
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert SERVICE in run_grpcurl(edge, "list", key=key).stdout.split()


# Node.js (a prerequisite of the suite) is the HTTP/2 client that can send a gRPC call the way no gRPC
# library would (another :method, a query string): what a client trying to skip the estimate could do.
RAW_H2_CALL = """
const http2 = require('node:http2');
const session = http2.connect(process.env.EDGE_URL);
const req = session.request({':method': process.env.CALL_METHOD, ':path': process.env.CALL_PATH,
                             'content-type': 'application/grpc', 'te': 'trailers',
                             'authorization': process.env.CALL_AUTH}, {endStream: false});  // GET too has a body
const out = {headers: {}, trailers: {}, body: []};
req.on('response', (h) => { out.headers = h; });
req.on('trailers', (t) => { out.trailers = t; });
req.on('data', (d) => { out.body.push(d); });
req.on('close', () => {
  out.body = Buffer.concat(out.body).toString('base64');
  console.log(JSON.stringify(out));
  session.close();
});
req.end(Buffer.from(process.env.CALL_BODY, 'base64'));
"""


def raw_grpc_call(edge: Edge, key: str, method: str, path: str, message: bytes) -> tuple[str, bytes]:
    """(grpc-status, response body) of one call made by hand over HTTP/2."""
    frame = b"\0" + struct.pack(">I", len(message)) + message
    env = {**os.environ, "EDGE_URL": edge.url, "CALL_METHOD": method, "CALL_PATH": path,
           "CALL_AUTH": f"Bearer {key}", "CALL_BODY": base64.b64encode(frame).decode()}  # fmt: skip
    out = subprocess.run(["node", "-e", RAW_H2_CALL], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    status = result["trailers"].get("grpc-status", result["headers"].get("grpc-status"))
    return status, base64.b64decode(result["body"])


def test_no_unary_inference_call_skips_its_token_estimate(edge: Edge) -> None:
    """The ways a client could send a chat call that the Lua filter does not buffer (another method,
    a query string, a streamed method's path) get no completion: the query string is estimated
    (and refused here by the member's 100 tokens a day), the edge refuses any method but POST
    (UNIMPLEMENTED, before any service sees it), and the reflection path runs reflection, whatever
    the message."""
    user_id, _, key = edge.new_key()
    edge.admin.call("UpdateUser", admin_pb2.UpdateUserRequest(
        user_id=user_id, rate_limits=admin_pb2.RateLimits(tokens_per_day=100)))  # fmt: skip
    request = chat_pb2.ChatCompletionRequest(model="edge-echo")
    request.messages.add(role="user").content.string_value = "hi"
    chat = request.SerializeToString()
    path = f"/{SERVICE}/CreateChatCompletion"
    assert raw_grpc_call(edge, key, "POST", path, chat) == ("8", b"")  # RESOURCE_EXHAUSTED, as any client
    assert raw_grpc_call(edge, key, "POST", path + "?estimate=no", chat) == ("8", b"")
    for method in ("GET", "PUT", "PATCH"):
        assert raw_grpc_call(edge, key, method, path, chat) == ("12", b""), method  # refused at the edge
    status, body = raw_grpc_call(edge, key, "POST", STREAMING_REQUEST_METHODS[1], chat)
    assert status == "0"
    answer = reflection_pb2.ServerReflectionResponse.FromString(body[5:])
    assert answer.WhichOneof("message_response") == "error_response"


def test_every_streamed_request_method_of_the_contract_is_unbuffered() -> None:
    """A client- or bidi-streaming RPC added to proto/ must be listed for the Lua filter (else its
    calls hang at the edge); reflection's own methods are listed; health checking is keyless."""
    files = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen" / "descriptor" / "uplion.pb").read_bytes())
    streamed = {
        f"/{f.package}.{s.name}/{m.name}" for f in files.file for s in f.service for m in s.method if m.client_streaming
    }
    assert streamed <= set(STREAMING_REQUEST_METHODS)
    reflection = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].methods_by_name["ServerReflectionInfo"]
    assert reflection.client_streaming
    assert f"/{reflection.full_name.rsplit('.', 1)[0]}/{reflection.name}" in STREAMING_REQUEST_METHODS
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    assert set(KEYLESS_METHODS) == {f"/{health.full_name}/{m}" for m in ("Check", "Watch")}
