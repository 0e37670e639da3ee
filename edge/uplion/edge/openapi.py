"""OpenAPI 3.1 document of the REST surface, generated from the descriptor set (the protos).

    python -m uplion.edge.openapi --descriptor gen/descriptor/uplion.pb --out gen/openapi/uplion.openapi.json

Paths come from the `google.api.http` annotations of InferenceService. The inference paths are bound
to `google.api.HttpBody` RPCs (the gateway reads and writes OpenAI's JSON itself): their request and
response schemas are those of the typed messages the gateway parses and prints (`HTTP_BODY_SCHEMAS`),
and the streamed chunk's schema is the text/event-stream response of the same path. Field names are
the proto names.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from google.api import annotations_pb2  # registers the google.api.http extension
from google.protobuf import descriptor_pb2

F = descriptor_pb2.FieldDescriptorProto
SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: {"type": "number"},
    F.TYPE_FLOAT: {"type": "number"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0, "maximum": 4294967295},
    F.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0, "maximum": 4294967295},
    # proto3 JSON reads 64-bit integers from numbers or strings and prints them as strings
    F.TYPE_INT64: {"type": ["integer", "string"], "format": "int64"},
    F.TYPE_SINT64: {"type": ["integer", "string"], "format": "int64"},
    F.TYPE_SFIXED64: {"type": ["integer", "string"], "format": "int64"},
    F.TYPE_UINT64: {"type": ["integer", "string"], "format": "int64"},
    F.TYPE_FIXED64: {"type": ["integer", "string"], "format": "int64"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Value": {},
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.ListValue": {"type": "array"},
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
}
ERRORS = {
    "400": "Invalid request",
    "404": "Unknown model or path",
    "413": "Body too large",
    "429": "Rate limited",
    "500": "Internal error",
    "503": "Backend unavailable",
    "504": "Deadline exceeded",
}
SERVICE = "uplion.v1.InferenceService"
HTTP_BODY = ".google.api.HttpBody"
# The messages an HttpBody RPC's JSON has: (request, response, streamed chunk or None).
HTTP_BODY_SCHEMAS: dict[str, tuple[str, str, str | None]] = {
    "HttpChatCompletions": (".uplion.v1.ChatCompletionRequest", ".uplion.v1.ChatCompletion",
                            ".uplion.v1.ChatCompletionChunk"),
    "HttpCompletions": (".uplion.v1.CompletionRequest", ".uplion.v1.Completion", ".uplion.v1.Completion"),
    "HttpEmbeddings": (".uplion.v1.EmbeddingRequest", ".uplion.v1.EmbeddingResponse", None),
    "HttpCreateResponse": (".uplion.v1.CreateResponseRequest", ".uplion.v1.Response", ".uplion.v1.ResponseStreamEvent"),
}  # fmt: skip
STREAM_DESCRIPTIONS = {
    "HttpCreateResponse": "`event: <type>` and `data: <event JSON>` lines per event when the body has stream: true;"
    " the last event is response.completed, response.incomplete or response.failed (no [DONE])",
}
# RPCs with a typed request (path and query parameters) whose answer is OpenAI's JSON in an HttpBody
HTTP_BODY_ANSWERS = {
    "HttpGetResponse": ".uplion.v1.Response",
    "HttpDeleteResponse": ".uplion.v1.DeleteResponseResponse",
    "HttpListResponseInputItems": ".uplion.v1.ResponseItemList",
}


class _Index:
    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        for f in fds.file:
            prefix = f".{f.package}" if f.package else ""
            for e in f.enum_type:
                self.enums[f"{prefix}.{e.name}"] = e
            for m in f.message_type:
                self._add(prefix, m)
            for s in f.service:
                self.services[f"{f.package}.{s.name}"] = s

    def _add(self, prefix: str, m: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{m.name}"
        self.messages[name] = m
        for e in m.enum_type:
            self.enums[f"{name}.{e.name}"] = e
        for nested in m.nested_type:
            self._add(name, nested)


def _short(full: str) -> str:
    return full.rsplit(".", 1)[-1]


class _Builder:
    def __init__(self, index: _Index) -> None:
        self.index = index
        self.components: dict[str, Any] = {}

    def ref(self, full: str) -> dict[str, Any]:
        if full in WELL_KNOWN:
            return dict(WELL_KNOWN[full])
        name = _short(full)
        if name not in self.components:
            self.components[name] = {}  # placeholder against recursion
            self.components[name] = self.message(self.index.messages[full])
        return {"$ref": f"#/components/schemas/{name}"}

    def field(self, f: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if f.type == F.TYPE_MESSAGE:
            target = self.index.messages.get(f.type_name)
            if target is not None and target.options.map_entry:
                value_field = target.field[1]
                return {"type": "object", "additionalProperties": self.field(value_field)}
            schema = self.ref(f.type_name)
        elif f.type == F.TYPE_ENUM:
            enum = self.index.enums[f.type_name]
            schema = {"type": "string", "enum": [v.name for v in enum.value]}
        else:
            schema = dict(SCALARS[f.type])
        if f.label == F.LABEL_REPEATED:
            return {"type": "array", "items": schema}
        return schema

    def message(self, m: descriptor_pb2.DescriptorProto) -> dict[str, Any]:
        props = {f.name: self.field(f) for f in m.field}
        return {"type": "object", "properties": props}


def _request_body(builder: _Builder, input_type: str, required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"allOf": [builder.ref(input_type)]}
    if required:
        schema["required"] = required
    return {"required": True, "content": {"application/json": {"schema": schema}}}


# What OpenAI requires in each request body (proto3 has no required fields to read it from).
REQUIRED = {
    ".uplion.v1.ChatCompletionRequest": ["model", "messages"],
    ".uplion.v1.CompletionRequest": ["model", "prompt"],
    ".uplion.v1.EmbeddingRequest": ["model", "input"],
    ".uplion.v1.CreateResponseRequest": ["model"],
}


def build(descriptor: bytes) -> dict[str, Any]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor)
    index = _Index(fds)
    builder = _Builder(index)
    error_ref = builder.ref(".uplion.v1.ErrorResponse")
    errors = {code: {"description": text, "content": {"application/json": {"schema": error_ref}}}
              for code, text in ERRORS.items()}  # fmt: skip
    service = index.services[SERVICE]
    paths: dict[str, Any] = {}
    for method in service.method:
        if not method.options.HasExtension(annotations_pb2.http):
            continue  # gRPC only
        rule = method.options.Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        template = getattr(rule, verb)
        path = re.sub(r"\{(\w+)=[^}]*\}", r"{\1}", template)
        op: dict[str, Any] = {"operationId": method.name, "responses": {}}
        input_type, output_type, stream_type = method.input_type, method.output_type, None
        if input_type == HTTP_BODY:
            input_type, output_type, stream_type = HTTP_BODY_SCHEMAS[method.name]
        elif output_type == HTTP_BODY:
            output_type = HTTP_BODY_ANSWERS[method.name]
        content: dict[str, Any] = {"application/json": {"schema": builder.ref(output_type)}}
        if stream_type:
            chunk = builder.ref(stream_type)
            content["text/event-stream"] = {
                "schema": {
                    "type": "string",
                    "description": STREAM_DESCRIPTIONS.get(
                        method.name, "`data: <chunk JSON>` events when the body has stream: true, then `data: [DONE]`"
                    ),
                },
                "x-chunk-schema": chunk,
            }
        op["responses"]["200"] = {"description": "OK", "content": content}
        op["responses"].update(errors)
        if rule.body == "*":
            op["requestBody"] = _request_body(builder, input_type, REQUIRED.get(input_type, []))
        params = re.findall(r"\{(\w+)", path)
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
            ]
        paths.setdefault(path, {})[verb] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "uplion OpenAI-compatible API",
            "version": "v1",
            "description": "Generated from proto/uplion/v1 by uplion.edge.openapi; do not edit.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(builder.components.items()))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--descriptor", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(build(args.descriptor.read_bytes()), indent=2) + "\n")


if __name__ == "__main__":
    main()
