"""HTTP/1.0 clients get bodies they can read: a Content-Length, never chunked framing (RFC 9112 6.1).

A raw-socket HTTP/1.0 client (it writes the request, reads until the server closes, and parses what came) against
the same gateway under uvicorn (httptools and h11), hypercorn and granian, each in its own process.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from starlette.responses import Response, StreamingResponse

from asgigate import Direct, Gateway, Policy, Proxy, ResponseHead, Route, Upstream
from asgigate.exchange import Exchange
from asgigate.testing import BackgroundServer

from rawupstream import RawUpstream
from servers import PYTHON, free_port, serve_process

MiB = 1024 * 1024
SERVERS = ["uvicorn-httptools", "uvicorn-h11", "hypercorn", "granian"]
CHUNKED_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)


@dataclass
class Reply:
    version: bytes
    status: int
    headers: dict[bytes, list[bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name)
        return values[0] if values else None


def exchange_raw(port: int, request: bytes, timeout: float = 20.0) -> bytes:
    """Write the request, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> Reply:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw[:500]
    lines = head.split(b"\r\n")
    version, status, *_ = lines[0].split(b" ", 2)
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return Reply(version, int(status), headers, body)


def http10(port: int, target: str, method: str = "GET") -> Reply:
    """An HTTP/1.0 client: no Host needed, no keep-alive, the body runs to the close or to its Content-Length."""
    reply = parse(exchange_raw(port, f"{method} {target} HTTP/1.0\r\n\r\n".encode()))
    assert b"transfer-encoding" not in reply.headers, reply.headers  # RFC 9112 6.1
    return reply


def readable(reply: Reply) -> bytes:
    """The body as an HTTP/1.0 client reads it, checked against the Content-Length it was given."""
    length = reply.header(b"content-length")
    assert length is not None, reply.headers
    assert int(length) == len(reply.body)
    return reply.body


