"""The streaming reverse proxy, through a real uvicorn server in front of real upstreams."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from asgigate import BadRequest, Exchange, Gateway, Proxy, Route, Upstream
from asgigate.testing import BackgroundServer

from rawupstream import RawUpstream
from servers import free_port, raw_request, wait_until


class ProxyGateway(Gateway):
    def __init__(self, upstream_url: str, **options: Any) -> None:
        super().__init__(**options)
        self.backend = Upstream(upstream_url, timeout=httpx.Timeout(5.0, connect=1.0))

    def routes(self) -> list[Route]:
        return [
            Route("/api/{rest:path}", Proxy(self.backend, strip_prefix="/api")),
            Route("/users/{id:int}", Proxy(self.backend, path="/echo/people/{id}")),
            Route("/host/{rest:path}", Proxy(self.backend, strip_prefix="/host", preserve_host=True)),
            Route("/limited/{rest:path}", Proxy(self.backend, strip_prefix="/limited", max_body_size=1000)),
            Route("/quick/{rest:path}", Proxy(self.backend, strip_prefix="/quick", timeout=0.3)),
            Route("/bounded/{rest:path}", Proxy(self.backend, strip_prefix="/bounded", total_timeout=1.0)),
        ]


@pytest.fixture(scope="module")
def gateway(upstream: BackgroundServer) -> Iterator[BackgroundServer]:
    with BackgroundServer(ProxyGateway(upstream.url)) as server:
        yield server


@pytest.fixture(scope="module")
def trusting_gateway(upstream: BackgroundServer) -> Iterator[BackgroundServer]:
    with BackgroundServer(ProxyGateway(upstream.url, trusted_proxies=["127.0.0.1"])) as server:
        yield server


def echo(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def upstream_headers(data: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in data["headers"]:
        out.setdefault(name, []).append(value)
    return out


def test_forwards_method_path_and_query_byte_for_byte(gateway: BackgroundServer) -> None:
    response = raw_request(
        gateway.port,
        b"GET /api/echo/a%20b?x=%2F&y=1&x=2&flag&e=%E2%82%AC HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    data = orjson.loads(body)
    assert data["raw_path"] == "/echo/a%20b"
    assert data["query_string"] == "x=%2F&y=1&x=2&flag&e=%E2%82%AC"
    assert data["method"] == "GET"


def test_path_template_and_host(gateway: BackgroundServer, upstream: BackgroundServer) -> None:
    data = echo(httpx.get(f"{gateway.url}/users/42"))
    assert data["path"] == "/echo/people/42"
    assert upstream_headers(data)["host"] == [f"127.0.0.1:{upstream.port}"]
    preserved = echo(httpx.get(f"{gateway.url}/host/echo", headers={"host": "edge.example"}))
    assert upstream_headers(preserved)["host"] == ["edge.example"]


def test_hop_by_hop_request_headers_are_removed(gateway: BackgroundServer) -> None:
    data = echo(
        httpx.get(
            f"{gateway.url}/api/echo",
            headers={
                "connection": "keep-alive, x-private",
                "x-private": "secret",
                "keep-alive": "timeout=5",
                "te": "trailers",
                "proxy-authorization": "Basic abc",
                "x-end-to-end": "kept",
            },
        )
    )
    headers = upstream_headers(data)
    for name in ("x-private", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert name not in headers
    assert headers["x-end-to-end"] == ["kept"]


def test_hop_by_hop_response_headers_are_removed(gateway: BackgroundServer) -> None:
    response = httpx.get(f"{gateway.url}/api/hop")
    assert response.status_code == 200
    assert response.text == "ok"
    assert "x-secret" not in response.headers
    assert "keep-alive" not in response.headers
    assert response.headers["x-kept"] == "k"


def test_forwarded_headers_from_untrusted_peer_are_replaced(gateway: BackgroundServer) -> None:
    data = echo(
        httpx.get(
            f"{gateway.url}/api/echo",
            headers={"x-forwarded-for": "6.6.6.6", "forwarded": "for=6.6.6.6", "host": "shop.example"},
        )
    )
    headers = upstream_headers(data)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["shop.example"]
    assert headers["forwarded"] == ['for=127.0.0.1;proto=http;host="shop.example"']


def test_forwarded_headers_from_trusted_peer_are_extended(trusting_gateway: BackgroundServer) -> None:
    data = echo(
        httpx.get(
            f"{trusting_gateway.url}/api/echo",
            headers={"x-forwarded-for": "203.0.113.9", "forwarded": "for=203.0.113.9", "x-forwarded-proto": "https"},
        )
    )
    headers = upstream_headers(data)
    assert headers["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["forwarded"][0].startswith("for=203.0.113.9, for=127.0.0.1;proto=http")


def test_request_id_is_sent_upstream_and_returned(gateway: BackgroundServer) -> None:
    response = httpx.get(f"{gateway.url}/api/echo", headers={"x-request-id": "forged"})
    request_id = response.headers["x-request-id"]
    assert request_id and request_id != "forged"
    assert upstream_headers(echo(response))["x-request-id"] == [request_id]


@pytest.mark.parametrize("size", [0, 10, 70_000, 3 * 1024 * 1024])
def test_request_bodies_with_content_length(gateway: BackgroundServer, size: int) -> None:
    body = os.urandom(size)
    data = echo(httpx.post(f"{gateway.url}/api/echo", content=body))
    assert data["body_size"] == size
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_body(gateway: BackgroundServer) -> None:
    parts = [os.urandom(50_000) for _ in range(20)]

    def gen() -> Iterator[bytes]:
        yield from parts

    data = echo(httpx.put(f"{gateway.url}/api/echo", content=gen()))
    assert data["method"] == "PUT"
    assert data["body_size"] == sum(map(len, parts))
    assert data["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
    assert "chunked" in upstream_headers(data).get("transfer-encoding", [""])[0]


def test_streamed_response(gateway: BackgroundServer) -> None:
    with httpx.stream("GET", f"{gateway.url}/api/stream?chunks=50&size=10000") as response:
        assert response.status_code == 200
        body = b"".join(response.iter_bytes())
    assert len(body) == 500_000
    assert body[:10000] == b"A" * 10000


def test_event_stream_is_flushed_as_it_arrives(gateway: BackgroundServer) -> None:
    arrivals = []
    start = time.monotonic()
    # Events 1 s apart: a loaded machine's delays stay far below the gap that buffering one event would add.
    with httpx.stream("GET", f"{gateway.url}/api/sse?events=3&interval=1.0") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 3
    # The first event must arrive long before the stream ends (~3 s): nothing is buffered.
    assert arrivals[0] < 0.8
    assert arrivals[2] - arrivals[0] > 1.5


def test_compressed_body_passes_through_untouched(gateway: BackgroundServer) -> None:
    with httpx.stream("GET", f"{gateway.url}/api/gzip", headers={"accept-encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == b"hello " * 1000
    assert int(response.headers["content-length"]) == len(raw)


def test_upstream_status_and_head(gateway: BackgroundServer) -> None:
    assert httpx.get(f"{gateway.url}/api/status/418").status_code == 418
    response = httpx.head(f"{gateway.url}/api/bytes?n=5000")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "5000"
    # The connection is still good afterwards.
    assert len(httpx.get(f"{gateway.url}/api/bytes?n=5000").content) == 5000


def test_connect_refused_is_502(upstream: BackgroundServer) -> None:
    with BackgroundServer(ProxyGateway(f"http://127.0.0.1:{free_port()}")) as server:
        response = httpx.get(f"{server.url}/api/echo")
    assert response.status_code == 502
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "upstream_connect_failed"
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text and "127.0.0.1" not in response.text


def test_read_timeout_is_504(gateway: BackgroundServer) -> None:
    started = time.monotonic()
    response = httpx.get(f"{gateway.url}/quick/slow?delay=5", timeout=10)
    assert response.status_code == 504
    assert response.json()["code"] == "upstream_timeout"
    assert time.monotonic() - started < 4  # the 0.3 s read timeout, not the upstream's 5 s


def test_total_timeout_is_504(gateway: BackgroundServer) -> None:
    response = httpx.get(f"{gateway.url}/bounded/slow?delay=3")
    assert response.status_code == 504
    assert response.json()["code"] == "upstream_timeout"


def test_total_timeout_mid_stream_aborts(gateway: BackgroundServer) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", f"{gateway.url}/bounded/stream?chunks=50&size=100&delay=0.1") as response:
            b"".join(response.iter_bytes())


def test_body_over_limit_is_413_before_anything_is_sent(gateway: BackgroundServer, upstream: BackgroundServer) -> None:
    response = httpx.post(f"{gateway.url}/limited/echo", content=b"x" * 5000)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert echo(httpx.post(f"{gateway.url}/limited/echo", content=b"x" * 1000))["body_size"] == 1000


def test_chunked_body_over_limit_is_413(gateway: BackgroundServer) -> None:
    def gen() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 400

    response = httpx.post(f"{gateway.url}/limited/echo", content=gen())
    assert response.status_code == 413


def test_upstream_dying_mid_body_aborts_the_client_connection() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 5000
    with RawUpstream(reply) as bad, BackgroundServer(ProxyGateway(bad.url)) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("GET", f"{server.url}/api/x") as response:
                assert response.status_code == 200
                b"".join(response.iter_bytes())
        # Chunked framing: the client must not see a terminating chunk.
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        bad.reply = chunked
        raw = raw_request(server.port, b"GET /api/x HTTP/1.1\r\nHost: t\r\n\r\n", timeout=3)
        assert b"hello" in raw
        assert not raw.endswith(b"0\r\n\r\n")


def test_malformed_upstream_response_is_502() -> None:
    with RawUpstream(b"NOT HTTP AT ALL\r\n\r\n") as bad, BackgroundServer(ProxyGateway(bad.url)) as server:
        response = httpx.get(f"{server.url}/api/x")
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_protocol_error"


def test_client_disconnect_cancels_the_upstream_request(upstream: BackgroundServer) -> None:
    gateway = ProxyGateway(upstream.url)
    with BackgroundServer(gateway) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /api/stream?chunks=200&size=1000&delay=0.05 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
            time.sleep(0.3)  # the behaviour under test: a client that goes away in the middle of the stream
        pool = gateway.backend.pool
        wait_until(lambda: pool.active_count == 0)
        assert pool.active_count == 0
        # The stream was not read to its end (200 chunks * 50 ms = 10 s) and the gateway still serves.
        assert httpx.get(f"{server.url}/api/echo").status_code == 200


def test_keep_alive_connections_are_reused(upstream: BackgroundServer) -> None:
    gateway = ProxyGateway(upstream.url)
    with BackgroundServer(gateway) as server, httpx.Client() as client:
        for _ in range(20):
            assert client.get(f"{server.url}/api/echo").status_code == 200
        # The client can have the last byte before the gateway has parked the connection: wait for that.
        pool = gateway.backend.pool
        wait_until(lambda: pool.active_count == 0)
        assert pool.active_count == 0
        assert pool.idle_count == 1


def test_reply_carries_one_date_and_one_server_header(gateway: BackgroundServer) -> None:
    response = httpx.get(f"{gateway.url}/api/echo")
    assert len(response.headers.get_list("date")) == 1
    assert response.headers.get_list("server") == ["uvicorn"]


def test_route_connect_timeout_overrides_the_upstream() -> None:
    # A listener whose accept queue is full and never drained: Linux drops further SYNs, so connect() hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))

        class Hanging(Gateway):
            def __init__(self) -> None:
                super().__init__()
                self.backend = Upstream(f"http://127.0.0.1:{port}", timeout=httpx.Timeout(10.0, connect=10.0))

            def routes(self) -> list[Route]:
                return [Route("/{rest:path}", Proxy(self.backend, timeout=httpx.Timeout(5.0, connect=0.3)))]

        try:
            with BackgroundServer(Hanging()) as server:
                started = time.monotonic()
                response = httpx.get(f"{server.url}/x", timeout=10)
                elapsed = time.monotonic() - started
        finally:
            for filler in fillers:
                filler.close()
    assert response.status_code == 504
    assert response.json()["code"] == "upstream_timeout"
    assert 0.25 < elapsed < 3


@pytest.mark.parametrize("value", [b"9" * 5000, b"9" * 19, b"-1", b"\xb2", b"1 "])
def test_a_content_length_that_is_no_length_is_a_400(value: bytes) -> None:
    # Servers refuse most of these themselves; a gateway called in-process, or behind a lenient server, must
    # too (int() refuses more than 4300 digits: that was a 500)
    scope = {"type": "http", "method": "POST", "headers": [(b"host", b"gw"), (b"content-length", value)],
             "client": ("127.0.0.1", 1)}
    with pytest.raises(BadRequest, match="Content-Length"):
        Proxy(Upstream("http://127.0.0.1:9")).request_headers(Exchange(scope, Gateway()))



def test_two_host_headers_are_a_400(gateway: BackgroundServer) -> None:
    """RFC 9112 3.2: the gateway would route and forward by one, an upstream might read the other."""
    for path in (b"/api/echo", b"/host/echo"):
        response = raw_request(
            gateway.port,
            b"GET " + path + b" HTTP/1.1\r\nHost: edge.test\r\nHost: internal.test\r\nConnection: close\r\n\r\n",
        )
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), head
        assert orjson.loads(body)["code"] == "bad_request"


def test_a_host_predicate_refuses_two_host_headers() -> None:
    class ByHost(Gateway):
        def routes(self) -> list[Route]:
            from asgigate import Direct

            return [Route("/", Direct(text="admin"), host="admin.test"), Route("/", Direct(text="public"))]

    with BackgroundServer(ByHost()) as server:
        for hosts in (b"Host: admin.test\r\nHost: www.test\r\n", b"Host: www.test\r\nHost: admin.test\r\n"):
            response = raw_request(server.port, b"GET / HTTP/1.1\r\n" + hosts + b"Connection: close\r\n\r\n")
            assert response.startswith(b"HTTP/1.1 400"), response
        response = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"admin")


def test_connect_is_not_tunnelled(gateway: BackgroundServer, upstream: BackgroundServer) -> None:
    """A 2xx to CONNECT would make the server treat the connection as a tunnel: the proxy refuses it."""
    response = raw_request(gateway.port, b"CONNECT /api/echo HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405"), head
    assert b"\r\nallow: delete, get, head, options, patch, post, put, trace\r\n" in head.lower() + b"\r\n"
    assert orjson.loads(body)["code"] == "method_not_allowed"


def test_a_proxy_route_for_connect_is_a_configuration_error(upstream: BackgroundServer) -> None:
    from asgigate import ConfigurationError

    class Tunnel(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/t", Proxy(Upstream(upstream.url)), methods=["CONNECT"])]

    with pytest.raises(ConfigurationError, match="CONNECT"):
        Tunnel().build()
