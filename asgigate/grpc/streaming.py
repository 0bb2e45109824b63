"""Framing of server-streamed responses, and reading client-streamed request bodies.

A server stream goes out as newline-delimited JSON (the default), one JSON array, or server-sent events, one
message per frame, each frame flushed as it comes. An error after the first message ends the stream with an
error object in the same framing (`{"error": <google.rpc.Status>}`, or an SSE `event: error`), so a client
can always tell a failed stream from a complete one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

import orjson

from ..errors import ClientDisconnected, InvalidBody, PayloadTooLarge

if TYPE_CHECKING:
    from ..types import Receive

__all__: list[str] = []  # internal: the framing of streamed replies

StreamFormat = Literal["ndjson", "json-array", "sse"]
FORMATS: tuple[str, ...] = ("ndjson", "json-array", "sse")


class Framing:
    """One stream framing: content type, and the bytes around each message and the final error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.content_type = {
            "ndjson": "application/x-ndjson",
            "json-array": "application/json",
            "sse": "text/event-stream",
        }[kind]

    def first(self, message: bytes) -> bytes:
        if self.kind == "json-array":
            return b"[" + message
        return self.item(message)

    def item(self, message: bytes) -> bytes:
        if self.kind == "ndjson":
            return message + b"\n"
        if self.kind == "sse":
            return b"data: " + message + b"\n\n"
        return b"," + message

    def end(self, started: bool) -> bytes:
        if self.kind == "json-array":
            return b"]" if started else b"[]"
        return b""

    def error(self, status: dict[str, object], started: bool) -> bytes:
        payload = orjson.dumps({"error": status})
        if self.kind == "ndjson":
            return payload + b"\n"
        if self.kind == "sse":
            return b"event: error\ndata: " + payload + b"\n\n"
        return (b"," if started else b"[") + payload + b"]"


async def body_chunks(receive: Receive, limit: int | None) -> AsyncIterator[bytes]:
    """The request body as it arrives; PayloadTooLarge past `limit` bytes."""
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("The client went away while sending the body.")
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if limit is not None and total > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
            yield chunk
        if not message.get("more_body", False):
            return


async def read_body(receive: Receive, limit: int | None) -> bytes:
    parts = [chunk async for chunk in body_chunks(receive, limit)]
    return b"".join(parts)


async def json_lines(receive: Receive, limit: int | None) -> AsyncIterator[bytes]:
    """Client-streamed messages: newline-delimited JSON as it arrives, or one JSON array (read whole)."""
    buffer = b""
    first = True
    array = False
    async for chunk in body_chunks(receive, limit):
        if first:
            stripped = chunk.lstrip()
            if not stripped:
                continue
            first = False
            array = stripped.startswith(b"[")
        buffer += chunk
        if array:
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if array:
        try:
            items = orjson.loads(buffer)
        except orjson.JSONDecodeError as exc:
            raise InvalidBody(f"The request body is not a valid JSON array: {exc}.") from None
        if not isinstance(items, list):
            raise InvalidBody("The request body must be a JSON array or newline-delimited JSON.")
        for item in items:
            yield orjson.dumps(item)
        return
    if buffer.strip():
        yield buffer
