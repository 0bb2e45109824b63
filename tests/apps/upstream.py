"""A real upstream for the tests: a pure-ASGI app with endpoints that echo, stream, stall and fail."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any
from urllib.parse import parse_qs

import orjson


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    path: str = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
    if path.startswith("/stream"):
        await stream(send, query)
    elif path.startswith("/bytes"):
        await big(send, int(query.get("n", "1048576")))
    elif path.startswith("/sse"):
        await sse(send, int(query.get("events", "3")), float(query.get("interval", "0.2")))
    elif path.startswith("/slow"):
        await asyncio.sleep(float(query.get("delay", "1")))
        await respond(send, 200, b"slow")
    elif path.startswith("/status/"):
        await respond(send, int(path.rsplit("/", 1)[1]), b"status")
    elif path.startswith("/gzip"):
        import gzip

        body = gzip.compress(b"hello " * 1000)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-encoding", b"gzip"), (b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    elif path.startswith("/hop"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-secret", b"s"), (b"connection", b"x-secret"), (b"keep-alive", b"timeout=5"),
                                (b"x-kept", b"k"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
    else:
        await echo(scope, receive, send)


async def respond(send: Any, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        size += len(chunk)
        digest.update(chunk)
        if not message.get("more_body"):
            break
    body = orjson.dumps({
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope.get("raw_path", b"").decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_size": size,
        "body_sha256": digest.hexdigest(),
    })
    await respond(send, 200, body, b"application/json")


async def stream(send: Any, query: dict[str, str]) -> None:
    chunks, size = int(query.get("chunks", "10")), int(query.get("size", "1024"))
    delay = float(query.get("delay", "0"))
    headers = [(b"content-type", b"application/octet-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(chunks):
        await send({"type": "http.response.body", "body": bytes([65 + i % 26]) * size, "more_body": True})
        if delay:
            await asyncio.sleep(delay)
    await send({"type": "http.response.body", "body": b""})


async def big(send: Any, n: int) -> None:
    block = b"x" * 65536
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(n).encode())]})
    sent = 0
    while sent < n:
        part = block[: min(len(block), n - sent)]
        sent += len(part)
        await send({"type": "http.response.body", "body": part, "more_body": sent < n})


async def sse(send: Any, events: int, interval: float) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    for i in range(events):
        await send({"type": "http.response.body", "body": f"data: event {i}\n\n".encode(), "more_body": True})
        await asyncio.sleep(interval)
    await send({"type": "http.response.body", "body": b""})


async def websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    subprotocols = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": subprotocols[0] if subprotocols else None})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4001, "reason": "asked"})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo:" + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})
