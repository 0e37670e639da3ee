"""The gateway's API errors (the ApiError type itself is shared: uplion.core.errors)."""

from __future__ import annotations

import grpc

from uplion.core.errors import ApiError
from uplion.v1 import task_pb2

__all__ = [
    "ApiError", "crashed_workers", "deadline_exceeded", "from_task_error", "invalid", "model_not_allowed",
    "model_not_found", "queue_unavailable",
]  # fmt: skip


def invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, "invalid_request_error", param)


def model_not_found(model: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.NOT_FOUND,
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model",
        "model_not_found",
    )


def model_not_allowed(model: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"This API key is not allowed to use the model `{model}`.",
        "invalid_request_error",
        "model",
        "model_not_allowed",
    )


def queue_unavailable(retry_after_s: int) -> ApiError:
    """The task could not be put on the model's queue in time (the broker is down or overloaded):
    nothing reached a worker, so retrying is safe."""
    return ApiError(
        grpc.StatusCode.UNAVAILABLE,
        "The request could not be queued for the model right now (the message broker did not accept it "
        "in time); nothing was run. Retry shortly.",
        "api_error", None, "service_unavailable", retry_after_s,
    )  # fmt: skip


def crashed_workers(crashes: int) -> ApiError:
    """The task ended the worker process that ran it, `crashes` times (UPLION_MAX_WORKER_CRASHES):
    it is set aside on the model's dead-letter topic, not retried. An HTTP 500: the request is
    what kills the workers, so retrying it as it is will not help."""
    return ApiError(
        grpc.StatusCode.INTERNAL,
        f"The request crashed {crashes} workers; it was set aside and will not be retried.",
        "api_error", None, "task_crashed_workers",
    )  # fmt: skip


def deadline_exceeded() -> ApiError:
    return ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "The request timed out.", "timeout", None, "timeout")


_K = task_pb2
# (gRPC status, OpenAI type, code) for each way a task can fail.
_TASK_ERRORS: dict[int, tuple[grpc.StatusCode, str, str | None]] = {
    _K.TASK_ERROR_KIND_INVALID_REQUEST: (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request_error", None),
    _K.TASK_ERROR_KIND_AUTHENTICATION: (grpc.StatusCode.UNAVAILABLE, "api_error", "upstream_authentication"),
    _K.TASK_ERROR_KIND_QUOTA_EXCEEDED: (grpc.StatusCode.UNAVAILABLE, "api_error", "upstream_quota_exceeded"),
    _K.TASK_ERROR_KIND_UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, "api_error", "upstream_unavailable"),
    _K.TASK_ERROR_KIND_DEADLINE_EXCEEDED: (grpc.StatusCode.DEADLINE_EXCEEDED, "timeout", "timeout"),
    _K.TASK_ERROR_KIND_CANCELLED: (grpc.StatusCode.CANCELLED, "api_error", "cancelled"),
    _K.TASK_ERROR_KIND_MODEL_NOT_FOUND: (grpc.StatusCode.UNAVAILABLE, "api_error", "upstream_model_not_found"),
    _K.TASK_ERROR_KIND_INTERNAL: (grpc.StatusCode.INTERNAL, "api_error", "internal_error"),
    _K.TASK_ERROR_KIND_DEAD_LETTERED: (grpc.StatusCode.UNAVAILABLE, "api_error", "retries_exhausted"),
    # always retryable, so never a request's final error (the gateway counts them: cursor.py)
    _K.TASK_ERROR_KIND_WORKER_CRASHED: (grpc.StatusCode.INTERNAL, "api_error", "task_crashed_workers"),
}


def from_task_error(err: task_pb2.TaskError) -> ApiError:
    status, kind, code = _TASK_ERRORS.get(err.kind, (grpc.StatusCode.INTERNAL, "api_error", "internal_error"))
    return ApiError(status, err.message or "The model failed to answer.", kind, None, code)
