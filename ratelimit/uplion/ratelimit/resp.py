"""A lean Redis client for the decision path: commands are packed by hiredis (C), written at once
and pipelined on a few connections, replies parsed by hiredis and matched in order. The decision
script is loaded once per connection and called by its SHA (reloaded if Redis forgot it)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import Any
from urllib.parse import urlparse

import hiredis


class RedisReplyError(Exception):
    """Redis answered with an error."""


class _Pipe(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            fut = self.waiters.popleft()
            if fut.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(RedisReplyError(str(reply)))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError("redis connection lost"))

    def send(self, *args: Any) -> asyncio.Future[Any]:
        assert self.transport is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        self.transport.write(hiredis.pack_command(args))
        return fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class PipelinedRedis:
    """Round robin over `connections` pipelined connections, (re)connected on demand."""

    def __init__(self, url: str, connections: int = 2, connect_timeout_s: float = 1.0) -> None:
        u = urlparse(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 6379
        self.password = u.password
        self.connect_timeout_s = connect_timeout_s
        self._pipes: list[_Pipe | None] = [None] * connections
        self._locks = [asyncio.Lock() for _ in range(connections)]
        self._next = 0

    async def _pipe(self) -> _Pipe:
        i = self._next
        self._next = (i + 1) % len(self._pipes)
        pipe = self._pipes[i]
        if pipe is not None and not pipe.closed:
            return pipe
        async with self._locks[i]:
            current = self._pipes[i]
            if current is not None and not current.closed:
                return current
            loop = asyncio.get_running_loop()
            _, fresh = await asyncio.wait_for(
                loop.create_connection(_Pipe, self.host, self.port), self.connect_timeout_s
            )
            if self.password:
                await fresh.send("AUTH", self.password)
            self._pipes[i] = fresh
            return fresh

    async def call(self, *args: Any) -> Any:
        return await (await self._pipe()).send(*args)

    async def evalsha(self, script: str, sha: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script first if this Redis does not know it yet."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except RedisReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        await self.call("SCRIPT", "LOAD", script)
        return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    def fail_all(self, reason: str) -> None:
        """Release every command waiting for a reply (Redis stopped answering): they raise
        ConnectionError now, and the connections are dropped so late replies cannot be misread."""
        for i, pipe in enumerate(self._pipes):
            if pipe is not None:
                pipe.close()
                pipe.connection_lost(ConnectionError(reason))
                self._pipes[i] = None

    def close(self) -> None:
        for pipe in self._pipes:
            if pipe is not None:
                pipe.close()


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)
