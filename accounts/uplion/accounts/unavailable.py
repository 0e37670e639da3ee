"""PostgreSQL down, restarting or unreachable: every admin call answers UNAVAILABLE at once (503
`service_unavailable` with `retry-after` at the REST edge) instead of an opaque internal error.
Inference does not need this service (authz reads Redis), so it goes on meanwhile."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc

from uplion.core.errors import ApiError, abort

log = logging.getLogger("uplion.accounts")

# what asyncpg raises when the server is gone, restarting or refusing connections
DATABASE_DOWN: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
)
RETRY_AFTER_S = 5


def database_unavailable() -> ApiError:
    return ApiError(
        grpc.StatusCode.UNAVAILABLE,
        "The account database is unavailable right now; retry shortly. Inference with existing keys keeps working.",
        "api_error",
        None,
        "service_unavailable",
        RETRY_AFTER_S,
    )


class DatabaseDown(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Maps a lost database, in any unary call, to `database_unavailable`."""

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = details.method

        async def guarded(request: Any, context: Any) -> Any:
            try:
                return await inner(request, context)
            except DATABASE_DOWN as e:
                log.warning("database unavailable", extra={"method": method, "error": type(e).__name__})
                await abort(context, database_unavailable())

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
