"""OpenAI's Responses API objects as they come from an upstream that serves it itself (pure
functions): the passed-through request's body, the typed view of an answer or event (for typed
gRPC clients and the gateway's store), and its usage for billing. The upstream's JSON travels on
unchanged in `upstream_json`; the typed fields hold what the contract names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from uplion.v1 import common_pb2, responses_pb2

FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def typed_response(obj: dict[str, Any], raw: str) -> responses_pb2.Response:
    """The upstream's response as the contract's message (members it does not name, or shapes it
    cannot hold, are only in `upstream_json`)."""
    out = responses_pb2.Response()
    try:
        json_format.ParseDict(obj, out, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError):
        out.Clear()
        for name in ("id", "object", "status", "model"):
            if isinstance(obj.get(name), str):
                setattr(out, name, obj[name])
    usage = obj.get("usage")
    if isinstance(usage, Mapping):
        out.usage.CopyFrom(typed_usage(usage))
    out.upstream_json = raw
    return out


def typed_usage(u: Mapping[str, Any]) -> responses_pb2.ResponseUsage:
    details_in = u.get("input_tokens_details") or {}
    details_out = u.get("output_tokens_details") or {}
    return responses_pb2.ResponseUsage(
        input_tokens=int(u.get("input_tokens") or 0), output_tokens=int(u.get("output_tokens") or 0),
        total_tokens=int(u.get("total_tokens") or 0), cached_tokens=int(details_in.get("cached_tokens") or 0),
        reasoning_tokens=int(details_out.get("reasoning_tokens") or 0),
    )  # fmt: skip


def billed(u: responses_pb2.ResponseUsage) -> common_pb2.Usage:
    return common_pb2.Usage(prompt_tokens=u.input_tokens, completion_tokens=u.output_tokens,
                            total_tokens=u.input_tokens + u.output_tokens)  # fmt: skip


def typed_event(obj: Mapping[str, Any], raw: str) -> responses_pb2.ResponseStreamEvent:
    """An upstream event: its type and number (what the gateway needs), the rest only as JSON."""
    return responses_pb2.ResponseStreamEvent(type=str(obj.get("type") or ""),
                                             sequence_number=int(obj.get("sequence_number") or 0),
                                             upstream_json=raw)  # fmt: skip


def output_chars(obj: Mapping[str, Any]) -> int:
    """Characters of an event's text or arguments delta (for an estimate when no usage comes)."""
    delta = obj.get("delta")
    return len(delta) if isinstance(delta, str) else 0


def input_chars(request: responses_pb2.CreateResponseRequest) -> int:
    return len(json.dumps(json_format.MessageToDict(request.input))) + len(request.instructions)
