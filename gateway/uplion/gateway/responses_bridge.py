"""A chat task's answer as a Responses API answer, as pure functions: a whole `chat.completion` as a
`response`, and a stream of `chat.completion.chunk`s as OpenAI's typed response events (`Stream`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from uplion.core.errors import ApiError
from uplion.v1 import chat_pb2, common_pb2, responses_pb2

from .responses_items import item_id

R = responses_pb2
_STATUS = {"stop": "completed", "tool_calls": "completed", "length": "incomplete", "content_filter": "incomplete"}
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def skeleton(req: R.CreateResponseRequest, rid: str, created_at: int, store: bool) -> R.Response:
    """The response as it starts (status in_progress, no output): the request's settings echoed."""
    r = R.Response(id=rid, object="response", created_at=created_at, status="in_progress", model=req.model,
                   parallel_tool_calls=req.parallel_tool_calls if req.HasField("parallel_tool_calls") else True,
                   store=store, truncation=req.truncation or "disabled", metadata=req.metadata,
                   tools=req.tools)  # fmt: skip
    for name in ("instructions", "max_output_tokens", "previous_response_id", "temperature", "top_p", "user",
                 "service_tier"):  # fmt: skip
        if req.HasField(name):
            setattr(r, name, getattr(req, name))
    if req.HasField("tool_choice"):
        r.tool_choice.CopyFrom(req.tool_choice)
    else:
        r.tool_choice.string_value = "auto"
    r.text.CopyFrom(req.text)
    if not r.text.HasField("format"):
        r.text.format.type = "text"
    r.reasoning.CopyFrom(req.reasoning)
    return r


def usage(u: common_pb2.Usage) -> R.ResponseUsage:
    return R.ResponseUsage(input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens,
                           total_tokens=u.prompt_tokens + u.completion_tokens)  # fmt: skip


def _finish(r: R.Response, finish_reason: str, u: common_pb2.Usage | None) -> None:
    r.status = _STATUS.get(finish_reason, "completed")
    if finish_reason in _INCOMPLETE:
        r.incomplete_details.reason = _INCOMPLETE[finish_reason]
    if u is not None:
        r.usage.CopyFrom(usage(u))


def message_item(task_id: str, index: int, text: str, status: str, refusal: str = "") -> R.ResponseItem:
    part = (R.ResponseContent(type="refusal", refusal=refusal) if refusal
            else R.ResponseContent(type="output_text", text=text))  # fmt: skip
    return R.ResponseItem(type="message", id=item_id("message", task_id, "o", index), status=status,
                          role="assistant", content=[part])  # fmt: skip


def call_item(task_id: str, index: int, call: chat_pb2.ToolCall, status: str) -> R.ResponseItem:
    return R.ResponseItem(type="function_call", id=item_id("function_call", task_id, "o", index), status=status,
                          call_id=call.id, name=call.function.name, arguments=call.function.arguments)  # fmt: skip


def from_chat(r: R.Response, c: chat_pb2.ChatCompletion, task_id: str) -> R.Response:
    """`r` (a skeleton) completed with a non-streamed chat answer (its first choice)."""
    out = R.Response()
    out.CopyFrom(r)
    finish = "stop"
    if c.choices:
        choice = c.choices[0]
        finish = choice.finish_reason or "stop"
        m = choice.message
        item_status = "incomplete" if finish == "length" else "completed"
        if m.content or m.refusal or not m.tool_calls:
            out.output.append(message_item(task_id, 0, m.content, item_status, m.refusal))
        for call in m.tool_calls:
            out.output.append(call_item(task_id, len(out.output), call, "completed"))
    _finish(out, finish, c.usage if c.HasField("usage") else None)
    return out


def failed(r: R.Response, e: ApiError) -> R.Response:
    out = R.Response()
    out.CopyFrom(r)
    out.status = "failed"
    out.error.code = e.code or e.type
    out.error.message = e.message
    return out


@dataclass
class _Open:
    """An output item being streamed."""

    index: int
    item: R.ResponseItem
    buffer: list[str] = field(default_factory=list)


