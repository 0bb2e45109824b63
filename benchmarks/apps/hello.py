"""Bare pure-ASGI app: the ceiling for any Python proxy running under the same uvicorn.

It answers the same four paths as the nginx upstream, without proxying anything:
``/small`` (small JSON), ``/1m`` (1 MiB body), ``/upload`` (reads the whole request body), ``/delay`` (50 ms).

``ratelimit_headers`` is the same app sending, with every reply, the five rate limit headers byte for byte as
``asgigate_ratelimit_memory:app`` sends them (checked by tests/test_benchmark_apps.py): the difference from
``app`` is what those headers cost the server itself, whatever computed them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SMALL = b'{"message":"hello, world","id":12345,"ok":true}'
LARGE = bytes(range(256)) * 4096  # 1 MiB, same content as the nginx upstream's file
JSON = [(b"content-type", b"application/json")]
OCTETS = [(b"content-type", b"application/octet-stream")]
RATELIMIT_HEADERS = [
    (b"ratelimit-policy", b'"1000000000-per-hour";q=1000000000;w=3600'),
    (b"ratelimit", b'"1000000000-per-hour";r=999999999;t=3600'),
    (b"x-ratelimit-limit", b"1000000000"),
    (b"x-ratelimit-remaining", b"999999999"),
    (b"x-ratelimit-reset", b"3600"),
]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _hello(extra: list[tuple[bytes, bytes]]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/upload":
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
        elif path == "/delay":
            await asyncio.sleep(0.05)
        body, headers = (LARGE, OCTETS) if path == "/1m" else (SMALL, JSON)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*headers, (b"content-length", str(len(body)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


app = _hello([])
ratelimit_headers = _hello(RATELIMIT_HEADERS)
