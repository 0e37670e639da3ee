"""The CLI's human-readable output (pure): a response's list as an aligned table, anything else as
`key: value` lines. Nested fields are flattened with dots (`status.state`), repeated scalars joined
with commas, and int64 counts (strings in protobuf's JSON) printed as the numbers they are."""

from __future__ import annotations

from typing import Any

MAX_CELL = 48
# the columns worth a terminal's width, per list field of a response; others print every scalar
PREFERRED = {
    "models": ["name", "spec.model", "spec.type", "status.state", "status.ready_replicas", "status.replicas",
               "backlog", "status.reason"],
    "users": ["user_id", "email", "role", "disabled", "tier", "quota.limit_micro_credits", "quota.used_micro_credits"],
    "tokens": ["token_id", "name", "scope", "disabled", "prefix", "allowed_models", "expires_at"],
    "events": ["last_time", "type", "reason", "count", "source", "message"],
}  # fmt: skip


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def cell(value: Any) -> str:
    if isinstance(value, list):
        text = ",".join(cell(v) for v in value)
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif value is None:
        text = ""
    else:
        text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _nested_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def table(rows: list[dict[str, Any]], preferred: list[str] | None = None) -> str:
    flat = [flatten(r) for r in rows]
    seen: list[str] = []
    for r in flat:
        seen += [
            k for k, v in r.items() if k not in seen and not (isinstance(v, list) and v and isinstance(v[0], dict))
        ]
    columns = [c for c in preferred if c in seen] if preferred else seen
    columns = columns or seen
    cells = [[cell(r.get(c)) for c in columns] for r in flat]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def render(result: dict[str, Any]) -> str:
    """A response (protobuf JSON with proto field names) for a terminal."""
    lists = {k: v for k, v in result.items() if isinstance(v, list) and all(isinstance(i, dict) for i in v)}
    if len(lists) == 1:
        key, rows = next(iter(lists.items()))
        out = table(rows, PREFERRED.get(key)) if rows else f"(no {key})"
        rest = {k: v for k, v in result.items() if k != key and v not in ("", None, [])}
        return out + "".join(f"\n{k}: {cell(v)}" for k, v in rest.items())
    width = max((len(k) for k in flatten(result)), default=0)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}" for k, v in flatten(result).items())
