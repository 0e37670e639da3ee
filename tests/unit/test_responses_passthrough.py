"""Responses API requests for a remote upstream that serves the API itself (passed through, not
bridged), as pure functions: which models take them, the body the worker sends, the typed view of
the upstream's answer and events, and its usage; and an embedding answer's members the contract
lacks (`extra_json`)."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from tests.fixtures.openai.shapes import load
from uplion.core.aimodels import REMOTE_RESPONSES, backend_of, spec_problems
from uplion.core.errors import ApiError
from uplion.gateway import openai_json
from uplion.gateway import responses_json as rj
from uplion.gateway.registry import ModelRegistry
from uplion.gateway.responses_api import failure_event
from uplion.gateway.responses_items import raw_input_items
from uplion.v1 import responses_pb2
from uplion.worker.backends.openai_wire import embedding_response
from uplion.worker.backends.remote import _body
from uplion.worker.backends.responses_wire import billed, typed_event, typed_response

TASK = "0123456789abcdef0123456789abcdef"
REMOTE: dict[str, Any] = {
    "type": "remote",
    "model": "m",
    "baseURL": "https://x",
    "apiKeys": [{"secretName": "s", "key": "k"}],
}


def test_an_aimodel_declares_a_native_responses_upstream_and_the_registry_follows() -> None:
    assert backend_of({**REMOTE, "upstreamResponsesAPI": True}) == REMOTE_RESPONSES
    assert backend_of(REMOTE) == "remote"
    assert spec_problems({**REMOTE, "upstreamResponsesAPI": True}) == []
    assert spec_problems({"type": "echo", "model": "e", "upstreamResponsesAPI": True}) == [
        "upstreamResponsesAPI is for remote models"
    ]
    registry = ModelRegistry.static(("s-native", "s-remote"), remote=("s-remote",), responses=("s-native",))
    assert registry.serves_responses("s-native")
    assert registry.forwards_unknown("s-native")
    assert not registry.serves_responses("s-remote")
    registry.declare("ns/a", "declared", None, REMOTE_RESPONSES)
    assert registry.serves_responses("declared")
    assert registry.forwards_unknown("declared")
    registry.declare("ns/b", "declared", None, "remote")  # a bridged backend may take its tasks too
    assert not registry.serves_responses("declared")
    assert registry.forwards_unknown("declared")


def test_the_worker_sends_the_request_as_the_client_sent_it() -> None:
    body = {"model": "m", "input": [{"role": "user", "content": "hi", "x_part": 1}], "reasoning": {"effort": "low"},
            "include": ["reasoning.encrypted_content"], "vendor": {"deep": [1, None]}, "store": False}  # fmt: skip
    req = openai_json.parse_request(json.dumps(body).encode(), responses_pb2.CreateResponseRequest, lambda m: True)
    assert json.loads(req.extra_json) == {"vendor": {"deep": [1, None]}}
    assert json.loads(_body(req, "upstream-m", stream=True)) == {**body, "model": "upstream-m", "stream": True}


def test_the_upstreams_answer_is_kept_whole_and_typed_where_the_contract_can() -> None:
    answer = load("response")
    answer["billing"] = {"payer": "developer"}
    answer["output"].insert(0, {"id": "rs_1", "type": "reasoning", "summary": []})
    answer["instructions"] = [{"role": "system", "content": "a list, which the contract cannot hold"}]
    raw = json.dumps(answer)
    r = typed_response(answer, raw)
    assert r.upstream_json == raw
    assert r.id == answer["id"]
    assert r.status == "completed"
    assert rj.response_bytes(r) == raw.encode()  # REST clients get the upstream's bytes
    assert billed(r.usage).prompt_tokens == answer["usage"]["input_tokens"]
    assert r.usage.cached_tokens == 0
    assert r.usage.output_tokens == answer["usage"]["output_tokens"]
    plain = typed_response(load("response"), "{}")
    assert plain.output[0].content[0].text == load("response")["output"][0]["content"][0]["text"]
    event = typed_event({"type": "response.output_text.delta", "sequence_number": 4, "delta": "x"}, '{"raw":1}')
    assert (event.type, event.sequence_number) == ("response.output_text.delta", 4)
    assert rj.sse(event) == b'event: response.output_text.delta\ndata: {"raw":1}\n\n'


def test_a_passed_through_stream_that_fails_ends_with_openais_error_event() -> None:
    e = failure_event(ApiError(14, "upstream down", "api_error", None, "upstream_unavailable"), 7)  # type: ignore[arg-type]
    assert rj.event(e) == {"type": "error", "sequence_number": 7, "code": "upstream_unavailable",
                           "message": "upstream down", "param": None}  # fmt: skip


def test_passed_through_input_is_stored_as_sent_with_ids() -> None:
    sent: Any = [{"role": "user", "content": "a"}, {"type": "input_file", "file_id": "f"}]
    value = json_format.ParseDict(sent,
                                  responses_pb2.CreateResponseRequest().input)  # fmt: skip
    items = raw_input_items(value, TASK)
    assert [i["id"] for i in items] == [f"msg_{TASK}i0", f"msg_{TASK}i1"]
    assert items[1]["file_id"] == "f"
    assert rj.item_from_json(items[0]).id == f"msg_{TASK}i0"  # a shape the contract cannot hold keeps its id


def test_an_embedding_answers_unknown_members_reach_the_client() -> None:
    upstream = {"object": "list", "model": "e", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
                "usage": {"prompt_tokens": 2, "total_tokens": 2}, "service_tier": "default"}  # fmt: skip
    out = openai_json.embedding_list(embedding_response(upstream))
    assert out == upstream
