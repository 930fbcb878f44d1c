"""The client names the wait when a fleet at zero answers 503 + Retry-After (docs/fleet.md)."""

from __future__ import annotations

import asyncio

import numpy as np

from personaplex_server.client import ClientOptions, run_session

PAGE = b"<h1>The voice fleet is starting</h1><p>Please retry in 10 minutes.</p>"


async def _answer_503(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, retry_after: bool
) -> None:
    await reader.readuntil(b"\r\n\r\n")  # the WebSocket handshake request
    head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\n"
    head += b"Retry-After: 600\r\n" if retry_after else b""
    writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(PAGE) + PAGE)
    await writer.drain()
    writer.close()


async def _session(retry_after: bool) -> str | None:
    server = await asyncio.start_server(lambda r, w: _answer_503(r, w, retry_after), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        opts = ClientOptions(url=f"http://127.0.0.1:{port}", realtime=False, input_seconds=0.2)
        result = await run_session(0, opts, np.zeros(480, dtype=np.float32))
    assert not result.ok
    return result.error


def test_503_with_retry_after_says_the_server_is_starting() -> None:
    error = asyncio.run(_session(retry_after=True))
    assert error == "HTTP 503 instead of a WebSocket; the server is starting, retry in 600 s"


def test_503_without_retry_after_stays_as_it_was() -> None:
    assert asyncio.run(_session(retry_after=False)) == "HTTP 503 instead of a WebSocket"
