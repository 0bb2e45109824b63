"""Replies to HTTP/1.0 requests always carry a Content-Length.

An HTTP/1.0 client knows no chunked framing (RFC 9112 6.1: a server must not send it to a client that did not
send HTTP/1.1). The ASGI servers differ when a reply has no Content-Length (a streamed proxy response, an SSE
stream, a StreamingResponse): uvicorn with httptools sends it chunked anyway, which such a client reads as body
bytes with the chunk sizes mixed in; uvicorn with h11, hypercorn and granian close-delimit it. So the gateway does
not leave it to the server: a reply to an HTTP/1.0 request without a Content-Length is held back, body included,
up to a bound, and then sent whole with its Content-Length. A reply that grows past the bound is an
`UpstreamResponseTooLarge` error (502, rendered like any error reply), since nothing of it was sent yet; a
corrupt or silently truncated body is never sent.

Why not close-delimit where the server allows it: one server (the default one) does not, and a close-delimited
body cannot be told apart from one the upstream broke off mid-way; with a length the client knows. The price is
that an HTTP/1.0 client gets a stream only when it ends (an endless one never), which is what such a client can
read anyway.

Only the reply is changed, and only when it must be: one with a Content-Length passes through untouched, as do
replies without a body (HEAD, 1xx, 204, 304). Whether the connection is kept open stays the server's decision:
with a length, an HTTP/1.0 keep-alive is sound.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import UpstreamResponseTooLarge

if TYPE_CHECKING:
    from .types import Message, Scope, Send

__all__ = ["DEFAULT_LIMIT", "HTTP10", "length_framed"]

DEFAULT_LIMIT = 4 * 1024 * 1024
HTTP10 = ("1.0", "1")  # scope["http_version"] of an HTTP/1.0 request; granian (2.x) says "1"

_PASS, _HOLD, _FAILED = 0, 1, 2


def length_framed(send: Send, scope: Scope, limit: int) -> Send:
    """`send` for a reply to an HTTP/1.0 request: every reply that has a body gets a Content-Length."""
    if scope.get("method") == "HEAD" or scope.get("type") != "http":
        return send
    return _LengthFramed(send, limit)


class _LengthFramed:
    __slots__ = ("limit", "parts", "send", "size", "start", "state")

    def __init__(self, send: Send, limit: int) -> None:
        self.send = send
        self.limit = limit
        self.state = _PASS
        self.start: Message | None = None
        self.parts: list[bytes] = []
        self.size = 0

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            # A new start is a new reply: the error reply that follows a reply given up on starts afresh.
            self.parts = []
            self.size = 0
            if _needs_length(message):
                self.start = message
                self.state = _HOLD
                return
            self.start = None
            self.state = _PASS
            await self.send(message)
            return
        state = self.state
        if state == _PASS:
            await self.send(message)
            return
        if state == _FAILED:
            raise UpstreamResponseTooLarge(self._detail())
        if kind == "http.response.body":
            body: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            if not more and not self.parts:
                await self._flush(body)  # the whole body in one message: no copy
                return
            self.size += len(body)
            if self.size > self.limit:
                self.state = _FAILED
                self.start = None
                self.parts = []
                raise UpstreamResponseTooLarge(
                    self._detail(), internal=f"a reply to an HTTP/1.0 request grew past {self.limit} bytes"
                )
            if body:
                self.parts.append(body)
            if not more:
                body = b"".join(self.parts)
                self.parts = []
                await self._flush(body)
        elif kind == "http.response.pathsend":
            # The whole body is the file (ASGI pathsend extension): its size is the length.
            await self._flush(None, os.stat(message["path"]).st_size)
            await self.send(message)
        else:
            await self.send(message)

    async def _flush(self, body: bytes | None, length: int = 0) -> None:
        start: Message = self.start  # type: ignore[assignment]  # set whenever the state is _HOLD
        self.start = None
        self.state = _PASS
        headers = [(n, v) for n, v in start.get("headers", ()) if n.lower() != b"transfer-encoding"]
        headers.append((b"content-length", str(len(body) if body is not None else length).encode()))
        await self.send({**start, "headers": headers})
        if body is not None:
            await self.send({"type": "http.response.body", "body": body, "more_body": False})

    def _detail(self) -> str:
        return f"The response is too large to send to an HTTP/1.0 client (over {self.limit} bytes)."


def _needs_length(start: Message) -> bool:
    status = start["status"]
    if status < 200 or status in (204, 304):
        return False
    return all(name.lower() != b"content-length" for name, _ in start.get("headers", ()))
