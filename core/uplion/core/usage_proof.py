"""The gateway's proof of who asked for a task, which lets billing trust a worker's recovery record
(billing/README.md, "A gateway that dies").

A gateway that dies with requests in flight never publishes their usage events, although the
workers may finish the work. So a worker that completes a task publishes a recovery record, and
billing applies it when the gateway's event never came. A worker must not be able to bill anyone
for anything, though: the gateway signs each task's claim (id, model, caller, kind, start) with a
key only it and billing hold (`UPLION_USAGE_PROOF_KEY` or `_FILE`), the worker copies the proof into
its record, and billing applies a record only if the proof matches the record's own fields.
Pure functions; the key is bytes read once at start."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from uplion.v1 import common_pb2

from .config import ConfigError

KEY_SETTING, KEY_FILE_SETTING = "UPLION_USAGE_PROOF_KEY", "UPLION_USAGE_PROOF_KEY_FILE"
MIN_KEY_BYTES = 32


def claim(
    task_id: str, model: str, caller: common_pb2.Caller, kind: int, started_at: Timestamp
) -> bytes:  # fmt: skip
    """What the proof covers, one field a line (ids hold no newline: the gateway makes them)."""
    fields = (task_id, model, caller.user_id, caller.token_id, str(kind), f"{started_at.seconds}.{started_at.nanos}")
    return "\n".join(fields).encode()


def sign(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def valid(key: bytes, message: bytes, proof: bytes) -> bool:
    return bool(proof) and hmac.compare_digest(sign(key, message), proof)


def key_from_env(env: Mapping[str, str]) -> bytes:
    """The shared key (empty: recovery off), from the setting or the file it names."""
    path = env.get(KEY_FILE_SETTING, "")
    if path:
        try:
            key = Path(path).read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"{KEY_FILE_SETTING}: cannot read {path}: {e.strerror}") from None
    else:
        key = env.get(KEY_SETTING, "").encode()
    if key and len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{KEY_SETTING}: at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)")
    return key
