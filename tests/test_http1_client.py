"""The upstream HTTP/1.1 client (asgigate._http1) against real servers on 127.0.0.1.

Well-behaved upstream: uvicorn (httptools) in a thread, serving the small ASGI app below. Misbehaving upstreams
(never answering, closing mid-body, malformed bytes, keep-alive races): raw asyncio servers in the test's loop.
Every test runs on the stock asyncio loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
from test_ratelimit_redis_secure import _key_and_cert

from asgigate._http1 import ConnectionPool, UpstreamResponse
from asgigate._http1.connection import HIGH_WATER, Connection
from asgigate.errors import (
    BadRequest,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

from servers import wait_until_async

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


@pytest.fixture(
    params=[pytest.param(("asyncio", {}), id="asyncio"), pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


# --- the upstream app


async def _read_body(receive: Callable[[], Awaitable[dict[str, Any]]], delay: float = 0.0) -> tuple[int, str, bytes]:
    size, digest, head = 0, hashlib.sha256(), b""
    more = True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        digest.update(chunk)
        if len(head) < 1024:
            head += chunk[: 1024 - len(head)]
        more = message.get("more_body", False)
        if delay:
            await asyncio.sleep(delay)
    return size, digest.hexdigest(), head


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())

    async def reply(body: bytes, status: int = 200, content_type: bytes = b"text/plain") -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    if path == "/hello":
        await reply(b"hello")
    elif path == "/peer":
        await reply(str(scope["client"][1]).encode())
    elif path == "/echo":
        size, digest, head = await _read_body(receive, float(query.get("delay", ["0"])[0]))
        echoed = {
            "method": scope["method"],
            "target": scope["raw_path"].decode()
            + ("?" + scope["query_string"].decode() if scope["query_string"] else ""),
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "size": size,
            "sha256": digest,
            "head": head.decode("latin-1"),
        }
        await reply(json.dumps(echoed).encode(), content_type=b"application/json")
    elif path == "/chunked":  # no content-length: uvicorn frames it with chunked transfer-encoding
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.005)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big":
        size = int(query["n"][0])
        piece = b"x" * MiB
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(size).encode())]})
        while size > 0:
            await send({"type": "http.response.body", "body": piece[:size], "more_body": size > MiB})
            size -= MiB
    elif path == "/status/204":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    else:
        await reply(b"not found", status=404)


@pytest.fixture(scope="module")
def uvi() -> Iterator[int]:
    """uvicorn + httptools serving `app` in a thread; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, http="httptools", loop="asyncio", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield port
    server.should_exit = True
    thread.join(5)
    sock.close()


