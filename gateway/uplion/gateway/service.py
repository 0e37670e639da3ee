"""The InferenceService servicer: validate, turn the request into a task, relay the answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from prometheus_client import Counter

from uplion.core.errors import abort
from uplion.v1 import (
    chat_pb2,
    completions_pb2,
    embeddings_pb2,
    inference_pb2_grpc,
    models_pb2,
    task_pb2,
    usage_pb2,
)

from .call import Call, rejected
from .config import GatewayConfig
from .dispatcher import Dispatcher
from .errors import ApiError, invalid, model_not_allowed, model_not_found
from .metadata import RequestMeta
from .registry import ModelRegistry
from .validation import bound_output, validate_chat, validate_completion, validate_embedding

log = logging.getLogger("uplion.gateway")
# by kind only: a refused request's model may be anything a client typed
REFUSED = Counter("uplion_gateway_refused_total", "Requests refused before any worker saw them", ["kind"])

Chunk = TypeVar("Chunk", chat_pb2.ChatCompletionChunk, completions_pb2.Completion)
Request = TypeVar("Request", chat_pb2.ChatCompletionRequest, completions_pb2.CompletionRequest,
                  embeddings_pb2.EmbeddingRequest)  # fmt: skip
Streamable = TypeVar("Streamable", chat_pb2.ChatCompletionRequest, completions_pb2.CompletionRequest)


def unary(validate: Callable[[Streamable], None], stream_rpc: str) -> Callable[[Streamable], None]:
    """The checks of a unary RPC: the request's own, and `stream` left unset."""

    def check(request: Streamable) -> None:
        validate(request)
        if request.stream:
            raise invalid(f"'stream': true is served by {stream_rpc}", "stream")

    return check


async def _relay(
    call: Call,
    context: grpc.aio.ServicerContext[Any, Any],
    chunk_field: str,
    make: type[Chunk],
    id_prefix: str,
    obj: str,
    include_usage: bool,
) -> AsyncIterator[Chunk]:
    """A streamed request's chunks, then its usage chunk if asked for. A failure before the first
    chunk is a gRPC status; after it, the status would be lost on HTTP/1.1, so it is an in-band
    chunk with `error` set."""

    def stamped(**fields: Any) -> Chunk:
        chunk = make(**fields)
        chunk.id = f"{id_prefix}-{call.task.task_id}"
        chunk.object = obj
        chunk.model = call.task.model
        chunk.created = call.task.created_at.seconds
        return chunk

    sent = False
    try:
        async for event in call.events():
            if event.WhichOneof("payload") == chunk_field:
                sent = True
                yield getattr(event, chunk_field)
            elif include_usage:
                yield stamped(usage=event.result.usage)
    except ApiError as e:
        if not sent:
            await abort(context, e)
        yield stamped(error=e.body())


class InferenceService(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, cfg: GatewayConfig, dispatcher: Dispatcher, registry: ModelRegistry) -> None:
        self.cfg = cfg
        self.dispatcher = dispatcher
        self.registry = registry

    def _call(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        request: Request,
        kind: usage_pb2.RequestKind.ValueType,
        stream: bool,
        validate: Callable[[Request], None],
        fill: Callable[[task_pb2.Task], None],
    ) -> Call:
        """The request as a task, or an ApiError if it is refused before any worker sees it (invalid,
        unknown or forbidden model). A refused request, too, gets its one usage event (outcome
        REJECTED, no tokens), so that what the edge reserved for it is released at once."""
        meta = RequestMeta.of(context)
        model = request.model
        try:
            validate(request)
            if self.registry.get(model) is None:
                raise model_not_found(model)
            if not meta.allows(model):
                raise model_not_allowed(model)
            if isinstance(request, chat_pb2.ChatCompletionRequest | completions_pb2.CompletionRequest):
                bound_output(request, self.registry.limits_for(model))
        except ApiError:
            event = rejected(meta, model, kind, stream, self.cfg.gateway_id)
            self.dispatcher.in_background(self.dispatcher.publish_usage(event))
            REFUSED.labels(usage_pb2.RequestKind.Name(kind).removeprefix("REQUEST_KIND_").lower()).inc()
            raise
        task = task_pb2.Task(
            task_id=Call.new_task_id(),
            model=model,
            reply_topic=self.dispatcher.reply_topic,
            caller=meta.caller,
            stream=stream,
        )
        fill(task)
        timeout = self.cfg.timeout_for(meta.timeout_s)
        return Call(self.dispatcher, task, kind, self.cfg.gateway_id, timeout, edge_request_id=meta.edge_request_id)

    async def _unary_result(self, call: Call) -> task_pb2.TaskResult:
        async for event in call.events():
            if event.WhichOneof("payload") == "result":
                return event.result
        raise ApiError(grpc.StatusCode.INTERNAL, "no result", "api_error")

    async def CreateChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> chat_pb2.ChatCompletion:
        try:
            check = unary(validate_chat, "StreamChatCompletion")
            call = self._call(context, request, usage_pb2.REQUEST_KIND_CHAT_COMPLETION, False, check,
                              lambda t: t.chat.CopyFrom(request))  # fmt: skip
            return (await self._unary_result(call)).chat
        except ApiError as e:
            await abort(context, e)

    async def StreamChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        try:
            call = self._call(context, request, usage_pb2.REQUEST_KIND_CHAT_COMPLETION, True, validate_chat,
                              lambda t: t.chat.CopyFrom(request))  # fmt: skip
        except ApiError as e:
            await abort(context, e)
        chunks = _relay(call, context, "chat_chunk", chat_pb2.ChatCompletionChunk, "chatcmpl", "chat.completion.chunk",
                        request.stream_options.include_usage)  # fmt: skip
        async for chunk in chunks:
            yield chunk

    async def CreateCompletion(
        self, request: completions_pb2.CompletionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> completions_pb2.Completion:
        try:
            check = unary(validate_completion, "StreamCompletion")
            call = self._call(context, request, usage_pb2.REQUEST_KIND_COMPLETION, False, check,
                              lambda t: t.completion.CopyFrom(request))  # fmt: skip
            return (await self._unary_result(call)).completion
        except ApiError as e:
            await abort(context, e)

    async def StreamCompletion(
        self, request: completions_pb2.CompletionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[completions_pb2.Completion]:
        try:
            call = self._call(context, request, usage_pb2.REQUEST_KIND_COMPLETION, True, validate_completion,
                              lambda t: t.completion.CopyFrom(request))  # fmt: skip
        except ApiError as e:
            await abort(context, e)
        chunks = _relay(call, context, "completion_chunk", completions_pb2.Completion, "cmpl", "text_completion",
                        request.stream_options.include_usage)  # fmt: skip
        async for chunk in chunks:
            yield chunk

    async def CreateEmbedding(
        self, request: embeddings_pb2.EmbeddingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> embeddings_pb2.EmbeddingResponse:
        try:
            call = self._call(context, request, usage_pb2.REQUEST_KIND_EMBEDDING, False, validate_embedding,
                              lambda t: t.embedding.CopyFrom(request))  # fmt: skip
            return (await self._unary_result(call)).embedding
        except ApiError as e:
            await abort(context, e)

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> models_pb2.ListModelsResponse:
        meta = RequestMeta.of(context)
        models = [m for m in self.registry.list() if meta.allows(m.id)]
        return models_pb2.ListModelsResponse(object="list", data=models)

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> models_pb2.Model:
        model = self.registry.get(request.id)
        if model is None or not RequestMeta.of(context).allows(request.id):
            await abort(context, model_not_found(request.id))
        return model
