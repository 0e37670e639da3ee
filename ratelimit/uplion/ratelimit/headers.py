"""Response headers and 429 bodies for rate-limit decisions (pure).

Clients see both the IETF draft's `RateLimit-Limit/Remaining/Reset` (seconds) and OpenAI's
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a duration like "1m30s"), each
from the most constrained limit of its kind in the request."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Status:
    kind: str  # "requests" or "tokens"
    over: bool
    limit: int
    remaining: int
    reset_ms: int
    unit: str


def openai_duration(ms: int) -> str:
    """OpenAI's reset format: "20ms", "1s", "6m0s", "1h2m3s"."""
    if ms < 1000:
        return f"{ms}ms"
    seconds = -(-ms // 1000)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def tightest(statuses: list[Status]) -> Status | None:
    """The status a client should heed: any over limit first, then the least remaining."""
    if not statuses:
        return None
    return min(statuses, key=lambda s: (not s.over, s.remaining, -s.reset_ms))


def response_headers(statuses: list[Status], rejected: bool) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    overall = tightest(statuses)
    if overall is not None:
        out += [
            ("ratelimit-limit", str(overall.limit)),
            ("ratelimit-remaining", str(overall.remaining)),
            ("ratelimit-reset", str(-(-overall.reset_ms // 1000))),
        ]
    for kind in ("requests", "tokens"):
        s = tightest([x for x in statuses if x.kind == kind])
        if s is not None:
            out += [
                (f"x-ratelimit-limit-{kind}", str(s.limit)),
                (f"x-ratelimit-remaining-{kind}", str(s.remaining)),
                (f"x-ratelimit-reset-{kind}", openai_duration(s.reset_ms)),
            ]
    if rejected and overall is not None:
        out.append(("retry-after", str(max(1, -(-overall.reset_ms // 1000)))))
    return out


def over_limit_body(statuses: list[Status]) -> str:
    s = tightest([x for x in statuses if x.over]) or tightest(statuses)
    if s is None:
        message = "Rate limit reached."
        kind = "requests"
    else:
        kind = s.kind
        message = (f"Rate limit reached for {kind} per {s.unit}: limit {s.limit}, remaining {s.remaining}. "
                   f"Try again in {openai_duration(s.reset_ms)}.")  # fmt: skip
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": "rate_limit_exceeded"}})


def unavailable_body() -> str:
    return json.dumps({"error": {"message": "Rate limiting is unavailable; try again shortly.", "type": "api_error",
                                 "param": None, "code": "rate_limit_unavailable"}})  # fmt: skip
