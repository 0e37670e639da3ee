"""The Responses API bridge as pure functions: input items in (normalized, refused by path), the chat
task they become, and the answer out as a `response` or OpenAI's typed events, compared by key sets
with the shapes recorded from OpenAI's reference (tests/fixtures/openai/response*.json)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from openai.types.responses import Response, ResponseInputItem, ResponseItem
from pydantic import TypeAdapter

from tests.fixtures.openai.shapes import assert_same_shape, key_paths, load
from uplion.core.errors import ApiError
from uplion.gateway import responses_json as rj
from uplion.gateway.response_store import Stored
from uplion.gateway.responses_api import conversation, page
from uplion.gateway.responses_bridge import Stream, failed, from_chat, skeleton
from uplion.gateway.responses_items import (
    chat_request,
    normalize_input,
    references,
    resolve_references,
    response_of_item,
    task_of_response,
)
from uplion.v1 import chat_pb2, common_pb2, responses_pb2

TASK = "0123456789abcdef0123456789abcdef"
R = responses_pb2


def _request(**body: Any) -> R.CreateResponseRequest:
    return json_format.ParseDict({"model": "echo", **body}, R.CreateResponseRequest())


def _input(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


def test_recorded_shapes_are_what_the_official_sdk_types_read() -> None:
    for name in ("response", "response_function_call"):
        obj = load(name)
        assert Response.model_validate(obj).model_dump(mode="json", exclude_unset=True).keys() == obj.keys()
    for item in load("response_input_items")["data"]:
        TypeAdapter(ResponseItem).validate_python(item)


def test_a_string_input_is_one_user_message_with_an_id_from_its_response() -> None:
    items = normalize_input(_input("hello there"), TASK)
    assert items == [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}],
                      "id": f"msg_{TASK}i0", "status": "completed"}]  # fmt: skip
    assert response_of_item(items[0]["id"]) == f"resp_{TASK}"
    assert task_of_response(f"resp_{TASK}") == TASK
    assert task_of_response("resp_other") is None
    TypeAdapter(ResponseInputItem).validate_python(items[0])


@pytest.mark.parametrize(
    ("value", "param"),
    [
        (None, "input"),
        ([], "input"),
        (42, "input"),
        (["text"], "input[0]"),
        ([{"role": "robot", "content": "x"}], "input[0].role"),
        ([{"role": "user", "content": [{"type": "input_audio"}]}], "input[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}], "input[0].content[0]"),
        ([{"role": "user", "content": 5}], "input[0].content"),
        ([{"type": "function_call", "call_id": "c", "name": "f"}], "input[0].arguments"),
        ([{"type": "function_call_output", "output": "x"}], "input[0].call_id"),
        ([{"type": "web_search_call", "id": "ws"}], "input[0].type"),
    ],
)
def test_bad_input_is_a_400_naming_the_member(value: Any, param: str) -> None:
    with pytest.raises(ApiError) as e:
        normalize_input(_input(value), TASK)
    assert e.value.param == param, e.value.message


def test_a_conversation_becomes_the_chat_task_with_tool_calls_joined() -> None:
    req = _request(
        instructions="Be brief.", max_output_tokens=64, temperature=0.2, stream=True,
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": True}],
        tool_choice={"type": "function", "name": "get_weather"},
        text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                                         {"type": "input_image", "image_url": "https://x/y.png"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{\"a\":1}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"role": "assistant", "content": "It is sunny."},
        ],
    )  # fmt: skip
    items = normalize_input(req.input, TASK)
    chat = json_format.MessageToDict(chat_request(req, items, stream=True), preserving_proto_field_name=True)
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    image = {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "auto"}}
    assert chat["messages"][1]["content"] == [{"type": "text", "text": "weather?"}, image]
    assert [c["id"] for c in chat["messages"][2]["tool_calls"]] == ["call_1", "call_2"]
    assert chat["messages"][3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert chat["max_completion_tokens"] == 64
    assert chat["tools"][0]["function"]["name"] == "get_weather"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["response_format"]["type"] == "json_schema"
    assert chat["response_format"]["json_schema"]["name"] == "w"
    assert chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"background": True}, "background"),
    ],
)
def test_settings_the_bridge_cannot_honour_are_a_400(body: dict[str, Any], param: str) -> None:
    req = _request(input="hi", **body)
    with pytest.raises(ApiError) as e:
        chat_request(req, normalize_input(req.input, TASK), stream=False)
    assert e.value.param == param


def test_item_references_are_resolved_from_stored_items() -> None:
    items = normalize_input(_input([{"type": "item_reference", "id": f"msg_{TASK}o0"}, "x"][:1]), "f" * 32)
    assert references(items) == {f"resp_{TASK}"}
    known = {f"msg_{TASK}o0": {"type": "message", "role": "assistant", "content": [], "id": f"msg_{TASK}o0"}}
    assert resolve_references(items, known)[0]["role"] == "assistant"
    with pytest.raises(ApiError) as e:
        resolve_references(items, {})
    assert e.value.param == "input[0].id"


def _answer(content: str | None = "Hi there", finish: str = "stop", calls: int = 0) -> chat_pb2.ChatCompletion:
    msg = chat_pb2.ChatCompletionMessage(role="assistant")
    if content is not None:
        msg.content = content
    for i in range(calls):
        fn = chat_pb2.FunctionCall(name="get_weather", arguments="{}")
        msg.tool_calls.append(chat_pb2.ToolCall(id=f"call_{i}", type="function", function=fn))
    return chat_pb2.ChatCompletion(
        choices=[chat_pb2.ChatCompletionChoice(index=0, message=msg, finish_reason=finish)],
        usage=common_pb2.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
    )


def test_a_chat_answer_is_a_response_of_openais_shape() -> None:
    r = from_chat(skeleton(_request(input="hi"), f"resp_{TASK}", 1700000000, True), _answer(), TASK)
    out = rj.response(r)
    assert_same_shape(out, load("response"))
    assert out["output"][0]["content"][0]["text"] == "Hi there"
    assert out["usage"]["input_tokens"] == 3
    assert out["usage"]["total_tokens"] == 5
    Response.model_validate(out)

    tools = load("response_function_call")["tools"]
    r = from_chat(skeleton(_request(input="hi", tools=tools), f"resp_{TASK}", 1, True),
                  _answer(None, "tool_calls", calls=1), TASK)  # fmt: skip
    out = rj.response(r)
    assert_same_shape(out, load("response_function_call"))
    assert out["output"][0]["call_id"] == "call_0"
    assert out["output"][0]["id"] == f"fc_{TASK}o0"


def test_a_length_cut_answer_is_incomplete_and_a_failure_is_failed() -> None:
    base = skeleton(_request(input="hi", max_output_tokens=16), f"resp_{TASK}", 1, False)
    r = from_chat(base, _answer(finish="length"), TASK)
    assert (r.status, r.incomplete_details.reason, r.output[0].status) == ("incomplete", "max_output_tokens",
                                                                          "incomplete")  # fmt: skip
    f = rj.response(failed(base, ApiError(14, "upstream down", "api_error", None, "upstream_unavailable")))  # type: ignore[arg-type]
    assert f["status"] == "failed"
    assert f["error"] == {"code": "upstream_unavailable", "message": "upstream down"}


def _chunk(content: str | None = None, finish: str | None = None, call: tuple[int, str, str] | None = None,
           index: int = 0) -> chat_pb2.ChatCompletionChunk:  # fmt: skip
    delta = chat_pb2.ChatCompletionDelta()
    if content is not None:
        delta.content = content
    if call is not None:
        i, name, args = call
        t = delta.tool_calls.add(index=i)
        if name:
            t.id, t.type, t.function.name = f"call_{i}", "function", name
        t.function.arguments = args
    choice = chat_pb2.ChatCompletionChunkChoice(index=index, delta=delta)
    if finish:
        choice.finish_reason = finish
    return chat_pb2.ChatCompletionChunk(choices=[choice])


def _run(chunks: list[chat_pb2.ChatCompletionChunk]) -> list[dict[str, Any]]:
    s = Stream(skeleton(_request(input="hi"), f"resp_{TASK}", 1, True), TASK)
    events = s.start()
    for c in chunks:
        events += s.chunk(c)
    events += s.end(common_pb2.Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3))
    return [rj.event(e) for e in events]


def _assert_events_shaped(events: list[dict[str, Any]], recorded: list[dict[str, Any]]) -> None:
    by_type: dict[str, list[set[str]]] = {}
    for e in recorded:
        by_type.setdefault(e["type"], []).append(key_paths(e))
    for e in events:
        assert e["type"] in by_type, e["type"]
        if e["type"] not in ("response.output_item.added", "response.output_item.done", "response.completed"):
            assert key_paths(e) in by_type[e["type"]], e
        else:
            assert key_paths(e) <= set.union(*by_type[e["type"]]) | key_paths(load("response_stream_events")[-1]), e


def test_a_text_stream_is_openais_event_sequence() -> None:
    events = _run([_chunk("Hi"), _chunk(" there"), _chunk(index=1, content="ignored"), _chunk(finish="stop")])
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    recorded = load("response_stream_events")
    for ours, theirs in zip(events, recorded[:4], strict=False):
        assert key_paths(ours) == key_paths(theirs), ours["type"]
    assert_same_shape(events[-1], recorded[-1])
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hi there"
    assert events[-1]["response"]["status"] == "completed"
    assert events[-1]["response"]["usage"]["output_tokens"] == 2
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["usage"] is None


def test_a_function_call_stream_has_argument_deltas() -> None:
    events = _run([_chunk(call=(0, "get_weather", '{"loc')), _chunk(call=(0, "", 'ation":"Paris"}')),
                   _chunk(finish="tool_calls")])  # fmt: skip
    types = [e["type"] for e in events]
    assert types[2:-1] == ["response.output_item.added", "response.function_call_arguments.delta",
                           "response.function_call_arguments.delta", "response.function_call_arguments.done",
                           "response.output_item.done"]  # fmt: skip
    recorded = load("response_stream_function_call")
    expected = [recorded[0], recorded[1], recorded[1], recorded[2], recorded[3]]
    for ours, theirs in zip(events[2:-1], expected, strict=True):
        assert key_paths(ours) == key_paths(theirs), ours["type"]
    assert json.loads(events[-2]["item"]["arguments"]) == {"location": "Paris"}


def test_an_empty_answer_is_one_empty_message_and_a_cut_one_is_incomplete() -> None:
    events = _run([_chunk(finish="stop")])
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""
    events = _run([_chunk("a"), _chunk(finish="length")])
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_sse_names_the_event_and_ends_without_done() -> None:
    s = Stream(skeleton(_request(input="hi"), f"resp_{TASK}", 1, True), TASK)
    raw = rj.sse(s.start()[0])
    assert raw.startswith(b"event: response.created\ndata: {")
    assert raw.endswith(b"}\n\n")


def test_stored_conversations_and_input_item_pages() -> None:
    items = normalize_input(_input(["a", "b", "c"][:0] or "a"), TASK)
    r = from_chat(skeleton(_request(input="a"), f"resp_{TASK}", 1, True), _answer("b"), TASK)
    conv = conversation([Stored(r.id, None, items, r)])
    assert [i["type"] for i in conv] == ["message", "message"]
    assert conv[1]["role"] == "assistant"
    many = [{"id": f"i{n}"} for n in range(5)]
    assert page(many, "", 2, "desc") == ([{"id": "i4"}, {"id": "i3"}], True)
    assert page(many, "i1", 10, "asc") == ([{"id": "i2"}, {"id": "i3"}, {"id": "i4"}], False)
    assert_same_shape(rj.item_list(items, False), load("response_input_items"))
    assert_same_shape(rj.deleted("resp_x"), load("response_deleted"))
    assert rj.item(rj.item_from_json(items[0])) == items[0]