@dataclass
class Stream:
    """Chat chunks in, OpenAI's response events out (`sequence_number` from 0). Call `start` once,
    `chunk` for each chat chunk, then `end` (or `fail`); each returns the events to send."""

    response: R.Response  # the skeleton; completed in place by `end`
    task_id: str
    seq: int = 0
    _text: _Open | None = None
    _calls: dict[int, _Open] = field(default_factory=dict)  # chat tool call index -> its item
    _finish: str = "stop"

    def _event(self, type_: str, **fields: object) -> R.ResponseStreamEvent:
        e = R.ResponseStreamEvent(type=type_, sequence_number=self.seq, **fields)  # type: ignore[arg-type]
        self.seq += 1
        return e

    def start(self) -> list[R.ResponseStreamEvent]:
        return [self._event("response.created", response=self.response),
                self._event("response.in_progress", response=self.response)]  # fmt: skip

    def _open_text(self, out: list[R.ResponseStreamEvent]) -> _Open:
        if self._text is None:
            index = len(self.response.output)
            item = R.ResponseItem(type="message", id=item_id("message", self.task_id, "o", index),
                                  status="in_progress", role="assistant")  # fmt: skip
            self.response.output.append(item)
            self._text = _Open(index, item)
            out.append(self._event("response.output_item.added", output_index=index, item=item))
            out.append(self._event("response.content_part.added", item_id=item.id, output_index=index,
                                   content_index=0, part=R.ResponseContent(type="output_text", text="")))  # fmt: skip
        return self._text

    def chunk(self, c: chat_pb2.ChatCompletionChunk) -> list[R.ResponseStreamEvent]:
        out: list[R.ResponseStreamEvent] = []
        for choice in c.choices:
            if choice.index != 0:
                continue  # a response has one answer
            d = choice.delta
            if d.HasField("content") and d.content:
                text = self._open_text(out)
                text.buffer.append(d.content)
                out.append(self._event("response.output_text.delta", item_id=text.item.id, output_index=text.index,
                                       content_index=0, delta=d.content))  # fmt: skip
            for t in d.tool_calls:
                call = self._calls.get(t.index)
                if call is None:
                    index = len(self.response.output)
                    iid = item_id("function_call", self.task_id, "o", index)
                    item = R.ResponseItem(type="function_call", id=iid, status="in_progress", call_id=t.id,
                                          name=t.function.name, arguments="")  # fmt: skip
                    self.response.output.append(item)
                    call = self._calls[t.index] = _Open(index, item)
                    out.append(self._event("response.output_item.added", output_index=index, item=item))
                if t.function.arguments:
                    call.buffer.append(t.function.arguments)
                    out.append(self._event("response.function_call_arguments.delta", item_id=call.item.id,
                                           output_index=call.index, delta=t.function.arguments))  # fmt: skip
            if choice.HasField("finish_reason"):
                self._finish = choice.finish_reason
        return out

    def _close_items(self, status: str) -> list[R.ResponseStreamEvent]:
        out = []
        opened = sorted([*([self._text] if self._text else []), *self._calls.values()], key=lambda o: o.index)
        for o in opened:
            item = self.response.output[o.index]
            item.status = status
            whole = "".join(o.buffer)
            if item.type == "message":
                part = R.ResponseContent(type="output_text", text=whole)
                out.append(self._event("response.output_text.done", item_id=item.id, output_index=o.index,
                                       content_index=0, text=whole))  # fmt: skip
                out.append(self._event("response.content_part.done", item_id=item.id, output_index=o.index,
                                       content_index=0, part=part))  # fmt: skip
                item.content.append(part)
            else:
                item.arguments = whole
                out.append(self._event("response.function_call_arguments.done", item_id=item.id,
                                       output_index=o.index, name=item.name, arguments=whole))  # fmt: skip
            out.append(self._event("response.output_item.done", output_index=o.index, item=item))
        return out

    def end(self, u: common_pb2.Usage | None) -> list[R.ResponseStreamEvent]:
        """The answer is whole: close its items, then response.completed (or .incomplete)."""
        out: list[R.ResponseStreamEvent] = []
        if self._text is None and not self._calls:
            self._open_text(out)  # an empty answer is still one (empty) message
        out += self._close_items("incomplete" if self._finish == "length" else "completed")
        _finish(self.response, self._finish, u)
        kind = "response.incomplete" if self.response.status == "incomplete" else "response.completed"
        out.append(self._event(kind, response=self.response))
        return out

    def fail(self, e: ApiError) -> list[R.ResponseStreamEvent]:
        """The answer failed after the stream began: response.failed (items left as they were)."""
        self.response.CopyFrom(failed(self.response, e))
        return [self._event("response.failed", response=self.response)]
