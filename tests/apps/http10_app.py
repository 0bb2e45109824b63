"""A gateway whose replies have no Content-Length in every way one arises, for the HTTP/1.0 tests under each server.

- `/api/...`: proxied to the shared test upstream (its `/stream` and `/sse` replies are streamed without a length);
- `/chunked`: proxied to a raw upstream that answers with explicit chunked framing (`CHUNKED_URL`);
- `/mounted/...`: a Starlette app whose StreamingResponse streams a body and an event stream.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route as StarletteRoute

from asgigate import Gateway, Group, Mount, Proxy, Route, Upstream


async def numbers(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(int(request.query_params.get("n", "5"))):
            yield f"line {i}\n".encode()

    return StreamingResponse(parts(), media_type="text/plain")


async def events(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(int(request.query_params.get("n", "3"))):
            yield f"data: event {i}\n\n".encode()

    return StreamingResponse(parts(), media_type="text/event-stream")


async def blocks(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for _ in range(int(request.query_params.get("n", "1"))):
            yield b"b" * 65536

    return StreamingResponse(parts(), media_type="application/octet-stream")


streaming = Starlette(routes=[
    StarletteRoute("/numbers", numbers), StarletteRoute("/events", events), StarletteRoute("/blocks", blocks),
])


class Http10Gateway(Gateway):
    def __init__(self) -> None:
        super().__init__()
        self.backend = Upstream(os.environ["UPSTREAM_URL"])
        self.chunked = Upstream(os.environ["CHUNKED_URL"])

    def routes(self) -> list[Route | Group]:
        return [
            Route("/api/{path:path}", Proxy(self.backend, strip_prefix="/api")),
            Route("/chunked", Proxy(self.chunked, path="/")),
            Mount("/mounted", streaming),
        ]


app = Http10Gateway()
