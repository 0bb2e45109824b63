"""WebSocket proxying through a real uvicorn gateway to a real WebSocket upstream."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from asgigate import Gateway, Proxy, Route, Upstream
from asgigate.testing import BackgroundServer

from servers import free_port, logged_errors, wait_until


class WsGateway(Gateway):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.backend = Upstream(url)

    def routes(self) -> list[Route]:
        return [Route("/ws/{rest:path}", Proxy(self.backend, strip_prefix="/ws"))]


@pytest.fixture(scope="module")
def gateway(upstream: BackgroundServer) -> Iterator[BackgroundServer]:
    with BackgroundServer(WsGateway(upstream.url)) as server:
        yield server


def test_text_binary_and_subprotocol(gateway: BackgroundServer) -> None:
    async def run() -> None:
        async with connect(f"ws://127.0.0.1:{gateway.port}/ws/chat", subprotocols=["v2.chat"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "v2.chat"
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
            await ws.send(b"\x01\x02\x03")
            assert await ws.recv() == b"\x03\x02\x01"

    asyncio.run(run())


def test_upstream_close_code_reaches_the_client(gateway: BackgroundServer) -> None:
    async def run() -> int | None:
        async with connect(f"ws://127.0.0.1:{gateway.port}/ws/chat") as ws:
            await ws.send("close")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(run()) == 4001


def test_unreachable_upstream_refuses_the_handshake() -> None:
    with BackgroundServer(WsGateway(f"http://127.0.0.1:{free_port()}")) as server:

        async def run() -> None:
            async with connect(f"ws://127.0.0.1:{server.port}/ws/chat"):
                pass

        with pytest.raises(InvalidStatus):
            asyncio.run(run())


@pytest.mark.parametrize("close", [b"", b"\x03\xe8"], ids=["no code (1005)", "1000"])
def test_a_client_closing_without_a_code_is_not_an_error(gateway: BackgroundServer, close: bytes) -> None:
    # A close frame without a status code is reported to the app as 1005, a code no close frame may carry: the
    # upstream is closed normally instead, and nothing is logged as an error.
    with logged_errors() as errors, socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(b"GET /ws/chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        mask = os.urandom(4)
        sock.sendall(bytes([0x88, 0x80 | len(close)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(close)))
        assert sock.recv(4096)[:1] == b"\x88"  # the gateway's close frame
        sock.close()
        wait_until(lambda: errors, within=0.5)  # give a failure the time to be logged
    assert [record.getMessage() for record in errors] == []
