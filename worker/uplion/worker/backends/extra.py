"""JSON members the contract does not name, both ways (pure functions).

Requests: a remote model's request carries the client's unknown members in `extra_json`, laid out
as the request is (a member of a known nested object under that object's name, one of a list
element in a list of the same length); `overlay` puts each back where the client sent it before the
body goes to the upstream.

Answers: `split` takes from each upstream object the members the contract lacks (`service_tier`,
`usage.prompt_tokens_details`, a choice's `logprobs`, a delta's `annotations`, ...) in the same
layout, for the answer's `extra_json`; the gateway lays them over the JSON it writes. `fold` adds a
streamed chunk's members to a non-streamed answer's: lists are joined (`logprobs.content`), objects
merged, strings joined inside a delta (`reasoning_content`) and otherwise replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from uplion.core.json_members import dumps, loads, overlay

JsonObject = dict[str, Any]
__all__ = ["EXTRA", "dumps", "fold", "loads", "overlay", "split"]
EXTRA = "extra_json"
_FREE_FORM = {"google.protobuf.Value", "google.protobuf.Struct", "google.protobuf.ListValue"}


def split(obj: Mapping[str, Any], descriptor: Any) -> JsonObject:
    """The non-null members of an upstream object (recursively, through the contract's nested
    messages and lists) that `descriptor` does not name, laid out as the object is."""
    extra: JsonObject = {}
    fields = descriptor.fields_by_name
    for key, value in obj.items():
        if value is None:
            continue
        field = fields.get(key)
        if field is None or field.name == EXTRA:
            extra[key] = value
            continue
        nested = field.message_type
        if nested is None or nested.full_name in _FREE_FORM or nested.GetOptions().map_entry:
            continue
        if field.is_repeated and isinstance(value, list):
            items = [split(v, nested) if isinstance(v, dict) else {} for v in value]
            if any(items):
                extra[key] = items
        elif isinstance(value, dict) and (more := split(value, nested)):
            extra[key] = more
    return extra


def fold(into: JsonObject, more: Mapping[str, Any], join_strings: bool = False) -> JsonObject:
    """`more` added to `into` (in place), as a streamed piece adds to the whole: lists are joined,
    objects folded member by member, strings joined when `join_strings` (a delta's text), anything
    else replaced by the newer value. Returns `into`."""
    for key, value in more.items():
        have = into.get(key)
        if isinstance(have, list) and isinstance(value, list):
            into[key] = have + value
        elif isinstance(have, dict) and isinstance(value, dict):
            fold(have, value, join_strings)
        elif join_strings and isinstance(have, str) and isinstance(value, str):
            into[key] = have + value
        elif value is not None:
            into[key] = value
    return into
