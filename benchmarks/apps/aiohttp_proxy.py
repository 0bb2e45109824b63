"""Minimal hand-written pure-ASGI reverse proxy: one shared ``aiohttp.ClientSession``, streaming both ways.

This is the "what does a careful 60-line proxy cost" reference. Request bodies are streamed upstream from
``receive()``; response bodies larger than one chunk are streamed back chunk by chunk.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from yarl import URL

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UPSTREAM = os.environ["UPSTREAM_URL"].rstrip("/")
CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)


class AiohttpProxy:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
                    cookie_jar=aiohttp.DummyCookieJar(),
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http" or self.session is None:
            return
        target = UPSTREAM + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in HOP_BY_HOP_BYTES]
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])

        async def body() -> AsyncIterator[bytes]:
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk

        try:
            response = await self.session.request(
                scope["method"],
                URL(target, encoded=True),
                headers=headers,
                data=body() if has_body else None,
                allow_redirects=False,
            )
        except aiohttp.ClientError:
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b"bad gateway"})
            return
        async with response:
            out_headers = [(k.lower(), v) for k, v in response.raw_headers if k.lower() not in HOP_BY_HOP_BYTES]
            await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
            if response.content_length is not None and response.content_length <= CHUNK:
                await send({"type": "http.response.body", "body": await response.read()})
                return
            async for chunk in response.content.iter_chunked(CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


app = AiohttpProxy()
