"""The InferenceService servicer: validate, turn the request into a task, relay the answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.api import httpbody_pb2
from google.protobuf.message import Message
from prometheus_client import Counter

from uplion.core import logs, tracing
from uplion.core.errors import abort
from uplion.v1 import (
    chat_pb2,
    completions_pb2,
    embeddings_pb2,
    inference_pb2_grpc,
    models_pb2,
    responses_pb2,
    task_pb2,
    usage_pb2,
)

from . import openai_json, responses_json
from .call import KIND_NAMES, Call, rejected
from .config import GatewayConfig
from .dispatcher import Dispatcher
from .errors import ApiError, invalid, model_not_allowed, model_not_found
from .metadata import RequestMeta
from .registry import ModelRegistry
from .response_store import ResponseStore
from .responses_api import ResponsesApi, typed_items
from .validation import bound_output, validate_chat, validate_completion, validate_embedding

log = logging.getLogger("uplion.gateway")
# by kind only: a refused request's model may be anything a client typed
REFUSED = Counter("uplion_gateway_refused_total", "Requests refused before any worker saw them", ["kind"])

Chunk = TypeVar("Chunk", chat_pb2.ChatCompletionChunk, completions_pb2.Completion)
Request = TypeVar("Request", chat_pb2.ChatCompletionRequest, completions_pb2.CompletionRequest,
                  embeddings_pb2.EmbeddingRequest, responses_pb2.CreateResponseRequest)  # fmt: skip
M = TypeVar("M", bound=Message)
Streamable = TypeVar("Streamable", chat_pb2.ChatCompletionRequest, completions_pb2.CompletionRequest)


def unary(validate: Callable[[Streamable], None], stream_rpc: str) -> Callable[[Streamable], None]:
    """The checks of a unary RPC: the request's own, and `stream` left unset."""

    def check(request: Streamable) -> None:
        validate(request)
        if request.stream:
            raise invalid(f"'stream': true is served by {stream_rpc}", "stream")

    return check


def _stamped(call: Call, make: type[Chunk], id_prefix: str, obj: str, **fields: Any) -> Chunk:
    chunk = make(**fields)
    chunk.id = f"{id_prefix}-{call.task.task_id}"
    chunk.object = obj
    chunk.model = call.task.model
    chunk.created = call.task.created_at.seconds
    return chunk


async def _chunks(
    call: Call, chunk_field: str, make: type[Chunk], id_prefix: str, obj: str, include_usage: bool
) -> AsyncIterator[Chunk]:
    """A streamed request's chunks, then its usage chunk if asked for; raises ApiError on failure."""
    async for event in call.events():
        if event.WhichOneof("payload") == chunk_field:
            yield getattr(event, chunk_field)
        elif include_usage:
            yield _stamped(call, make, id_prefix, obj, usage=event.result.usage, extra_json=event.result.extra_json)


async def _relay(
    call: Call,
    context: grpc.aio.ServicerContext[Any, Any],
    chunk_field: str,
    make: type[Chunk],
    id_prefix: str,
    obj: str,
    include_usage: bool,
) -> AsyncIterator[Chunk]:
    """The typed stream: a failure before the first chunk is a gRPC status; after it, an in-band
    chunk with `error` set (as the REST stream has its in-band error event)."""
    sent = False
    try:
        async for chunk in _chunks(call, chunk_field, make, id_prefix, obj, include_usage):
            sent = True
            yield chunk
    except ApiError as e:
        if not sent:
            await abort(context, e)
        yield _stamped(call, make, id_prefix, obj, error=e.body())


@dataclass(frozen=True)
class RestEndpoint:
    """One OpenAI REST path served from raw JSON (an HttpBody RPC): how its body becomes a task and
    its answer becomes OpenAI's JSON."""

    request: type[Message]
    kind: usage_pb2.RequestKind.ValueType
    validate: Callable[[Any], None]
    task_field: str  # the Task's request field, and the TaskResult's answer field
    answer: Callable[[Any], openai_json.JsonObject]
    chunk: Callable[[Any, bool], openai_json.JsonObject] | None = None  # streamed chunk, include_usage
    chunk_field: str = ""  # the TaskEvent payload of a streamed chunk
    make: type[Any] = chat_pb2.ChatCompletionChunk  # what a usage-only chunk is made of
    id_prefix: str = ""
    obj: str = ""


