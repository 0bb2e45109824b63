"""`Upstream(url, app=asgi_app)`: a Proxy route and `upstream.client` reach an ASGI app in the same process, with
the streaming and the error replies of a real upstream, and no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route as StarletteRoute
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgigate import Gateway, Group, Proxy, Route, Upstream
from asgigate.types import Message, Receive, Scope, Send

SEEN: list[dict[str, object]] = []


async def echo(request: Request) -> Response:
    body = await request.body()
    SEEN.append({"path": request.url.path, "query": request.url.query, "host": request.headers.get("host"),
                 "xff": request.headers.get("x-forwarded-for"), "length": request.headers.get("content-length"),
                 "chunked": request.headers.get("transfer-encoding")})
    return Response(body, status_code=201 if body else 200, headers={"x-app": "yes"},
                    media_type="application/octet-stream")


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/plain")


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


async def slow(request: Request) -> Response:
    await asyncio.sleep(5)  # deliberately slow: the timeout is the behaviour under test
    return PlainTextResponse("late")


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(f"{websocket.url.path}: {text}")
    await websocket.close()


APP = Starlette(routes=[
    StarletteRoute("/api/echo/{rest:path}", echo, methods=["GET", "POST", "PUT"]),
    StarletteRoute("/api/stream", stream),
    StarletteRoute("/api/boom", boom),
    StarletteRoute("/api/slow", slow),
    StarletteRoute("/api/json", lambda request: JSONResponse({"ok": True})),
    WebSocketRoute("/api/chat", chat),
])


async def raising_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app (no Starlette error middleware answering 500 for it)."""
    if scope["path"] == "/midway":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
    raise RuntimeError("broken app")


class Api(Gateway):
    def __init__(self) -> None:
        super().__init__()
        self.backend = Upstream("http://backend.internal/api", app=APP)
        self.broken = Upstream("http://broken", app=raising_app)

    def routes(self) -> list[Route | Group]:
        return [
            Route("/v1/{rest:path}", Proxy(self.backend, strip_prefix="/v1")),
            Route("/tight/{rest:path}", Proxy(self.backend, strip_prefix="/tight", max_body_size=10)),
            Route("/quick/{rest:path}", Proxy(self.backend, strip_prefix="/quick", timeout=0.2)),
            Route("/broken/{rest:path}", Proxy(self.broken, strip_prefix="/broken")),
        ]


async def call(api: Gateway, method: str, path: str, **options: object) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://gw.example") as client:
        return await client.request(method, path, **options)  # type: ignore[arg-type]


def run(method: str, path: str, **options: object) -> httpx.Response:
    async def go() -> httpx.Response:
        api = Api()
        try:
            return await call(api, method, path, **options)
        finally:
            await api.aclose()

    return asyncio.run(go())


def test_status_headers_and_body() -> None:
    SEEN.clear()
    response = run("GET", "/v1/echo/a%20b?x=1&y")
    assert (response.status_code, response.headers["x-app"], response.content) == (200, "yes", b"")
    assert SEEN == [{"path": "/api/echo/a b", "query": "x=1&y", "host": "backend.internal", "xff": "127.0.0.1",
                     "length": None, "chunked": None}]


def test_request_body_is_streamed_in() -> None:
    SEEN.clear()
    big = b"x" * 300_000  # over the proxy's whole-body threshold: it goes in pieces

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 65_536):
            yield big[start:start + 65_536]

    response = run("POST", "/v1/echo/upload", content=pieces())
    assert (response.status_code, len(response.content), response.content == big) == (201, len(big), True)
    assert SEEN[0]["chunked"] == "chunked"
    response = run("PUT", "/v1/echo/small", content=b"hello")
    assert (response.status_code, response.content, SEEN[1]["length"]) == (201, b"hello", "5")


def test_response_is_streamed_out() -> None:
    response = run("GET", "/v1/stream")
    assert response.status_code == 200
    assert response.text == "".join(f"chunk {i}\n" for i in range(5))


def test_an_app_error_is_a_500_from_starlette_and_a_502_from_a_bare_app() -> None:
    # Starlette's error middleware answers 500 itself, as it would behind a server.
    assert run("GET", "/v1/boom").status_code == 500
    response = run("GET", "/broken/x")
    assert (response.status_code, response.json()["code"]) == (502, "upstream_protocol_error")


def test_an_error_mid_response_aborts_it() -> None:
    with pytest.raises(Exception):  # noqa: B017 - the gateway aborts a started response; the transport raises
        run("GET", "/broken/midway")


def test_read_timeout_is_a_504() -> None:
    response = run("GET", "/quick/slow")
    assert (response.status_code, response.json()["code"]) == (504, "upstream_timeout")


def test_body_limit_is_a_413() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"x" * 8
        yield b"x" * 8

    response = run("POST", "/tight/echo/x", content=pieces())
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")


def test_client_calls_reach_the_app() -> None:
    async def go() -> tuple[int, object]:
        upstream = Upstream("http://backend.internal/api", app=APP)
        try:
            response = await upstream.client.get("/json")
            return response.status_code, response.json()
        finally:
            await upstream.aclose()

    assert asyncio.run(go()) == (200, {"ok": True})


def test_client_transport_of_your_own() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"path": request.url.path}))
    upstream = Upstream("http://users:8080/api", transport=transport)

    async def go() -> object:
        try:
            return (await upstream.client.get("/users/7")).json()
        finally:
            await upstream.aclose()

    assert asyncio.run(go()) == {"path": "/api/users/7"}


def test_the_pool_is_closed_with_the_gateway() -> None:
    async def go() -> httpx.Response:
        api = Api()
        await call(api, "GET", "/v1/json")
        pool = api.backend._pool
        assert pool is not None
        await api.aclose()
        assert api.backend._pool is None
        return await pool.request(b"GET", b"/api/json", [])  # type: ignore[return-value]

    with pytest.raises(Exception, match="not available"):
        asyncio.run(go())


def test_websocket_reaches_the_app() -> None:
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "ws",
                    "path": "/v1/chat", "raw_path": b"/v1/chat", "query_string": b"", "root_path": "",
                    "headers": [(b"host", b"gw.example")], "client": ("127.0.0.1", 5000),
                    "server": ("gw.example", 80), "subprotocols": []}

    async def go() -> None:
        api = Api()
        await api(scope, receive, send)
        await api.aclose()

    asyncio.run(go())
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "/api/chat: hi"


def test_bad_settings() -> None:
    from asgigate import ConfigurationError

    with pytest.raises(ConfigurationError, match="app= takes an ASGI app"):
        Upstream("http://x", app=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"transport= takes an httpx\.AsyncBaseTransport"):
        Upstream("http://x", transport=42)  # type: ignore[arg-type]
    assert repr(Upstream("http://x", app=APP)) == "Upstream('http://x', name='x', app=...)"