# --- helpers

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A raw TCP server in the test's loop running `handler` per connection; yields the port."""
    tasks: set[asyncio.Task[None]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0, ssl=tls)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def canned(*replies: bytes, hold: float = 0.0) -> Handler:
    """Answer each request on a connection with the next reply (closing after the last), then hold."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            await read_head(reader)
            writer.write(reply)
            await writer.drain()
        if hold:
            await asyncio.sleep(hold)

    return handler


def hdrs(port: int, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"127.0.0.1:%d" % port), *extra]


async def read_all(resp: UpstreamResponse) -> bytes:
    parts = []
    while chunk := await resp.receive():
        parts.append(chunk)
    return b"".join(parts)


async def get(
    pool: ConnectionPool, port: int, target: bytes = b"/hello", **kwargs: Any
) -> tuple[UpstreamResponse, bytes]:
    resp = await pool.request(b"GET", target, hdrs(port), **kwargs)
    return resp, await read_all(resp)


async def gen(*parts: bytes, delay: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if delay:
            await asyncio.sleep(delay)
        yield part


def echoed_headers(resp_body: bytes) -> dict[str, str]:
    return dict(json.loads(resp_body)["headers"])


# --- basics


async def test_get_small_body(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi, name="svc")
    resp = await pool.request(b"GET", b"/hello", hdrs(uvi))
    assert (resp.status, resp.reason, resp.http_version) == (200, b"OK", "1.1")
    assert (b"content-type", b"text/plain") in resp.headers
    assert all(name == name.lower() for name, _ in resp.headers)
    assert await resp.receive() == b"hello"
    assert await resp.receive() == b""
    assert await resp.receive() == b""
    assert (pool.active_count, pool.idle_count) == (0, 1)
    await resp.aclose()
    await pool.aclose()


async def test_response_complete_with_its_head_is_released_at_once() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\nhello"
    async with raw_server(canned(reply, hold=10)) as port:  # head and body in one write
        pool = ConnectionPool("127.0.0.1", port)
        resp = await pool.request(b"GET", b"/", hdrs(port))
        assert resp.headers == [
            (b"content-type", b"text/plain"),
            (b"content-length", b"5"),
            (b"x-dup", b"1"),
            (b"x-dup", b"2"),
        ]
        # The connection is back in the pool before the body is read; receive() does not need it.
        assert (pool.active_count, pool.idle_count) == (0, 1)
        assert await resp.receive() == b"hello"
        assert await resp.receive() == b""
        await pool.aclose()


async def test_keep_alive_reuses_the_connection(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    _, first = await get(pool, uvi, b"/peer")
    _, second = await get(pool, uvi, b"/peer")
    assert first == second  # same client port: same TCP connection
    assert (pool.active_count, pool.idle_count) == (0, 1)
    await pool.aclose()
    assert pool.idle_count == 0


async def test_concurrent_requests_open_parallel_connections(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi, max_connections=4)
    results = await asyncio.gather(*(get(pool, uvi, b"/echo?delay=0.05") for _ in range(8)))
    assert all(resp.status == 200 for resp, _ in results)
    assert pool.active_count == 0 and 1 <= pool.idle_count <= 4
    await pool.aclose()


async def test_headers_sent_verbatim_in_order(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    sent = hdrs(uvi, (b"X-One", b"1"), (b"x-dup", b"a"), (b"x-dup", b"b"))
    resp = await pool.request(b"GET", b"/echo?a=1&b=%20", sent)
    echoed = json.loads(await read_all(resp))
    assert echoed["target"] == "/echo?a=1&b=%20"
    assert echoed["headers"] == [["host", f"127.0.0.1:{uvi}"], ["x-one", "1"], ["x-dup", "a"], ["x-dup", "b"]]
    await pool.aclose()


async def test_crlf_in_headers_is_refused() -> None:
    pool = ConnectionPool("127.0.0.1", 1)
    with pytest.raises(ValueError, match="CR or LF"):
        await pool.request(b"GET", b"/", [(b"x-evil", b"a\r\nx-injected: 1")])
    with pytest.raises(ValueError, match="CR or LF"):
        await pool.request(b"GET", b"/ HTTP/1.1\r\nx: y", [])
    assert pool.active_count == 0


# --- request bodies


async def test_request_without_body_framing(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    _, body = await get(pool, uvi, b"/echo")
    assert "content-length" not in echoed_headers(body)  # GET without a body: no framing header at all
    resp = await pool.request(b"POST", b"/echo", hdrs(uvi))
    echoed = json.loads(await read_all(resp))
    assert dict(echoed["headers"])["content-length"] == "0" and echoed["size"] == 0
    await pool.aclose()


async def test_post_bytes_body(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    for payload in (b"hello world", b"y" * (3 * MiB)):  # coalesced with the head / written separately
        resp = await pool.request(b"POST", b"/echo", hdrs(uvi), payload)
        echoed = json.loads(await read_all(resp))
        assert echoed["method"] == "POST"
        assert dict(echoed["headers"])["content-length"] == str(len(payload))
        assert "transfer-encoding" not in dict(echoed["headers"])
        assert (echoed["size"], echoed["sha256"]) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert pool.idle_count == 1
    await pool.aclose()


async def test_streamed_body_with_content_length(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    parts = (b"abc", b"", b"defgh", b"z" * 100_000)
    total = sum(map(len, parts))
    resp = await pool.request(b"PUT", b"/echo", hdrs(uvi), gen(*parts, delay=0.01), content_length=total)
    echoed = json.loads(await read_all(resp))
    assert dict(echoed["headers"])["content-length"] == str(total)
    assert "transfer-encoding" not in dict(echoed["headers"])
    assert echoed["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
    assert pool.idle_count == 1
    await pool.aclose()


async def test_streamed_body_chunked(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    parts = (b"abc", b"", b"defgh", b"z" * 100_000)
    resp = await pool.request(b"POST", b"/echo", hdrs(uvi), gen(*parts, delay=0.01))
    echoed = json.loads(await read_all(resp))
    assert dict(echoed["headers"])["transfer-encoding"] == "chunked"
    assert "content-length" not in dict(echoed["headers"])
    assert (echoed["size"], echoed["sha256"]) == (100_008, hashlib.sha256(b"".join(parts)).hexdigest())
    # An empty stream is a valid chunked body too.
    resp = await pool.request(b"POST", b"/echo", hdrs(uvi), gen())
    assert json.loads(await read_all(resp))["size"] == 0
    assert pool.idle_count == 1
    await pool.aclose()


@pytest.mark.parametrize("declared", [5, 50])
async def test_streamed_body_length_mismatch_is_bad_request(uvi: int, declared: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    with pytest.raises(BadRequest) as info:
        await pool.request(b"POST", b"/echo", hdrs(uvi), gen(b"0123456789", b"0123456789"), content_length=declared)
    assert "declared" in (info.value.internal or "")
    assert (pool.active_count, pool.idle_count) == (0, 0)  # the half-sent request's connection is closed
    await pool.aclose()


async def test_upstream_answering_early_stops_the_upload() -> None:
    received = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await read_head(reader)
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!")
        await writer.drain()
        while chunk := await reader.read(65536):
            received += len(chunk)
            await asyncio.sleep(0.001)

    async def endless() -> AsyncIterator[bytes]:
        piece = b"u" * 65536
        for _ in range(16 * 1024):  # 1 GiB if nobody stopped us
            yield piece

    async with raw_server(handler) as port:
        pool = ConnectionPool("127.0.0.1", port)
        resp = await pool.request(b"POST", b"/upload", hdrs(port), endless())
        assert resp.status == 413 and await read_all(resp) == b"big!"
        assert (pool.active_count, pool.idle_count) == (0, 0)  # half-sent request: never reused
        assert received < 64 * MiB
        await pool.aclose()


async def test_early_answer_to_a_bytes_body_is_returned_and_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(10)  # keeps the connection open but never reads the body

    async with raw_server(handler) as port:
        pool = ConnectionPool("127.0.0.1", port)
        resp = await pool.request(b"PUT", b"/", hdrs(port), b"b" * (32 * MiB), write_timeout=5)
        assert resp.status == 413 and await read_all(resp) == b""
        # Unsent request bytes would be read as the next request: the connection must not be reused.
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


# --- response framing


async def test_chunked_response(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    resp = await pool.request(b"GET", b"/chunked", hdrs(uvi))
    assert (b"transfer-encoding", b"chunked") in resp.headers
    chunks = []
    while chunk := await resp.receive():
        chunks.append(chunk)
    assert b"".join(chunks) == b"one,two,three" and len(chunks) >= 2
    assert (pool.active_count, pool.idle_count) == (0, 1)
    await pool.aclose()


async def test_eof_delimited_response_is_complete_but_not_reused() -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"
    async with raw_server(canned(reply)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        resp, body = await get(pool, port)
        assert (resp.status, body) == (200, b"until the end")
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


async def test_http10_response_is_not_reused() -> None:
    reply = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with raw_server(canned(reply, hold=1)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        resp, body = await get(pool, port)
        assert (resp.http_version, body) == ("1.0", b"ok")
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


async def test_connection_close_is_not_reused() -> None:
    reply = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    async with raw_server(canned(reply, hold=1)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        assert (await get(pool, port))[1] == b"ok"
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


async def test_head_has_no_body_and_keeps_the_connection(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    _, peer = await get(pool, uvi, b"/peer")
    resp = await pool.request(b"HEAD", b"/peer", hdrs(uvi))
    assert resp.status == 200 and dict(resp.headers)[b"content-length"] == str(len(peer)).encode()
    assert await resp.receive() == b""
    _, again = await get(pool, uvi, b"/peer")
    assert again == peer  # still the same connection after the HEAD
    await pool.aclose()


async def test_head_response_followed_by_stray_body_is_not_reused() -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"  # a broken server sends a body to HEAD
    async with raw_server(canned(reply, reply)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        resp = await pool.request(b"HEAD", b"/", hdrs(port))
        assert resp.status == 200 and await resp.receive() == b""
        assert pool.idle_count == 0
        await pool.aclose()


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses(status: int) -> None:
    # content-length on a 304 describes the representation, not this message: there is no body to wait for.
    reply = b"HTTP/1.1 %d X\r\ncontent-length: 10\r\n\r\n" % status
    async with raw_server(canned(reply, reply)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        for _ in range(2):
            resp, body = await get(pool, port, read_timeout=2)
            assert (resp.status, body) == (status, b"")
        assert pool.idle_count == 1
        await pool.aclose()


async def test_204_from_uvicorn(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    resp, body = await get(pool, uvi, b"/status/204")
    assert (resp.status, body) == (204, b"")
    assert pool.idle_count == 1
    await pool.aclose()


async def test_informational_responses_are_skipped() -> None:
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\nx-final: yes\r\n\r\ndone"
    )
    async with raw_server(canned(reply, reply)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        for _ in range(2):
            resp = await pool.request(b"POST", b"/", hdrs(port, (b"expect", b"100-continue")), b"data")
            assert (resp.status, resp.reason, resp.headers) == (
                201,
                b"Created",
                [(b"content-length", b"4"), (b"x-final", b"yes")],
            )
            assert await read_all(resp) == b"done"
        assert pool.idle_count == 1
        await pool.aclose()


async def test_chunked_trailers_are_dropped() -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
        b"4\r\nbody\r\n0\r\nx-checksum: 123\r\n\r\n"
    )
    async with raw_server(canned(reply, reply)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        for _ in range(2):
            resp, body = await get(pool, port)
            assert body == b"body" and b"x-checksum" not in dict(resp.headers)
        assert pool.idle_count == 1
        await pool.aclose()


async def test_response_split_into_tiny_reads() -> None:
    reply = b"HTTP/1.1 200 Fine Thanks\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        for i in range(len(reply)):
            writer.write(reply[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()

    async with raw_server(handler) as port:
        pool = ConnectionPool("127.0.0.1", port)
        resp, body = await get(pool, port)
        assert (resp.reason, body, resp.headers[0]) == (b"Fine Thanks", b"abcde", (b"x-a", b"1"))
        assert pool.idle_count == 1
        await pool.aclose()


# --- failures


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        pool = ConnectionPool("127.0.0.1", port, name="down")
        with pytest.raises(UpstreamConnectError) as info:
            await pool.request(b"GET", b"/", hdrs(port))
    assert (info.value.stage, info.value.upstream) == ("connect", "down")
    assert "refused" in (info.value.internal or "").lower() and "refused" not in (info.value.detail or "").lower()
    assert pool.active_count == 0


async def test_connect_timeout() -> None:
    # A listener whose accept queue is full and never drained: Linux drops further SYNs, so connect() hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            await asyncio.sleep(0.05)
            pool = ConnectionPool("127.0.0.1", port, connect_timeout=0.3)
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout) as info:
                await pool.request(b"GET", b"/", hdrs(port))
            # the upper bound: the 0.3 s timeout fired, not the kernel's SYN retries (minutes)
            assert info.value.stage == "connect" and 0.28 <= time.monotonic() - started < 5
            assert pool.active_count == 0
        finally:
            for filler in fillers:
                filler.close()


async def test_dns_failure_is_a_connect_error() -> None:
    pool = ConnectionPool("does-not-exist.invalid", 80)
    with pytest.raises(UpstreamConnectError) as info:
        await pool.request(b"GET", b"/", [(b"host", b"does-not-exist.invalid")])
    assert info.value.stage == "connect" and pool.active_count == 0


async def test_read_timeout_waiting_for_head() -> None:
    async with raw_server(canned(b"", hold=10)) as port:  # reads the request, never answers
        pool = ConnectionPool("127.0.0.1", port)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as info:
            await pool.request(b"GET", b"/", hdrs(port), read_timeout=0.3)
        elapsed = time.monotonic() - started
        assert info.value.stage == "read" and 0.28 <= elapsed < 5  # not the server's 10 s hold
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


async def test_read_timeout_between_body_chunks() -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst"
    async with raw_server(canned(reply, hold=10)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        resp = await pool.request(b"GET", b"/", hdrs(port), read_timeout=0.3)
        assert await resp.receive() == b"first"
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as info:
            await resp.receive()
        assert info.value.stage == "read" and time.monotonic() - started < 5  # not the server's 10 s hold
        with pytest.raises(UpstreamTimeout):
            await resp.receive()  # stays failed, never turns into b""
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


async def test_slow_but_steady_body_does_not_time_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n")
        for _ in range(8):  # 8 x 0.1 s > read_timeout, but no gap exceeds it (even on a loaded machine)
            await asyncio.sleep(0.1)
            writer.write(b"x")
        await reader.read()

    async with raw_server(handler) as port:
        pool = ConnectionPool("127.0.0.1", port)
        assert (await get(pool, port, read_timeout=0.6))[1] == b"x" * 8
        await pool.aclose()


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_upstream_closing_mid_body(reply: bytes) -> None:
    async with raw_server(canned(reply)) as port:  # closes right after the partial reply
        pool = ConnectionPool("127.0.0.1", port)
        resp = await pool.request(b"GET", b"/", hdrs(port))
        received = b""
        with pytest.raises(UpstreamProtocolError) as info:
            while True:
                chunk = await resp.receive()
                assert chunk, "a truncated body must never look complete"
                received += chunk
        assert info.value.stage == "response_body" and received in (b"only ten b", b"hello")
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


async def test_upstream_closing_mid_head() -> None:
    async with raw_server(canned(b"HTTP/1.1 200 OK\r\ncontent-le")) as port:
        pool = ConnectionPool("127.0.0.1", port)
        with pytest.raises(UpstreamProtocolError) as info:
            await pool.request(b"GET", b"/", hdrs(port))
        assert info.value.stage == "response_headers" and pool.active_count == 0
        await pool.aclose()


async def test_fresh_connection_closed_before_response_is_a_connect_error() -> None:
    async with raw_server(canned(b"")) as port:  # reads the request, closes without a byte
        pool = ConnectionPool("127.0.0.1", port)
        with pytest.raises(UpstreamConnectError) as info:
            await pool.request(b"GET", b"/", hdrs(port))
        assert info.value.stage == "connect" and pool.active_count == 0
        await pool.aclose()


@pytest.mark.parametrize(
    ("reply", "stage"),
    [
        (b"HTTP/1.1 abc OK\r\n\r\n", "response_headers"),
        (b"SMTP ready\r\n\r\n", "response_headers"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc", "response_headers"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n", "response_body"),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n", "response_headers"),
    ],
    ids=["bad-status", "not-http", "double-length", "bad-chunk", "unexpected-upgrade"],
)
async def test_malformed_response(reply: bytes, stage: str) -> None:
    async with raw_server(canned(reply, hold=10)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        with pytest.raises(UpstreamProtocolError) as info:
            resp = await pool.request(b"GET", b"/", hdrs(port))
            await read_all(resp)
        assert info.value.stage == stage and info.value.internal
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


async def test_bytes_after_the_response_prevent_reuse() -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra"
    async with raw_server(canned(reply, hold=10)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        assert (await get(pool, port))[1] == b"ok"
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


# --- keep-alive life cycle


def one_request_then_drop_on_next(connections: list[int]) -> Handler:
    """Answer the first request of each connection; close without a byte when a second one arrives."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await read_head(reader)  # the keep-alive race: our idle timeout fired as the request came in

    return handler


