"""The Responses API (`/v1/responses`), bridged to chat tasks: a request becomes the chat task of its
conversation (stored history from `previous_response_id`, item references, its own input), the
answer becomes a `response` (or, streamed, OpenAI's typed events), and a response with `store` is
kept for its owner. Billed and rate limited as chat is (usage kind RESPONSE)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc

from uplion.v1 import chat_pb2, responses_pb2, usage_pb2

from . import openai_json, responses_json
from .call import Call
from .errors import ApiError, invalid
from .metadata import RequestMeta
from .response_store import ResponseStore, Stored
from .responses_bridge import Stream, from_chat, skeleton
from .responses_items import (
    JsonObject,
    chat_request,
    normalize_input,
    raw_input_items,
    references,
    resolve_references,
    response_id,
)
from .validation import bound_output, validate_chat

if TYPE_CHECKING:
    from .service import InferenceService

log = logging.getLogger("uplion.gateway")
KIND = usage_pb2.REQUEST_KIND_RESPONSE
R = responses_pb2
MAX_LIST = 100
# the events that end a response stream
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
NO_STORE = (
    'This deployment keeps no responses (its gateway has no database, UPLION_DATABASE_URL): send "store": false '
    "and no previous_response_id."
)


def not_found(rid: str, param: str | None = None) -> ApiError:
    what = "Previous response" if param == "previous_response_id" else "Response"
    return ApiError(grpc.StatusCode.NOT_FOUND, f"{what} with id '{rid}' not found.", "invalid_request_error", param)


@contextlib.contextmanager
def database() -> Iterator[None]:
    """Reads of stored responses: a database that is down is a 503 the client may retry."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
        log.warning("stored responses unavailable", extra={"error": type(e).__name__})
        raise ApiError(grpc.StatusCode.UNAVAILABLE, "Stored responses are unavailable right now; retry shortly.",
                       "api_error", None, "service_unavailable", 5) from None  # fmt: skip


def conversation(chain: list[Stored]) -> list[JsonObject]:
    """The items of stored responses, oldest first: each one's input, then its output."""
    out: list[JsonObject] = []
    for s in chain:
        out += s.input_items
        out += [responses_json.item(i) for i in s.response.output]
    return out


