"""The Responses API through the whole edge (Envoy, ext_authz, rate limiter, gateway, Pulsar, echo
worker, PostgreSQL for stored responses) with the official openai Python SDK and raw HTTP."""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import openai
import pytest

from tests.fixtures.openai.shapes import assert_same_shape, key_paths, load
from uplion.v1 import inference_pb2_grpc, responses_pb2

from .conftest import Edge

MODEL = "edge-echo"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather at a place",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}


def test_create_answers_a_stored_response(client: openai.OpenAI, edge: Edge) -> None:
    r = client.responses.create(model=MODEL, input="hello responses api", metadata={"k": "v"})
    assert r.id.startswith("resp_")
    assert r.object == "response"
    assert r.status == "completed"
    assert r.output_text == "hello responses api"
    assert r.usage is not None
    assert r.usage.input_tokens == 3
    assert r.usage.output_tokens == 3
    assert r.metadata == {"k": "v"}
    assert r.model_extra is not None
    assert r.model_extra["store"] is True  # OpenAI sends it; SDK 3.57's types lack it
    assert r._request_id  # x-request-id
    again = client.responses.retrieve(r.id)
    assert again.model_dump() == r.model_dump()
    items = client.responses.input_items.list(r.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == "hello responses api"  # type: ignore[union-attr,index]


def test_raw_json_and_stream_have_openais_shapes(base_url: str, auth: dict[str, str]) -> None:
    body = {"model": MODEL, "input": "shape check"}
    r = httpx.post(f"{base_url}/v1/responses", json=body, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert_same_shape(r.json(), load("response"))
    assert r.headers.get("x-request-id")
    assert "grpc-status" not in r.headers

    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("POST", f"{base_url}/v1/responses", json={**body, "stream": True}, headers=auth,
                      timeout=30) as s:  # fmt: skip
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in s.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert line != "data: [DONE]"
                data = json.loads(line.removeprefix("data: "))
                assert data["type"] == name
                events.append((name, data))
    recorded = {e["type"]: e for e in load("response_stream_events")}
    assert [n for n, _ in events][:4] == ["response.created", "response.in_progress", "response.output_item.added",
                                          "response.content_part.added"]  # fmt: skip
    assert events[-1][0] == "response.completed"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    for name, data in events:
        if name in ("response.created", "response.in_progress"):
            assert key_paths(data) <= key_paths(recorded[name]) | {"response.output"}, name
        elif name == "response.completed":
            assert_same_shape(data, recorded[name])
        else:
            assert key_paths(data) == key_paths(recorded[name]), name
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == "shape check"


def test_sdk_stream_gives_the_event_order_and_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="one two three four") as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types.count("response.output_text.delta") == 4
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]  # fmt: skip
    assert final.output_text == "one two three four"
    assert final.status == "completed"
    assert final.usage is not None
    assert final.usage.output_tokens == 4


def test_function_call_round_trip_and_a_chain_of_responses(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="weather in Paris", tools=[WEATHER],
                                    tool_choice={"type": "function", "name": "get_weather"})  # fmt: skip
    call = first.output[0]
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"text": "weather in Paris"}
    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )  # fmt: skip
    assert second.previous_response_id == first.id
    assert second.status == "completed"
    # the chat task held the whole conversation: the user's 3 words, the call's arguments, the output
    assert second.usage is not None
    assert first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    third = client.responses.create(model=MODEL, previous_response_id=second.id, input="and now Rome")
    assert third.output_text == "and now Rome"
    assert third.usage is not None
    assert third.usage.input_tokens > second.usage.input_tokens


def test_another_users_responses_are_not_found(client: openai.OpenAI, edge: Edge) -> None:
    mine = client.responses.create(model=MODEL, input="private words")
    _, _, other_key = edge.new_key()
    other = edge.sdk(other_key)
    with pytest.raises(openai.NotFoundError) as e:
        other.responses.retrieve(mine.id)
    assert e.value.body["code"] is None or isinstance(e.value.body["code"], str)  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=MODEL, input="x", previous_response_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(mine.id)
    assert client.responses.retrieve(mine.id).id == mine.id  # still there for its owner


def test_delete_and_store_false(client: openai.OpenAI) -> None:
    r = client.responses.create(model=MODEL, input="forget me")
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    unstored = client.responses.create(model=MODEL, input="never kept", store=False)
    assert unstored.model_extra is not None
    assert unstored.model_extra["store"] is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_bad_requests_are_400s_naming_the_member(base_url: str, auth: dict[str, str]) -> None:
    cases = [
        ({"model": MODEL, "input": "x", "not_a_field": 1}, "not_a_field"),
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": MODEL, "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": MODEL, "input": "x", "max_output_tokens": 10**6}, "max_output_tokens"),
    ]
    for body, param in cases:
        r = httpx.post(f"{base_url}/v1/responses", json=body, headers=auth, timeout=30)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, r.text
    r = httpx.post(f"{base_url}/v1/responses", json={"model": "no-such-model", "input": "x"}, headers=auth, timeout=30)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_a_capped_answer_is_incomplete(client: openai.OpenAI) -> None:
    words = " ".join(f"w{i}" for i in range(20))
    r = client.responses.create(model=MODEL, input=words, max_output_tokens=16)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None
    assert r.usage.output_tokens == 16