async def test_stale_keep_alive_is_retried_on_a_fresh_connection() -> None:
    connections: list[int] = []
    async with raw_server(one_request_then_drop_on_next(connections)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        assert (await get(pool, port))[1] == b"ok"
        resp = await pool.request(b"POST", b"/", hdrs(port), b"replayable")
        assert (resp.status, await read_all(resp)) == (200, b"ok")
        assert len(connections) == 2
        await pool.aclose()


async def test_streamed_body_is_not_retried() -> None:
    connections: list[int] = []
    async with raw_server(one_request_then_drop_on_next(connections)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        assert (await get(pool, port))[1] == b"ok"
        with pytest.raises(UpstreamConnectError):
            await pool.request(b"POST", b"/", hdrs(port), gen(b"not", b"replayable"))
        assert len(connections) == 1 and pool.active_count == 0
        await pool.aclose()


async def test_idle_connection_closed_by_upstream_leaves_the_pool() -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with raw_server(canned(reply)) as port:  # keep-alive response, then the server closes
        pool = ConnectionPool("127.0.0.1", port)
        assert (await get(pool, port))[1] == b"ok"
        await wait_until_async(lambda: pool.idle_count == 0)
        assert (pool.active_count, pool.idle_count) == (0, 0)
        assert (await get(pool, port))[1] == b"ok"  # a new connection, no error
        await pool.aclose()


async def test_idle_timeout_expires_connections(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi, idle_timeout=1.0)
    _, first = await get(pool, uvi, b"/peer")
    assert pool.idle_count == 1
    _, again = await get(pool, uvi, b"/peer")
    assert again == first
    await wait_until_async(lambda: pool.idle_count == 0)
    assert pool.idle_count == 0
    _, later = await get(pool, uvi, b"/peer")
    assert later != first
    await pool.aclose()


async def test_max_idle_caps_parked_connections(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi, max_idle=2)
    await asyncio.gather(*(get(pool, uvi, b"/echo?delay=0.05") for _ in range(5)))
    assert (pool.active_count, pool.idle_count) == (0, 2)
    await pool.aclose()


async def test_closed_pool_refuses_requests(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    await get(pool, uvi)
    await pool.aclose()
    assert pool.idle_count == 0
    with pytest.raises(UpstreamUnavailable) as info:
        await pool.request(b"GET", b"/hello", hdrs(uvi))
    assert info.value.stage == "pool"


# --- pool limits, cancellation

HOLDING = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart"  # head + part of the body, then silence


async def test_pool_exhaustion_and_hand_over() -> None:
    async with raw_server(canned(HOLDING, hold=10)) as port:
        pool = ConnectionPool("127.0.0.1", port, max_connections=1, pool_timeout=0.5)
        first = await pool.request(b"GET", b"/", hdrs(port))
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable) as info:
            await pool.request(b"GET", b"/", hdrs(port))
        assert info.value.stage == "pool" and 0.45 <= time.monotonic() - started < 5
        assert pool.active_count == 1

        waiting = asyncio.create_task(pool.request(b"GET", b"/", hdrs(port)))
        await wait_until_async(lambda: pool._waiters)
        assert not waiting.done()
        await first.aclose()  # body incomplete: closed, and the slot goes to the waiting request
        second = await asyncio.wait_for(waiting, 2)
        assert second.status == 200 and pool.active_count == 1
        await second.aclose()
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


async def test_released_connection_is_handed_to_a_waiter(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi, max_connections=1)
    results = await asyncio.gather(*(get(pool, uvi, b"/peer") for _ in range(5)))
    assert len({body for _, body in results}) == 1  # all five went over the one connection
    assert (pool.active_count, pool.idle_count) == (0, 1)
    await pool.aclose()


async def test_cancelled_waiter_does_not_leak(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi, max_connections=1)
    held = await pool.request(b"GET", b"/chunked", hdrs(uvi))
    waiter = asyncio.create_task(pool.request(b"GET", b"/hello", hdrs(uvi)))
    await wait_until_async(lambda: pool._waiters)  # cancelled while it waits for the slot, not before it asked
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await read_all(held) == b"one,two,three"
    assert (pool.active_count, pool.idle_count) == (0, 1)
    assert (await get(pool, uvi))[1] == b"hello"
    await pool.aclose()


async def test_cancelling_request_frees_the_slot() -> None:
    arrived, closed = asyncio.Event(), asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        arrived.set()
        await reader.read()  # never answers; returns when the client closes
        closed.set()

    async with raw_server(handler) as port:
        pool = ConnectionPool("127.0.0.1", port)
        task = asyncio.create_task(pool.request(b"GET", b"/", hdrs(port)))
        await asyncio.wait_for(arrived.wait(), 10)  # the request is sent: cancelled while it waits for the answer
        assert pool.active_count == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await asyncio.wait_for(closed.wait(), 2)  # the upstream connection really is closed
        await pool.aclose()


async def test_cancelling_receive_frees_the_slot() -> None:
    async with raw_server(canned(HOLDING, hold=10)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        resp = await pool.request(b"GET", b"/", hdrs(port))
        assert await resp.receive() == b"part"
        task = asyncio.create_task(resp.receive())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (pool.active_count, pool.idle_count) == (0, 0)
        await pool.aclose()


async def test_aclose_before_the_body_is_complete_closes_the_connection(uvi: int) -> None:
    pool = ConnectionPool("127.0.0.1", uvi)
    resp = await pool.request(b"GET", b"/big?n=%d" % (8 * MiB), hdrs(uvi))
    assert await resp.receive()
    await resp.aclose()
    assert (pool.active_count, pool.idle_count) == (0, 0)
    assert await resp.receive() == b""
    await pool.aclose()


async def test_dropped_response_does_not_leak_the_slot() -> None:
    async with raw_server(canned(HOLDING, hold=10)) as port:
        pool = ConnectionPool("127.0.0.1", port)
        resp = await pool.request(b"GET", b"/", hdrs(port))
        assert pool.active_count == 1
        del resp
        assert pool.active_count == 0
        await pool.aclose()


# --- large bodies, flow control


async def test_large_download_is_flow_controlled(uvi: int) -> None:
    size = 64 * MiB
    pool = ConnectionPool("127.0.0.1", uvi)
    resp = await pool.request(b"GET", b"/big?n=%d" % size, hdrs(uvi))
    conn = resp._conn
    assert conn is not None
    await wait_until_async(lambda: conn._reading_paused)  # a slow consumer: the upstream keeps sending meanwhile
    assert conn._reading_paused, "reading should be paused once the buffer passed the high-water mark"
    peak, total, digest = 0, 0, hashlib.sha256()
    while chunk := await resp.receive():
        peak = max(peak, conn._buffered + len(chunk))
        total += len(chunk)
        digest.update(chunk)
        if total < 8 * MiB:
            await asyncio.sleep(0.001)
    assert total == size and digest.hexdigest() == hashlib.sha256(b"x" * size).hexdigest()
    assert peak <= HIGH_WATER + 512 * 1024, f"buffered up to {peak} bytes"
    assert (pool.active_count, pool.idle_count) == (0, 1)
    await pool.aclose()


async def test_large_upload_is_flow_controlled(uvi: int, monkeypatch: pytest.MonkeyPatch) -> None:
    size, piece = 64 * MiB, b"u" * 65536
    peak_buffer, drains = 0, 0
    original_write, original_drain = Connection.write, Connection.drain

    def write(self: Connection, data: bytes) -> None:
        nonlocal peak_buffer
        original_write(self, data)
        assert self._transport is not None
        peak_buffer = max(peak_buffer, self._transport.get_write_buffer_size())

    async def drain(self: Connection, write_timeout: float | None) -> None:
        nonlocal drains
        drains += 1
        await original_drain(self, write_timeout)

    monkeypatch.setattr(Connection, "write", write)
    monkeypatch.setattr(Connection, "drain", drain)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // len(piece)):
            yield piece

    pool = ConnectionPool("127.0.0.1", uvi)
    for content_length in (None, size):
        resp = await pool.request(b"POST", b"/echo?delay=0.0005", hdrs(uvi), body(), content_length=content_length)
        echoed = json.loads(await read_all(resp))
        assert echoed["size"] == size
    assert drains > 10, "the writer should have waited for the upstream"
    assert peak_buffer <= 1 * MiB, f"write buffer grew to {peak_buffer} bytes"
    await pool.aclose()


async def test_write_timeout_when_upstream_stops_reading() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(10)  # never reads the body

    async def body() -> AsyncIterator[bytes]:
        piece = b"w" * 65536
        for _ in range(1024):
            yield piece

    async with raw_server(handler) as port:
        pool = ConnectionPool("127.0.0.1", port)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as info:
            await pool.request(b"POST", b"/", hdrs(port), body(), write_timeout=0.3)
        assert info.value.stage == "write" and time.monotonic() - started < 3
        assert pool.active_count == 0
        await pool.aclose()


# --- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for upstream.test, made in Python (no openssl command on the machine needed)."""
    directory = tmp_path_factory.mktemp("tls")
    _key_and_cert(directory, "upstream.test", None, ["upstream.test"])
    return directory / "upstream.test.pem", directory / "upstream.test.key"


async def test_tls_upstream(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret")
            await writer.drain()

    trusted = ssl.create_default_context(cafile=str(cert))
    async with raw_server(handler, tls=server_context) as port:
        pool = ConnectionPool("127.0.0.1", port, ssl=trusted, server_hostname="upstream.test")
        for _ in range(2):
            assert (await get(pool, port))[1] == b"secret"
        assert (pool.active_count, pool.idle_count) == (0, 1)  # kept alive over TLS
        await pool.aclose()

        for context, hostname in ((ssl.create_default_context(), "upstream.test"), (trusted, "other.test")):
            pool = ConnectionPool("127.0.0.1", port, ssl=context, server_hostname=hostname)
            with pytest.raises(UpstreamConnectError) as info:
                await pool.request(b"GET", b"/", hdrs(port))
            assert info.value.stage == "connect" and "CERTIFICATE_VERIFY_FAILED" in (info.value.internal or "")
            assert pool.active_count == 0