def page(items: list[JsonObject], after: str, limit: int, order: str) -> tuple[list[JsonObject], bool]:
    """One page of a response's input items (OpenAI lists newest first unless `order` is asc)."""
    ordered = items if order == "asc" else list(reversed(items))
    if after:
        ids = [i["id"] for i in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    return ordered[:limit], len(ordered) > limit


@dataclass
class Started:
    """A Responses request under way as a task."""

    call: Call
    items: list[JsonObject]  # its input items, as stored
    keep: bool  # store the response
    native: bool  # passed to an upstream that serves the Responses API (else bridged to chat)
    skeleton: R.Response | None = None  # bridged: the response as it starts


def failure_event(e: ApiError, sequence_number: int) -> R.ResponseStreamEvent:
    """OpenAI's `error` event: a passed-through stream that fails after its first event ends with it."""
    out = R.ResponseStreamEvent(type="error", sequence_number=sequence_number, code=e.code or e.type, message=e.message)
    if e.param is not None:
        out.param = e.param
    return out


def validate_native(req: R.CreateResponseRequest) -> None:
    if not req.model:
        raise invalid("you must provide a model parameter", "model")


class ResponsesApi:
    def __init__(self, service: InferenceService, store: ResponseStore | None) -> None:
        self.service = service
        self.store = store

    def _store(self) -> ResponseStore:
        if self.store is None:
            raise invalid(NO_STORE, "store")
        return self.store

    def _check_cap(self, req: R.CreateResponseRequest) -> None:
        bound_output(req, self.service.registry.limits_for(req.model))
        if req.HasField("max_output_tokens") and req.max_output_tokens < 16:
            raise invalid("'max_output_tokens' must be at least 16", "max_output_tokens")

    async def _bridged(self, req: R.CreateResponseRequest, user: str, task_id: str,
                       stream: bool) -> tuple[chat_pb2.ChatCompletionRequest, list[JsonObject]]:  # fmt: skip
        """The chat task of a bridged request, and its input items."""
        if req.extra_json:  # only a typed client can get here with some: REST bodies were checked
            members = openai_json.extra_members(req.extra_json) or [openai_json.EXTRA]
            raise openai_json.unrecognized(members[0])
        items = normalize_input(req.input, task_id)
        history: list[JsonObject] = []
        if req.HasField("previous_response_id"):
            with database():
                chain = await self._store().chain(req.previous_response_id, user)
            if not chain:
                raise not_found(req.previous_response_id, "previous_response_id")
            history = conversation(chain)
        if refs := references(items):
            with database():
                stored = await self._store().get_many(sorted(refs), user)
            known = {i["id"]: i for s in stored.values() for i in conversation([s])}
            items = resolve_references(items, known)
        return chat_request(req, history + items, stream), items

    async def _start(self, req: R.CreateResponseRequest, context: grpc.aio.ServicerContext[Any, Any],
                     stream: bool) -> Started:  # fmt: skip
        meta = RequestMeta.of(context)
        user = meta.caller.user_id
        task_id = Call.new_task_id()
        native = self.service.registry.serves_responses(req.model)
        try:
            keep = req.store if req.HasField("store") else True
            if keep:
                self._store()
            self._check_cap(req)
            if native:
                # the upstream keeps the conversation; the caller must own the response it continues
                if req.HasField("previous_response_id"):
                    with database():
                        if await self._store().get(req.previous_response_id, user) is None:
                            raise not_found(req.previous_response_id, "previous_response_id")
                items = raw_input_items(req.input, task_id)
            else:
                chat, items = await self._bridged(req, user, task_id, stream)
        except ApiError:
            self.service._refused(meta, req.model, KIND, stream)
            raise
        if native:
            call = self.service._call(context, req, KIND, stream, validate_native,
                                      lambda t: t.response.CopyFrom(req), task_id=task_id, meta=meta)  # fmt: skip
            return Started(call, items, keep, native=True)
        call = self.service._call(context, chat, KIND, stream, validate_chat, lambda t: t.chat.CopyFrom(chat),
                                  task_id=task_id, meta=meta)  # fmt: skip
        created = call.task.created_at.seconds or int(call.started_at)
        return Started(call, items, keep, native=False, skeleton=skeleton(req, response_id(task_id), created, keep))

    async def _keep(self, started: Started, r: R.Response) -> None:
        """Store `r` if asked; an answer the database does not take is still the client's (logged, counted)."""
        if not started.keep or self.store is None:
            return
        try:
            await self.store.save(started.call.task.caller.user_id, started.items, r)
        except Exception as e:  # noqa: BLE001 - the answer is delivered either way
            log.warning("response not stored", extra={"response_id": r.id, "error": type(e).__name__})

    async def create(self, req: R.CreateResponseRequest, context: grpc.aio.ServicerContext[Any, Any]) -> R.Response:
        """A whole response (the request's `stream` is ignored: the caller chose the unary shape)."""
        started = await self._start(req, context, stream=False)
        result = await self.service._unary_result(started.call)
        if started.native:
            out = result.response
        else:
            assert started.skeleton is not None
            out = from_chat(started.skeleton, result.chat, started.call.task.task_id)
        await self._keep(started, out)
        return out

    async def events(
        self, req: R.CreateResponseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[list[R.ResponseStreamEvent]]:
        """A streamed response's events, in batches: those one worker event gives rise to go out
        together (one gRPC message, one write; the bridge turns a chat chunk into up to five events).
        A failure before the first event raises ApiError (the caller answers with a status); after
        it, the stream ends with response.failed (bridged) or OpenAI's error event (passed through).
        The response is stored before its last event."""
        started = await self._start(req, context, stream=True)
        source = self._native_events(started) if started.native else self._bridged_events(started)
        async for batch in source:
            if batch:
                yield batch

    async def _bridged_events(self, started: Started) -> AsyncIterator[list[R.ResponseStreamEvent]]:
        assert started.skeleton is not None
        s = Stream(started.skeleton, started.call.task.task_id)
        sent = False
        usage = None
        try:
            async for event in started.call.events():
                if event.WhichOneof("payload") == "chat_chunk":
                    batch = s.chunk(event.chat_chunk)
                    yield batch if sent else s.start() + batch
                    sent = True
                elif event.WhichOneof("payload") == "result":
                    usage = event.result.usage
        except ApiError as failure:
            if not sent:
                raise
            last = s.fail(failure)
        else:
            last = ([] if sent else s.start()) + s.end(usage)
        await self._keep(started, s.response)  # before the last event: readable at once
        yield last

    async def _native_events(self, started: Started) -> AsyncIterator[list[R.ResponseStreamEvent]]:
        """The upstream's events as it sent them; its last one (response.completed, ...) waits for the
        task's result, which carries the response to store."""
        held: list[R.ResponseStreamEvent] = []
        seq = -1
        try:
            async for event in started.call.events():
                if event.WhichOneof("payload") == "response_event":
                    e = event.response_event
                    seq = max(seq, e.sequence_number)
                    if e.type in FINAL_EVENTS:
                        held.append(e)
                    else:
                        yield [e]
                elif event.WhichOneof("payload") == "result":
                    await self._keep(started, event.result.response)
        except ApiError as failure:
            if seq < 0:
                raise
            held.append(failure_event(failure, seq + 1))
        yield held

    async def get(self, rid: str, context: grpc.aio.ServicerContext[Any, Any]) -> Stored:
        with database():
            found = await self._store().get(rid, RequestMeta.of(context).caller.user_id)
        if found is None:
            raise not_found(rid)
        return found

    async def delete(self, rid: str, context: grpc.aio.ServicerContext[Any, Any]) -> R.DeleteResponseResponse:
        with database():
            gone = await self._store().delete(rid, RequestMeta.of(context).caller.user_id)
        if not gone:
            raise not_found(rid)
        return R.DeleteResponseResponse(id=rid, object="response", deleted=True)

    async def input_items(self, req: R.ListResponseInputItemsRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> tuple[list[JsonObject], bool]:  # fmt: skip
        if req.order not in ("", "asc", "desc"):
            raise invalid("'order' must be asc or desc", "order")
        limit = req.limit if req.HasField("limit") else 20
        if not 1 <= limit <= MAX_LIST:
            raise invalid(f"'limit' must be between 1 and {MAX_LIST}", "limit")
        stored = await self.get(req.response_id, context)
        return page(stored.input_items, req.after, limit, req.order or "desc")


def typed_items(items: list[JsonObject]) -> list[R.ResponseItem]:
    return [responses_json.item_from_json(i) for i in items]
