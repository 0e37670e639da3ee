"""API errors: one exception carrying both the gRPC status and OpenAI's error object."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from uplion.v1 import common_pb2

# The trailing-metadata key carrying OpenAI's error JSON; the HTTP edge returns it as the body.
ERROR_METADATA = "x-uplion-error"


@dataclass
class ApiError(Exception):
    status: grpc.StatusCode
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after_s: int | None = None  # sent as `retry-after` (an HTTP header at the REST edge)

    def body(self) -> common_pb2.ErrorBody:
        b = common_pb2.ErrorBody(message=self.message, type=self.type)
        if self.param is not None:
            b.param = self.param
        if self.code is not None:
            b.code = self.code
        return b

    def json(self) -> str:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error})

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """OpenAI's error JSON travels with the gRPC status, for the HTTP edge to return as is."""
        metadata: tuple[tuple[str, str], ...] = ((ERROR_METADATA, self.json()),)
        if self.retry_after_s is not None:
            metadata += (("retry-after", str(self.retry_after_s)),)
        return metadata


async def abort(context: grpc.aio.ServicerContext[Any, Any], e: ApiError) -> NoReturn:
    context.set_trailing_metadata(e.trailing_metadata())
    await context.abort(e.status, e.message)
