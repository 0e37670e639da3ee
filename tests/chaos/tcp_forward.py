"""`python -m tests.chaos.tcp_forward LISTEN_HOST:PORT TARGET_HOST:PORT`: every connection accepted
on LISTEN is copied both ways to a new connection to TARGET, until either side closes. The network
partition test runs one in its network namespace (where the broker's advertised address, loopback,
must lead to the broker) and one beside the broker (the other end of the namespace's link)."""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def forward(listen: str, target: str) -> None:
    target_host, target_port = _split(target)

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    host, port = _split(listen)
    server = await asyncio.start_server(accepted, host, port)
    print(f"forwarding {listen} to {target}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(forward(sys.argv[1], sys.argv[2]))
