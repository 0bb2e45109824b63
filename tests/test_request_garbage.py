"""A finished request leaves nothing for the garbage collector: reference counting alone frees all of it.

A reference cycle per request (the scope and the exchange naming each other, an error whose traceback holds the
frames that hold the exchange, a cancelled task that holds its own canceller) keeps the request's scope, headers
and body parts alive until a full collection, and a busy gateway grows between collections. The gateway is
called in-process, so that nothing but the request itself is counted; the upstream runs in its own process.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop
from starlette.middleware import Middleware

from asgigate import Direct, Exchange, Forbidden, Gateway, Group, Policy, Proxy, RateLimit, Redirect, Route, Upstream
from asgigate.responses import JSONResponse
from asgigate.types import Message

from servers import free_port, serve_process, uvicorn_cmd


class Deny(Policy):
    async def on_request(self, exchange: Exchange) -> None:
        raise Forbidden("not you")


class Crash(Policy):
    async def on_request(self, exchange: Exchange) -> None:
        {}["missing"]  # a bug in a policy: a 500 with a traceback in the log


class PassThrough:
    """A plain ASGI middleware: the chain's hooks after it run in a hook stage of their own, inside an ASGI layer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Tag(Policy):
    async def on_response(self, exchange: Exchange, head: Any) -> None:
        head.headers["x-tag"] = "1"


async def item(exchange: Exchange) -> JSONResponse:
    return JSONResponse({"id": exchange.params["id"], "q": exchange.query_params.get("q"),
                         "h": exchange.headers.get("x-h0"), "url": str(exchange.request.url)})


class Realistic(Gateway):
    def __init__(self, upstream_url: str) -> None:
        super().__init__(access_log=False)
        self.backend = Upstream(upstream_url)
        self.gone = Upstream(f"http://127.0.0.1:{free_port()}")  # nothing listens: 502

    def routes(self) -> list[Route | Group]:
        return [
            Route("/direct", Direct(json={"ok": True})),
            Route("/items/{id:int}", item),
            Route("/old/{id:int}", Redirect("/items/{id}")),
            Route("/deny", Direct(text="no"), policies=[Deny()]),
            Route("/crash", Direct(text="no"), policies=[Crash()]),
            Route("/gone", Proxy(self.gone)),
            Group("/api", [Route("/{rest:path}", Proxy(self.backend, strip_prefix="/api"))],
                  policies=[Tag(), RateLimit("1000000/second")]),
            Group("/layered", [Route("/crash", Direct(text="no"), policies=[Crash()]),
                               Route("/{rest:path}", Proxy(self.backend, strip_prefix="/layered"))],
                  policies=[Tag(), Middleware(PassThrough), Tag()]),
        ]


# (path, method, what the gateway answers); the last three are answered to a client that has gone away
REQUESTS = [
    ("/nowhere", "GET", 404),
    ("/direct", "POST", 200),
    ("/items/7?q=x", "GET", 200),
    ("/items/" + "9" * 5000, "GET", 404),
    ("/old/7", "GET", 307),
    ("/deny", "GET", 403),
    ("/crash", "GET", 500),
    ("/gone", "GET", 502),
    ("/api/echo", "POST", 200),
    ("/api/stream?chunks=3", "GET", 200),
    ("/layered/crash", "GET", 500),
    ("/layered/stream?chunks=3", "GET", 200),
    ("/direct", "GET", 0),
    ("/api/stream?chunks=3", "GET", 0),
    ("/layered/stream?chunks=3", "GET", 0),
]


async def call(app: Gateway, target: str, method: str, *, client_gone: bool = False) -> int:
    path, _, query = target.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"gateway")] + [(b"x-h%d" % i, b"v" * 64) for i in range(200)],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }
    finished = asyncio.Event()
    sent: list[Message] = []
    first = True

    async def receive() -> Message:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"x" * 1000, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if client_gone:
            raise OSError("the client went away")  # what the ASGI specification asks of a server
        sent.append(message)

    await app(scope, receive, send)
    finished.set()
    return 0 if client_gone else int(sent[0]["status"])


async def settled(deadline: float = 5.0) -> None:
    """Wait (polling, with a deadline) until no task but this one is left: watchers and cancelled streams done."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while len(asyncio.all_tasks()) > 1:
        assert loop.time() < end, f"tasks still running: {asyncio.all_tasks()}"
        await asyncio.sleep(0.001)
    await asyncio.sleep(0)  # and the callbacks they scheduled on their way out (connection_lost)


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    port = free_port()
    with serve_process(uvicorn_cmd("apps.upstream:app", port), port):
        yield f"http://127.0.0.1:{port}"


def test_finished_requests_leave_no_garbage(upstream_url: str) -> None:
    async def garbage_after(rounds: int) -> int:
        gateway = Realistic(upstream_url)
        try:
            for target, method, expected in REQUESTS:  # warm up: first-use caches, pooled connections
                assert await call(gateway, target, method, client_gone=expected == 0) == expected, target
            await settled()
            gc.collect()
            gc.disable()
            try:
                for _ in range(rounds):
                    for target, method, expected in REQUESTS:
                        assert await call(gateway, target, method, client_gone=expected == 0) == expected, target
                await settled()  # the cancelled tasks of streamed replies finish
                return gc.collect()
            finally:
                gc.enable()
        finally:
            await gateway.aclose()

    # uvloop, as uvicorn[standard] runs: the standard library's socket transport is a cycle of its own once
    # closed (it keeps a bound method of itself), which would count here although no gateway code made it.
    assert uvloop.run(garbage_after(5)) == 0
