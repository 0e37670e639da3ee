"""Rows to admin API messages and back (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from asyncpg import Record
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.timestamp_pb2 import Timestamp

from uplion.v1 import admin_pb2


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


def from_ts(value: Timestamp) -> datetime | None:
    """An unset Timestamp (0) means none."""
    if value.seconds == 0 and value.nanos == 0:
        return None
    return value.ToDatetime(tzinfo=UTC)


def limits_json(limits: admin_pb2.RateLimits) -> str:
    return json.dumps(MessageToDict(limits, preserving_proto_field_name=True), sort_keys=True)


def limits_from(raw: Any) -> admin_pb2.RateLimits:
    data = json.loads(raw) if isinstance(raw, str) else (raw or {})
    return ParseDict(data, admin_pb2.RateLimits())


def quota(r: Record) -> admin_pb2.Quota:
    q = admin_pb2.Quota(used_micro_credits=r["used_credits"] or 0, used_tokens=r["used_tokens"] or 0)
    if r["quota_limit_micro_credits"] is not None:
        q.limit_micro_credits = r["quota_limit_micro_credits"]
    if r["quota_limit_tokens"] is not None:
        q.limit_tokens = r["quota_limit_tokens"]
    return q


def user(r: Record) -> admin_pb2.User:
    return admin_pb2.User(
        user_id=r["user_id"], email=r["email"], display_name=r["display_name"], role=r["role"],
        disabled=r["disabled"], quota=quota(r), rate_limits=limits_from(r["rate_limits"]),
        created_at=ts(r["created_at"]), tier=r["tier"],
    )  # fmt: skip


def token(r: Record) -> admin_pb2.ApiToken:
    """Never carries the secret or its hash: only the visible prefix."""
    return admin_pb2.ApiToken(
        token_id=r["token_id"], user_id=r["user_id"], name=r["name"], prefix=r["prefix"],
        disabled=r["disabled"], expires_at=ts(r["expires_at"]), allowed_models=list(r["allowed_models"]),
        quota=quota(r), rate_limits=limits_from(r["rate_limits"]), created_at=ts(r["created_at"]),
        last_used_at=ts(r["last_used_at"]),
        scope=admin_pb2.TOKEN_SCOPE_ADMIN if r["scope"] == "admin" else admin_pb2.TOKEN_SCOPE_INFERENCE,
        disabled_by_admin=bool(r["disabled"]) and r["disabled_by"] == "admin",
    )  # fmt: skip
