"""The InferenceService servicer: validate, turn the request into a task, relay the answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

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

from .call import Call
from .config import GatewayConfig
from .dispatcher import Dispatcher
from .errors import ApiError, invalid, model_not_allowed, model_not_found
from .metadata import RequestMeta
from .registry import ModelRegistry
from .validation import validate_chat, validate_completion, validate_embedding

log = logging.getLogger("uplion.gateway")

Chunk = TypeVar("Chunk", chat_pb2.ChatCompletionChunk, completions_pb2.Completion)


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
        model: str,
        kind: usage_pb2.RequestKind.ValueType,
        stream: bool,
        fill: Callable[[task_pb2.Task], None],
    ) -> Call:
        if self.registry.get(model) is None:
            raise model_not_found(model)
        meta = RequestMeta.of(context)
        if not meta.allows(model):
            raise model_not_allowed(model)
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
            validate_chat(request)
            if request.stream:
                raise invalid("'stream': true is served by StreamChatCompletion", "stream")
            call = self._call(context, request.model, usage_pb2.REQUEST_KIND_CHAT_COMPLETION, False,
                              lambda t: t.chat.CopyFrom(request))  # fmt: skip
            return (await self._unary_result(call)).chat
        except ApiError as e:
            await abort(context, e)

    async def StreamChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        try:
            validate_chat(request)
            call = self._call(context, request.model, usage_pb2.REQUEST_KIND_CHAT_COMPLETION, True,
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
            validate_completion(request)
            if request.stream:
                raise invalid("'stream': true is served by StreamCompletion", "stream")
            call = self._call(context, request.model, usage_pb2.REQUEST_KIND_COMPLETION, False,
                              lambda t: t.completion.CopyFrom(request))  # fmt: skip
            return (await self._unary_result(call)).completion
        except ApiError as e:
            await abort(context, e)

    async def StreamCompletion(
        self, request: completions_pb2.CompletionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[completions_pb2.Completion]:
        try:
            validate_completion(request)
            call = self._call(context, request.model, usage_pb2.REQUEST_KIND_COMPLETION, True,
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
            validate_embedding(request)
            call = self._call(context, request.model, usage_pb2.REQUEST_KIND_EMBEDDING, False,
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
