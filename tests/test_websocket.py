"""WebSocket proxying through a real uvicorn gateway to a real WebSocket upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from asgigate import Gateway, Proxy, Route, Upstream

from servers import ThreadServer, free_port


class WsGateway(Gateway):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.backend = Upstream(url)

    def routes(self) -> list[Route]:
        return [Route("/ws/{rest:path}", Proxy(self.backend, strip_prefix="/ws"))]


@pytest.fixture(scope="module")
def gateway(upstream: ThreadServer) -> Iterator[ThreadServer]:
    with ThreadServer(WsGateway(upstream.url)) as server:
        yield server


def test_text_binary_and_subprotocol(gateway: ThreadServer) -> None:
    async def run() -> None:
        async with connect(f"ws://127.0.0.1:{gateway.port}/ws/chat", subprotocols=["v2.chat"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "v2.chat"
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
            await ws.send(b"\x01\x02\x03")
            assert await ws.recv() == b"\x03\x02\x01"

    asyncio.run(run())


def test_upstream_close_code_reaches_the_client(gateway: ThreadServer) -> None:
    async def run() -> int | None:
        async with connect(f"ws://127.0.0.1:{gateway.port}/ws/chat") as ws:
            await ws.send("close")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(run()) == 4001


def test_unreachable_upstream_refuses_the_handshake() -> None:
    with ThreadServer(WsGateway(f"http://127.0.0.1:{free_port()}")) as server:

        async def run() -> None:
            async with connect(f"ws://127.0.0.1:{server.port}/ws/chat"):
                pass

        with pytest.raises(InvalidStatus):
            asyncio.run(run())