def commands(server: str, port: int) -> list[str]:
    app = "apps.http10_app:app"
    if server.startswith("uvicorn"):
        return [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                "--http", server.split("-")[1], "--no-proxy-headers"]
    if server == "hypercorn":
        return [PYTHON, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    return [PYTHON, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--log-level", "warning", app]


@pytest.fixture(scope="module")
def chunked_upstream() -> Iterator[RawUpstream]:
    with RawUpstream(CHUNKED_REPLY) as raw:
        yield raw


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest, upstream: BackgroundServer, chunked_upstream: RawUpstream) -> Iterator[int]:
    port = free_port()
    env = {"UPSTREAM_URL": upstream.url, "CHUNKED_URL": chunked_upstream.url}
    with serve_process(commands(request.param, port), port, env=env):
        yield port


def test_a_streamed_proxied_response_gets_a_content_length(served: int) -> None:
    reply = http10(served, "/api/stream?chunks=10&size=1000")
    assert reply.status == 200
    assert readable(reply) == b"".join(bytes([65 + i]) * 1000 for i in range(10))


def test_a_chunked_upstream_reply_is_sent_with_a_content_length(served: int) -> None:
    reply = http10(served, "/chunked")
    assert reply.status == 200
    assert readable(reply) == b"hello world"


def test_server_sent_events_are_sent_whole(served: int) -> None:
    reply = http10(served, "/api/sse?events=3&interval=0.01")
    assert reply.status == 200
    assert reply.header(b"content-type") == b"text/event-stream"
    assert readable(reply) == b"data: event 0\n\ndata: event 1\n\ndata: event 2\n\n"


def test_a_streaming_response_of_a_mounted_app_gets_a_content_length(served: int) -> None:
    assert readable(http10(served, "/mounted/numbers?n=4")) == b"line 0\nline 1\nline 2\nline 3\n"
    assert readable(http10(served, "/mounted/events?n=2")) == b"data: event 0\n\ndata: event 1\n\n"


def test_a_multi_mib_stream_under_the_bound_arrives_whole(served: int) -> None:
    reply = http10(served, "/api/stream?chunks=48&size=65536")  # 3 MiB, under the default 4 MiB
    assert reply.status == 200
    body = readable(reply)
    assert len(body) == 3 * MiB
    assert body == b"".join(bytes([65 + i % 26]) * 65536 for i in range(48))


def test_a_stream_over_the_bound_is_a_502_problem(served: int) -> None:
    reply = http10(served, "/api/stream?chunks=80&size=65536")  # 5 MiB
    assert reply.status == 502
    assert reply.header(b"content-type") == b"application/problem+json"
    problem = orjson.loads(readable(reply))
    assert problem["code"] == "upstream_response_too_large"
    assert problem["status"] == 502


def test_a_streaming_response_of_a_mounted_app_over_the_bound_is_a_502_problem(served: int) -> None:
    assert len(readable(http10(served, "/mounted/blocks?n=64"))) == 4 * MiB  # exactly the bound
    reply = http10(served, "/mounted/blocks?n=65")
    assert reply.status == 502
    assert orjson.loads(readable(reply))["code"] == "upstream_response_too_large"


def test_a_known_length_passes_unchanged(served: int) -> None:
    reply = http10(served, "/api/bytes?n=100000")
    assert readable(reply) == b"x" * 100000


def test_head_has_no_body(served: int) -> None:
    reply = http10(served, "/api/stream?chunks=3&size=10", method="HEAD")
    assert reply.status == 200
    assert reply.body == b""


def test_http11_requests_still_stream_chunked_and_unbuffered(served: int) -> None:
    # An event stream that would take 50 s: the first event arrives long before, chunked.
    with socket.create_connection(("127.0.0.1", served), timeout=20) as s:
        s.sendall(b"GET /api/sse?events=1000&interval=0.05 HTTP/1.1\r\nHost: gw\r\n\r\n")
        data = b""
        while b"data: event 0" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    reply = parse(data)
    assert reply.status == 200
    assert reply.header(b"transfer-encoding") == b"chunked"
    assert reply.header(b"content-length") is None


# --- in-process: the gateway's own error reply, policies and the bound setting -------------------------------


class Stamp(Policy):
    """Counts the response starts its hook sees, and stamps the reply."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        self.seen.append(head.status)
        head.headers["x-stamp"] = str(len(self.seen))


async def streamed(exchange: Exchange) -> Response:
    async def parts() -> Any:
        for _ in range(int(exchange.query_params.get("n", "3"))):
            yield b"0123456789"

    return StreamingResponse(parts(), media_type="text/plain")


class SmallBound(Gateway):
    def __init__(self, upstream_url: str, broken_url: str, stamp: Stamp) -> None:
        super().__init__(http10_buffer_limit=100)
        self.stamp = stamp
        self.backend = Upstream(upstream_url)
        self.broken = Upstream(broken_url)

    def policies(self) -> list[Policy]:
        return [self.stamp]

    def routes(self) -> list[Route]:
        return [
            Route("/handler", streamed),
            Route("/direct", Direct(text="x" * 1000)),
            Route("/api/{path:path}", Proxy(self.backend, strip_prefix="/api")),
            Route("/broken", Proxy(self.broken, path="/")),
        ]


@pytest.fixture(scope="module")
def small(upstream: BackgroundServer) -> Iterator[tuple[BackgroundServer, Stamp]]:
    # an upstream that breaks its chunked body off half-way
    broken = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n"
    stamp = Stamp()
    with RawUpstream(broken) as raw, BackgroundServer(SmallBound(upstream.url, raw.url, stamp)) as server:
        yield server, stamp


def test_the_bound_is_a_gateway_setting(
    small: tuple[BackgroundServer, Stamp], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = small
    assert readable(http10(server.port, "/handler?n=10")) == b"0123456789" * 10
    with caplog.at_level(logging.INFO):
        reply = http10(server.port, "/handler?n=11")
    assert reply.status == 502
    assert orjson.loads(readable(reply))["code"] == "upstream_response_too_large"
    # logged as what it is, one line without a traceback
    assert [r.levelname for r in caplog.records if r.name == "asgigate"] == ["WARNING"]
    assert not any(r.exc_info for r in caplog.records)
    # a reply with a known length is not held back, whatever its size
    assert readable(http10(server.port, "/direct")) == b"x" * 1000


def test_the_error_reply_goes_through_the_response_hooks_once(small: tuple[BackgroundServer, Stamp]) -> None:
    server, stamp = small
    stamp.seen.clear()
    # a handler's stream, in several messages whatever the timing (an upstream's may arrive whole in one read,
    # and a body that is all there is sent with its length, whatever the bound)
    reply = http10(server.port, "/handler?n=11")
    assert reply.status == 502
    assert stamp.seen == [502]  # the reply given up on never reached the gateway's hooks
    assert reply.header(b"x-stamp") == b"1"
    assert reply.header(b"x-request-id")
    stamp.seen.clear()
    reply = http10(server.port, "/api/stream?chunks=3&size=10")
    assert (reply.status, readable(reply), stamp.seen) == (200, b"A" * 10 + b"B" * 10 + b"C" * 10, [200])
    assert reply.header(b"x-stamp") == b"1"


def test_an_upstream_breaking_off_mid_body_is_a_502_not_a_truncated_body(small: tuple[BackgroundServer, Stamp]) -> None:
    server, _ = small
    started = time.monotonic()
    reply = http10(server.port, "/broken")
    assert time.monotonic() - started < 15
    assert reply.status == 502
    assert orjson.loads(readable(reply))["code"] == "upstream_protocol_error"


def test_a_negative_bound_is_a_configuration_error() -> None:
    from asgigate import ConfigurationError

    with pytest.raises(ConfigurationError, match="http10_buffer_limit"):
        Gateway(http10_buffer_limit=-1)


def test_a_transcoded_grpc_server_stream_gets_a_content_length() -> None:
    # the class, not only the proxy: a gateway-made stream (gRPC server streaming as NDJSON and SSE)
    from asgigate import Group
    from asgigate.grpc import GrpcService, MethodSettings

    from grpcbackend import GrpcServer, compiled

    library = "library.v1.LibraryService"

    class Transcoding(Gateway):
        def __init__(self, backend_url: str) -> None:
            super().__init__()
            self.backend_url = backend_url

        def routes(self) -> list[Route | Group]:
            descriptors = compiled().descriptor_set
            return [
                GrpcService.from_descriptor_set(descriptors, self.backend_url, services=[library]),
                GrpcService.from_descriptor_set(descriptors, self.backend_url, services=[library], prefix="/sse",
                                                name="sse",
                                                methods={"StreamBooks": MethodSettings(stream_format="sse")}),
            ]

    with GrpcServer() as backend, BackgroundServer(Transcoding(backend.url)) as server:
        lines = readable(http10(server.port, "/v1/shelves/1/books:stream?count=3")).splitlines()
        assert [orjson.loads(line)["name"] for line in lines] == [f"shelves/1/books/{i}" for i in range(3)]
        events = readable(http10(server.port, "/sse/v1/shelves/1/books:stream?count=2"))
        assert events.count(b"data: ") == 2
