"""The interface every backend implements, and the error it raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from uplion.v1 import chat_pb2, completions_pb2, embeddings_pb2, task_pb2


class BackendError(Exception):
    """A failure the runner turns into a TaskError: `retryable` decides nack versus final error."""

    def __init__(
        self, kind: task_pb2.TaskErrorKind.ValueType, message: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


def unavailable(message: str, retry_after: float | None = None) -> BackendError:
    return BackendError(task_pb2.TASK_ERROR_KIND_UNAVAILABLE, message, retryable=True, retry_after=retry_after)


def invalid(message: str) -> BackendError:
    return BackendError(task_pb2.TASK_ERROR_KIND_INVALID_REQUEST, message, retryable=False)


class Backend(Protocol):
    """A model. Streams are the primitive: the runner aggregates them for non-streamed requests.

    `chat` and `completion` yield chunks whose choices carry deltas; the last chunk they yield
    has `usage` set (and may have no choices). id, created and model are filled in by the runner.
    """

    def prompt_tokens(self, task: task_pb2.Task) -> int: ...

    def chat(self, request: chat_pb2.ChatCompletionRequest) -> AsyncIterator[chat_pb2.ChatCompletionChunk]: ...

    def completion(self, request: completions_pb2.CompletionRequest) -> AsyncIterator[completions_pb2.Completion]: ...

    async def embed(self, request: embeddings_pb2.EmbeddingRequest) -> embeddings_pb2.EmbeddingResponse: ...

    async def close(self) -> None: ...
