"""JSON members the contract does not name, carried as `extra_json` (a JSON object in text) beside a
typed message: the gateway and the remote worker lay them back over the JSON they write (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

JsonObject = dict[str, Any]


def overlay(into: JsonObject, extra: Mapping[str, Any]) -> JsonObject:
    """`extra`'s members laid over `into` (in place) at the same paths: a member `into` lacks, or has
    as a placeholder (null, `[]`), is taken; objects are merged member by member, lists element by
    element (by position); anything else `into` has wins. Returns `into`."""
    for key, value in extra.items():
        have = into.get(key)
        if have is None or (have == [] and value != []):
            into[key] = value
        elif isinstance(have, dict) and isinstance(value, dict):
            overlay(have, value)
        elif isinstance(have, list) and isinstance(value, list):
            for mine, theirs in zip(have, value, strict=False):
                if isinstance(mine, dict) and isinstance(theirs, dict):
                    overlay(mine, theirs)
    return into


def loads(extra_json: str) -> JsonObject:
    """A message's `extra_json` as an object ({} when empty or not an object; never parsed when empty)."""
    if not extra_json:
        return {}
    try:
        extra = json.loads(extra_json)
    except ValueError:
        return {}
    return extra if isinstance(extra, dict) else {}


def dumps(extra: Mapping[str, Any]) -> str:
    return json.dumps(extra, ensure_ascii=False, separators=(",", ":")) if extra else ""