REST_CHAT = RestEndpoint(
    chat_pb2.ChatCompletionRequest, usage_pb2.REQUEST_KIND_CHAT_COMPLETION, validate_chat, task_field="chat",
    answer=openai_json.chat_completion, chunk=openai_json.chat_chunk, chunk_field="chat_chunk",
    make=chat_pb2.ChatCompletionChunk, id_prefix="chatcmpl", obj="chat.completion.chunk",
)  # fmt: skip
REST_COMPLETION = RestEndpoint(
    completions_pb2.CompletionRequest, usage_pb2.REQUEST_KIND_COMPLETION, validate_completion, task_field="completion",
    answer=openai_json.completion,
    chunk=lambda c, include: openai_json.completion(c, chunk=True, include_usage=include),
    chunk_field="completion_chunk", make=completions_pb2.Completion, id_prefix="cmpl", obj="text_completion",
)  # fmt: skip
REST_EMBEDDING = RestEndpoint(
    embeddings_pb2.EmbeddingRequest, usage_pb2.REQUEST_KIND_EMBEDDING, validate_embedding, task_field="embedding",
    answer=openai_json.embedding_list,
)  # fmt: skip


def _json_body(obj: openai_json.JsonObject) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=openai_json.JSON_TYPE, data=openai_json.json_bytes(obj))


def _sse_body(data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=openai_json.SSE_TYPE, data=data)


