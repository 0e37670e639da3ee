"""Worker settings from environment variables; names follow the AIModel CRD fields."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from uplion.core.aimodels import DEFAULT_MAX_OUTPUT_TOKENS
from uplion.core.config import ConfigError, env_float, env_int, env_list, env_str
from uplion.core.pulsar import PulsarSettings
from uplion.core.topics import safe_name

MODEL_TYPES = ("echo", "remote", "local")


@dataclass(frozen=True)
class Account:
    """One remote provider account; `api_key` is never logged (repr hides it)."""

    base_url: str
    api_key: str

    def __repr__(self) -> str:
        return f"Account(base_url={self.base_url!r}, api_key=***)"


@dataclass(frozen=True)
class WorkerConfig:
    model: str
    model_type: str
    max_concurrency: int
    processes: int
    pulsar: PulsarSettings
    worker_id: str
    max_attempts: int
    nack_delay_ms: int
    retry_backoff_s: float
    retry_backoff_max_s: float
    drain_timeout_s: float
    health_port: int
    metrics_port: int
    accounts: tuple[Account, ...]
    upstream_model: str
    upstream_timeout_s: float
    echo_token_delay_s: float
    echo_first_token_delay_s: float
    local_model_path: str
    max_output_tokens: int  # the model's cap for requests that name none (AIModel maxOutputTokens)
    journal_dir: str  # the crash journal (journal.py): this process's running attempts, a slot file each
    cancel_lookback_s: float  # at start, read the cancels (and poison marks) of this recent past
    echo_crash_on: str = ""  # echo, fault injection for tests: a prompt containing it ends the process
    # a completed task's recovery record is delivered to billing this long after the task's deadline
    # (the gateway has answered or died by then: billing/README.md, "A gateway that dies")
    usage_recovery_grace_s: float = 60.0
    usage_recovery_flush_s: float = 1.0  # a worker process sends its records together this often (recovery.py)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        env = os.environ if env is None else env
        model = env_str(env, "UPLION_MODEL")
        model_type = env_str(env, "UPLION_MODEL_TYPE", "echo")
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"UPLION_MODEL_TYPE must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
        accounts = _accounts(env) if model_type == "remote" else ()
        max_concurrency = env_int(env, "UPLION_MAX_PROCESS_NUM", 4, minimum=1)
        processes = env_int(env, "UPLION_WORKER_PROCESSES", 1, minimum=1)
        worker_id = env_str(env, "UPLION_WORKER_ID", f"{socket.gethostname()}-{os.getpid()}")
        if processes > max_concurrency:
            raise ConfigError(f"UPLION_WORKER_PROCESSES ({processes}) must not exceed UPLION_MAX_PROCESS_NUM "
                              f"({max_concurrency}): every process needs a slot")  # fmt: skip
        return cls(
            model=model,
            model_type=model_type,
            max_concurrency=max_concurrency,
            processes=processes,
            pulsar=PulsarSettings.from_env(env),
            worker_id=worker_id,
            max_attempts=env_int(env, "UPLION_MAX_ATTEMPTS", 3, minimum=1),
            nack_delay_ms=env_int(env, "UPLION_NACK_DELAY_MS", 1000, minimum=0),
            retry_backoff_s=env_float(env, "UPLION_RETRY_BACKOFF_MS", 500.0, minimum=0) / 1000,
            retry_backoff_max_s=env_float(env, "UPLION_RETRY_BACKOFF_MAX_MS", 30000.0, minimum=0) / 1000,
            drain_timeout_s=env_float(env, "UPLION_DRAIN_TIMEOUT_S", 30.0, minimum=0),
            health_port=env_int(env, "UPLION_HEALTH_PORT", 0, minimum=0),
            metrics_port=env_int(env, "UPLION_METRICS_PORT", 0, minimum=0),
            accounts=accounts,
            upstream_model=env_str(env, "UPLION_UPSTREAM_MODEL", model),
            upstream_timeout_s=env_float(env, "UPLION_UPSTREAM_TIMEOUT_S", 120.0, minimum=0.1),
            echo_token_delay_s=env_float(env, "UPLION_ECHO_TOKEN_DELAY_MS", 0.0, minimum=0) / 1000,
            echo_first_token_delay_s=env_float(env, "UPLION_ECHO_FIRST_TOKEN_DELAY_MS", 0.0, minimum=0) / 1000,
            local_model_path=env.get("UPLION_LOCAL_MODEL_PATH", ""),
            max_output_tokens=env_int(env, "UPLION_MAX_OUTPUT_TOKENS", DEFAULT_MAX_OUTPUT_TOKENS, minimum=1),
            journal_dir=env_str(env, "UPLION_WORKER_JOURNAL_DIR", default_journal_dir(worker_id)),
            cancel_lookback_s=env_float(env, "UPLION_CANCEL_LOOKBACK_S", 600.0, minimum=0),
            echo_crash_on=env.get("UPLION_ECHO_CRASH_ON", ""),
            usage_recovery_grace_s=env_float(env, "UPLION_USAGE_RECOVERY_GRACE_S", 60.0, minimum=0),
            usage_recovery_flush_s=env_float(env, "UPLION_USAGE_RECOVERY_FLUSH_MS", 1000.0, minimum=1) / 1000,
        )


def default_journal_dir(worker_id: str) -> str:
    """A folder of this worker's own under the temporary directory: found again by a process that
    restarts with the same UPLION_WORKER_ID (the supervisor's children do). In a pod the operator
    sets UPLION_WORKER_JOURNAL_DIR to an emptyDir, which outlives the container's restarts."""
    return str(Path(tempfile.gettempdir()) / "uplion-worker-journal" / safe_name(worker_id))


def _accounts(env: Mapping[str, str]) -> tuple[Account, ...]:
    """Accounts from UPLION_BASE_URL (one, or one per key) and UPLION_API_KEYS, UPLION_API_KEY_<n>
    (one per variable, as the operator mounts them from Secrets) and UPLION_API_KEYS_FILE."""
    urls = env_list(env, "UPLION_BASE_URL")
    keys = list(env_list(env, "UPLION_API_KEYS"))
    numbered = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in env.items()
                      if k.startswith("UPLION_API_KEY_") and k.rsplit("_", 1)[1].isdigit() and v.strip())  # fmt: skip
    keys += [v.strip() for _, v in numbered]
    key_file = env.get("UPLION_API_KEYS_FILE")
    if key_file:
        try:
            keys += [line.strip() for line in Path(key_file).read_text().splitlines() if line.strip()]
        except OSError as e:
            raise ConfigError(f"UPLION_API_KEYS_FILE unreadable: {e.strerror}") from None
    if not urls:
        raise ConfigError("UPLION_BASE_URL is required for remote models")
    if not keys:
        raise ConfigError("remote models need UPLION_API_KEYS, UPLION_API_KEY_<n> or UPLION_API_KEYS_FILE")
    if len(urls) == 1:
        urls = urls * len(keys)
    if len(urls) != len(keys):
        raise ConfigError("UPLION_BASE_URL must list one URL, or one per API key")
    return tuple(Account(u, k) for u, k in zip(urls, keys, strict=True))