def test_native_grpc_clients_get_the_same_api(edge: Edge) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{edge.gateway.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        meta = (("x-uplion-user-id", "grpc-user"),)
        req = responses_pb2.CreateResponseRequest(model=MODEL)
        req.input.string_value = "typed client"
        r = stub.CreateResponse(req, metadata=meta, timeout=30)
        assert r.status == "completed"
        assert r.output[0].content[0].text == "typed client"
        events = list(stub.StreamResponse(req, metadata=meta, timeout=30))
        assert events[0].type == "response.created"
        assert events[-1].type == "response.completed"
        assert stub.GetResponse(responses_pb2.GetResponseRequest(response_id=r.id), metadata=meta, timeout=10) == r
        items = stub.ListResponseInputItems(responses_pb2.ListResponseInputItemsRequest(response_id=r.id),
                                            metadata=meta, timeout=10)  # fmt: skip
        assert items.data[0].content[0].text == "typed client"
        assert items.first_id == items.data[0].id
        with pytest.raises(grpc.RpcError) as e:
            stub.GetResponse(responses_pb2.GetResponseRequest(response_id=r.id),
                             metadata=(("x-uplion-user-id", "someone-else"),), timeout=10)  # fmt: skip
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        gone = stub.DeleteResponse(responses_pb2.DeleteResponseRequest(response_id=r.id), metadata=meta, timeout=10)
        assert gone.deleted


NATIVE = "edge-responses"  # its remote upstream serves /v1/responses itself: passed through


def test_a_native_upstream_gets_the_request_and_the_client_its_bytes(edge: Edge, base_url: str,
                                                                       auth: dict[str, str]) -> None:  # fmt: skip
    body = {"model": NATIVE, "input": [{"role": "user", "content": [{"type": "input_text", "text": "pass me on"}]}],
            "reasoning": {"effort": "low"}, "include": ["reasoning.encrypted_content"],
            "custom_member": {"nested": [1, None, "x"]}, "metadata": {"k": "v"}}  # fmt: skip
    r = httpx.post(f"{base_url}/v1/responses", json=body, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    received = edge.upstream.received[-1]
    # nothing dropped; added only the model's output cap, since the request named none (the worker's
    # UPLION_MAX_OUTPUT_TOKENS, the AIModel's maxOutputTokens: the upstream ends the answer there itself)
    assert received == {**body, "model": "fake-responses-model", "stream": False, "max_output_tokens": 4096}
    assert r.content == edge.upstream.sent[-1]  # the upstream's bytes, its reasoning item and billing included
    rid = r.json()["id"]
    again = httpx.get(f"{base_url}/v1/responses/{rid}", headers=auth, timeout=30)
    assert again.content == r.content
    items = httpx.get(f"{base_url}/v1/responses/{rid}/input_items", headers=auth, timeout=30).json()
    assert items["data"][0]["content"][0]["text"] == "pass me on"
    _, _, other_key = edge.new_key()
    other = {"authorization": f"Bearer {other_key}"}
    assert httpx.get(f"{base_url}/v1/responses/{rid}", headers=other, timeout=30).status_code == 404
    follow = {"model": NATIVE, "input": "more", "previous_response_id": rid, "max_output_tokens": 64}
    refused = httpx.post(f"{base_url}/v1/responses", json=follow, headers=other, timeout=30)
    assert refused.status_code == 404
    assert refused.json()["error"]["param"] == "previous_response_id"
    ok = httpx.post(f"{base_url}/v1/responses", json=follow, headers=auth, timeout=30)
    assert ok.status_code == 200, ok.text
    assert edge.upstream.received[-1]["previous_response_id"] == rid  # the upstream keeps the conversation
    assert edge.upstream.received[-1]["max_output_tokens"] == 64  # the client's own cap is kept


def test_a_native_upstreams_stream_is_relayed_event_by_event(edge: Edge, client: openai.OpenAI) -> None:
    with client.responses.stream(model=NATIVE, input="stream me through") as stream:
        events = list(stream)
        final = stream.get_final_response()
    n = len(events)
    assert [json.loads(raw)["type"] for raw in edge.upstream.sent[-n:]] == [e.type for e in events]
    assert events[-1].type == "response.completed"
    assert final.output_text == "stream me through "
    assert final.usage is not None
    assert final.usage.output_tokens == 3
    assert client.responses.retrieve(final.id).output_text == "stream me through "


def test_raw_native_stream_bytes(edge: Edge, base_url: str, auth: dict[str, str]) -> None:
    body = {"model": NATIVE, "input": "raw bytes please", "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/responses", json=body, headers=auth, timeout=30) as s:
        assert s.status_code == 200
        data = [line.removeprefix("data: ").encode() for line in s.iter_lines() if line.startswith("data: ")]
    assert data == edge.upstream.sent[-len(data) :]  # each event exactly as the upstream sent it
