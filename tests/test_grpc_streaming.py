"""Streaming transcoding against a real grpc.aio backend: server streams in three framings, client streams, bidi,
and HttpBody (raw bytes) both ways."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from asgigate import Gateway, Group, Route
from asgigate.grpc import GrpcService, MethodSettings
from asgigate.testing import BackgroundServer

from grpcbackend import CANCELLED, GrpcServer, compiled
from servers import wait_until

LIBRARY = "library.v1.LibraryService"


@pytest.fixture(scope="module")
def backend() -> Iterator[GrpcServer]:
    with GrpcServer() as server:
        yield server


class StreamingGateway(Gateway):
    def __init__(self, backend_url: str) -> None:
        super().__init__()
        self.backend_url = backend_url

    def routes(self) -> list[Route | Group]:
        descriptors = compiled().descriptor_set
        return [
            GrpcService.from_descriptor_set(descriptors, self.backend_url, services=[LIBRARY]),
            GrpcService.from_descriptor_set(descriptors, self.backend_url, services=[LIBRARY], prefix="/array",
                                            stream_format="json-array", name="array"),
            GrpcService.from_descriptor_set(descriptors, self.backend_url, services=[LIBRARY], prefix="/sse",
                                            name="sse", methods={"StreamBooks": MethodSettings(stream_format="sse")}),
        ]


@pytest.fixture(scope="module")
def client(backend: GrpcServer) -> Iterator[httpx.Client]:
    with BackgroundServer(StreamingGateway(backend.url)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield http


def books(n: int, shelf: int = 1) -> list[dict[str, Any]]:
    return [{"name": f"shelves/{shelf}/books/{i}", **({"pages": i} if i else {})} for i in range(n)]


# --- server streaming ---------------------------------------------------------------------------------------


def test_ndjson_by_default(client: httpx.Client) -> None:
    response = client.get("/v1/shelves/1/books:stream", params={"count": 3})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in response.text.splitlines()] == books(3)


def test_messages_are_flushed_one_by_one(client: httpx.Client) -> None:
    started = time.monotonic()
    # 1 s apart: a loaded machine's delays stay far below the gap that holding back one message would add
    with client.stream("GET", "/v1/shelves/1/books:stream", params={"count": 3, "delayMs": 1000}) as response:
        lines = response.iter_lines()
        first = next(lines)
        first_at = time.monotonic() - started
        rest = list(lines)
        total = time.monotonic() - started
    assert json.loads(first) == books(1)[0]
    assert len(rest) == 2
    assert first_at < 0.8 < total  # the first message came before the backend finished


def test_client_going_away_cancels_the_call(client: httpx.Client) -> None:
    with client.stream("GET", "/v1/shelves/4242/books:stream", params={"count": 200, "delayMs": 50}) as response:
        assert json.loads(next(response.iter_lines()))["name"] == "shelves/4242/books/0"
    wait_until(lambda: 4242 in CANCELLED, within=5)
    assert 4242 in CANCELLED


def test_json_array(client: httpx.Client) -> None:
    response = client.get("/array/v1/shelves/2/books:stream", params={"count": 3})
    assert response.headers["content-type"] == "application/json"
    assert response.json() == books(3, 2)
    assert client.get("/array/v1/shelves/2/books:stream", params={"count": 0}).json() == []


def test_server_sent_events(client: httpx.Client) -> None:
    response = client.get("/sse/v1/shelves/3/books:stream", params={"count": 2})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block]
    assert [json.loads(e.removeprefix("data: ")) for e in events] == books(2, 3)


def test_empty_stream(client: httpx.Client) -> None:
    response = client.get("/v1/shelves/1/books:stream", params={"count": 0})
    assert response.status_code == 200
    assert response.text == ""


def test_error_before_the_first_message_is_a_plain_error_reply(client: httpx.Client) -> None:
    for path in ("/v1/shelves/1/books:stream", "/array/v1/shelves/1/books:stream", "/sse/v1/shelves/1/books:stream"):
        response = client.get(path, params={"count": 3, "failAfter": -1, "failCode": 5})
        assert response.status_code == 404
        assert response.json() == {"code": 5, "message": "failed before any book", "details": []}


def test_error_after_the_last_message(client: httpx.Client) -> None:
    response = client.get("/v1/shelves/1/books:stream", params={"count": 2, "failAfter": 2, "failCode": 5})
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[:2] == books(2)
    assert lines[2] == {"error": {"code": 5, "message": "failed at the end", "details": []}}


def test_error_mid_stream_in_each_framing(client: httpx.Client) -> None:
    params = {"count": 4, "failAfter": 2, "failCode": 14}
    lines = [json.loads(line) for line in client.get("/v1/shelves/1/books:stream", params=params).text.splitlines()]
    assert lines == [*books(2), {"error": {"code": 14, "message": "failed after 2", "details": []}}]
    array = client.get("/array/v1/shelves/1/books:stream", params=params).json()
    assert array == [*books(2), {"error": {"code": 14, "message": "failed after 2", "details": []}}]
    text = client.get("/sse/v1/shelves/1/books:stream", params=params).text
    events = [block for block in text.split("\n\n") if block]
    assert events[-1] == 'event: error\ndata: {"error":{"code":14,"message":"failed after 2","details":[]}}'
    assert len(events) == 3


def test_bad_request_on_a_stream_is_400(client: httpx.Client) -> None:
    response = client.get("/v1/shelves/x/books:stream")
    assert response.status_code == 400
    assert response.json()["code"] == 3


# --- client streaming and bidi ------------------------------------------------------------------------------


def test_client_stream_from_ndjson(client: httpx.Client) -> None:
    body = b'{"name": "a", "title": "A"}\n{"name": "b"}\n\n{"name": "c", "authorName": "Ada"}'
    response = client.post("/v1/books:collect", content=body, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "books": [{"name": "a", "title": "A"}, {"name": "b"}, {"name": "c", "authorName": "Ada"}],
        "nextPageToken": "3",
    }


def test_client_stream_sent_in_pieces(client: httpx.Client) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"name": "a"}\n{"na'
        time.sleep(0.05)  # the behaviour under test: the second piece comes later, in its own chunk
        yield b'me": "b"}\n'

    response = client.post("/v1/books:collect", content=pieces())
    assert response.json()["books"] == [{"name": "a"}, {"name": "b"}]


def test_client_stream_from_a_json_array(client: httpx.Client) -> None:
    response = client.post("/v1/books:collect", json=[{"name": "a"}, {"name": "b"}])
    assert response.json()["nextPageToken"] == "2"


def test_client_stream_with_a_bad_line_is_400(client: httpx.Client) -> None:
    response = client.post("/v1/books:collect", content=b'{"name": "a"}\n{"nope": 1}\n')
    assert response.status_code == 400
    assert response.json()["code"] == 3
    response = client.post("/v1/books:collect", content=b'{"name": "a"}\n{broken\n')
    assert response.status_code == 400


def test_bidi_stream(client: httpx.Client) -> None:
    response = client.post("/v1/books:chat", content=b'{"name": "a", "title": "x"}\n{"name": "b", "title": "y"}\n')
    assert response.status_code == 200
    assert [json.loads(line) for line in response.text.splitlines()] == [
        {"name": "a", "title": "X"}, {"name": "b", "title": "Y"}]


def test_bidi_stream_with_a_bad_first_line_is_400(client: httpx.Client) -> None:
    response = client.post("/v1/books:chat", content=b'{"bad": 1}\n')
    assert response.status_code == 400
    assert response.json()["code"] == 3


def test_bidi_stream_with_a_bad_later_line_ends_with_an_error_frame(client: httpx.Client) -> None:
    # The bad line is sent once the first answer is back (a fixed pause can be too short on a busy machine):
    # the reply has started by then, so the error can only come as a frame.
    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    with socket.create_connection(("127.0.0.1", client.base_url.port or 80), timeout=10) as sock:
        head = b"POST /v1/books:chat HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        sock.sendall(head + chunk(b'{"name": "a", "title": "x"}\n'))
        received = b""
        while b'"X"' not in received:
            part = sock.recv(65536)
            assert part, received
            received += part
        sock.sendall(chunk(b'{"name": "b", "nope": 1}\n') + b"0\r\n\r\n")
        while part := sock.recv(65536):
            received += part
    reply_head, _, rest = received.partition(b"\r\n\r\n")
    assert reply_head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in reply_head.lower()
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            break
        body, rest = body + rest[:size], rest[size + 2:]
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines[0] == {"name": "a", "title": "X"}
    assert lines[1]["error"]["code"] == 3
    assert lines[1]["error"]["details"][0]["reason"] == "invalid_body"


# --- google.api.HttpBody ------------------------------------------------------------------------------------


def test_http_body_request(client: httpx.Client) -> None:
    payload = bytes(range(256))
    response = client.post("/v1/upload", content=payload, headers={"content-type": "image/png"})
    assert response.status_code == 200
    data = response.json()
    assert data["contentType"] == "image/png"
    assert base64.b64decode(data["data"]) == payload


def test_http_body_field_with_path_variable(client: httpx.Client) -> None:
    response = client.put("/v1/uploads/report.csv", content=b"a,b\n", headers={"content-type": "text/csv"})
    data = response.json()
    assert data["requestJson"] == "report.csv"
    assert data["contentType"] == "text/csv"


def test_http_body_response(client: httpx.Client) -> None:
    response = client.get("/v1/downloads/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv"
    assert response.content == b"name\nexport\n"