class InferenceService(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self, cfg: GatewayConfig, dispatcher: Dispatcher, registry: ModelRegistry, store: ResponseStore | None = None
    ) -> None:
        self.cfg = cfg
        self.dispatcher = dispatcher
        self.registry = registry
        self.responses = ResponsesApi(self, store)

    def _call(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        request: Request,
        kind: usage_pb2.RequestKind.ValueType,
        stream: bool,
        validate: Callable[[Request], None],
        fill: Callable[[task_pb2.Task], None],
        task_id: str = "",
        meta: RequestMeta | None = None,
    ) -> Call:
        """The request as a task, or an ApiError if it is refused before any worker sees it (invalid,
        unknown or forbidden model). A refused request, too, gets its one usage event (outcome
        REJECTED, no tokens), so that what the edge reserved for it is released at once. `meta`: the
        request's metadata when the caller has read it already."""
        meta = meta or RequestMeta.of(context)
        model = request.model
        try:
            validate(request)
            if self.registry.get(model) is None:
                raise model_not_found(model)
            if not meta.allows(model):
                raise model_not_allowed(model)
            if request.extra_json:  # carried from a REST body above, or set by a gRPC client
                members = openai_json.extra_members(request.extra_json)
                if members is None:
                    raise invalid("'extra_json' must be a JSON object", openai_json.EXTRA)
                if members and not self.registry.forwards_unknown(model):
                    raise openai_json.unrecognized(members[0])
            if isinstance(request, chat_pb2.ChatCompletionRequest | completions_pb2.CompletionRequest):
                bound_output(request, self.registry.limits_for(model))
        except ApiError:
            self._refused(meta, model, kind, stream)
            raise
        task = task_pb2.Task(
            task_id=task_id or Call.new_task_id(),
            model=model,
            reply_topic=self.dispatcher.reply_topic,
            caller=meta.caller,
            stream=stream,
            edge_request_id=meta.edge_request_id,
        )
        fill(task)
        timeout = self.cfg.timeout_for(meta.timeout_s)
        logs.bind_request(request_id=meta.edge_request_id, task_id=task.task_id)  # this RPC's task serves one request
        span = tracing.start(f"gateway {KIND_NAMES[kind]}", tracing.SERVER, tracing.context_from(meta.trace), {
            "uplion.model": model, "uplion.user_id": meta.caller.user_id, "uplion.token_id": meta.caller.token_id,
            "uplion.request_id": meta.edge_request_id, "uplion.task_id": task.task_id, "uplion.stream": stream,
        })  # fmt: skip
        tracing.make_current(span)
        return Call(self.dispatcher, task, kind, self.cfg.gateway_id, timeout, edge_request_id=meta.edge_request_id,
                    span=span)  # fmt: skip

    def _refused(self, meta: RequestMeta, model: str, kind: usage_pb2.RequestKind.ValueType, stream: bool) -> None:
        event = rejected(meta, model, kind, stream, self.cfg.gateway_id)
        self.dispatcher.in_background(self.dispatcher.publish_usage(event))
        REFUSED.labels(KIND_NAMES[kind]).inc()

    def _parse(self, body: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext[Any, Any], cls: type[M],
               kind: usage_pb2.RequestKind.ValueType, forwards: Callable[[str], bool]) -> M:  # fmt: skip
        """A REST body as the contract's message; one that does not parse is refused (its usage event
        published, as for every refused request) with the ApiError saying why."""
        try:
            return openai_json.parse_request(body.data, cls, forwards)
        except ApiError:
            self._refused(RequestMeta.of(context), openai_json.model_of(body.data), kind, False)
            raise

    async def _rest(
        self, body: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext[Any, Any], ep: RestEndpoint
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """An OpenAI REST call from its raw JSON: one JSON answer, or (`"stream": true`) server-sent
        events ending in `data: [DONE]`. A failure before the first event is a gRPC status (the edge
        turns it into the HTTP status and OpenAI's error body); after it, an in-band
        `data: {"error": ...}` event ends the stream (no [DONE]: the answer is not complete)."""
        try:
            request: Any = self._parse(body, context, ep.request, ep.kind, self.registry.forwards_unknown)
            stream = ep.chunk is not None and bool(request.stream)
            call = self._call(context, request, ep.kind, stream, ep.validate,
                              lambda t: getattr(t, ep.task_field).CopyFrom(request))  # fmt: skip
            answer = None if stream else getattr(await self._unary_result(call), ep.task_field)
        except ApiError as e:
            await abort(context, e)
        if answer is not None or ep.chunk is None:
            yield _json_body(ep.answer(answer))
            return
        include = request.stream_options.include_usage
        sent = False
        try:
            async for chunk in _chunks(call, ep.chunk_field, ep.make, ep.id_prefix, ep.obj, include):
                sent = True
                yield _sse_body(openai_json.sse_event(ep.chunk(chunk, include)))
        except ApiError as e:
            if not sent:
                await abort(context, e)
            yield _sse_body(openai_json.sse_event(openai_json.error(e)))
            return
        yield _sse_body(openai_json.DONE)

    async def HttpChatCompletions(
        self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for body in self._rest(request, context, REST_CHAT):
            yield body

    async def HttpCompletions(
        self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for body in self._rest(request, context, REST_COMPLETION):
            yield body

    async def HttpEmbeddings(
        self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for body in self._rest(request, context, REST_EMBEDDING):
            yield body

    async def HttpCreateResponse(
        self, body: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """POST /v1/responses: a `response` object, or (`"stream": true`) its typed events; a failure
        after the first event is the in-band response.failed event."""
        try:
            request = self._parse(body, context, responses_pb2.CreateResponseRequest, usage_pb2.REQUEST_KIND_RESPONSE,
                                  self.registry.serves_responses)  # fmt: skip
            if not request.stream:
                answer = responses_json.response_bytes(await self.responses.create(request, context))
        except ApiError as e:
            await abort(context, e)
        if not request.stream:
            yield httpbody_pb2.HttpBody(content_type=openai_json.JSON_TYPE, data=answer)
            return
        try:
            async for batch in self.responses.events(request, context):
                yield _sse_body(b"".join(responses_json.sse(e) for e in batch))
        except ApiError as e:  # before the first event
            await abort(context, e)

    async def HttpGetResponse(
        self, request: responses_pb2.GetResponseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> httpbody_pb2.HttpBody:
        try:
            stored = await self.responses.get(request.response_id, context)
            return httpbody_pb2.HttpBody(content_type=openai_json.JSON_TYPE,
                                         data=responses_json.response_bytes(stored.response))  # fmt: skip
        except ApiError as e:
            await abort(context, e)

    async def HttpDeleteResponse(
        self, request: responses_pb2.DeleteResponseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> httpbody_pb2.HttpBody:
        try:
            await self.responses.delete(request.response_id, context)
            return _json_body(responses_json.deleted(request.response_id))
        except ApiError as e:
            await abort(context, e)

    async def HttpListResponseInputItems(
        self, request: responses_pb2.ListResponseInputItemsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> httpbody_pb2.HttpBody:
        try:
            items, more = await self.responses.input_items(request, context)
            return _json_body(responses_json.item_list(items, more))
        except ApiError as e:
            await abort(context, e)

    async def CreateResponse(
        self, request: responses_pb2.CreateResponseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> responses_pb2.Response:
        try:
            if request.stream:
                # refused as every refused request is: its usage event releases what the edge reserved
                self._refused(RequestMeta.of(context), request.model, usage_pb2.REQUEST_KIND_RESPONSE, False)
                raise invalid("'stream': true is served by StreamResponse", "stream")
            return await self.responses.create(request, context)
        except ApiError as e:
            await abort(context, e)

    async def StreamResponse(
        self, request: responses_pb2.CreateResponseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[responses_pb2.ResponseStreamEvent]:
        try:
            async for batch in self.responses.events(request, context):
                for event in batch:
                    yield event
        except ApiError as e:
            await abort(context, e)

    async def GetResponse(
        self, request: responses_pb2.GetResponseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> responses_pb2.Response:
        try:
            return (await self.responses.get(request.response_id, context)).response
        except ApiError as e:
            await abort(context, e)

    async def DeleteResponse(
        self, request: responses_pb2.DeleteResponseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> responses_pb2.DeleteResponseResponse:
        try:
            return await self.responses.delete(request.response_id, context)
        except ApiError as e:
            await abort(context, e)

    async def ListResponseInputItems(
        self, request: responses_pb2.ListResponseInputItemsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> responses_pb2.ResponseItemList:
        try:
            items, more = await self.responses.input_items(request, context)
        except ApiError as e:
            await abort(context, e)
        typed = typed_items(items)
        out = responses_pb2.ResponseItemList(object="list", data=typed, has_more=more)
        if typed:
            out.first_id, out.last_id = typed[0].id, typed[-1].id
        return out

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
