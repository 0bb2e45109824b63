"""Direct replies and redirects: through a real server, plus the target's `handle` called directly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from asgigate import ConfigurationError, Direct, Exchange, Gateway, Group, Redirect, Route
from asgigate.testing import BackgroundServer
from asgigate.types import Message

from servers import raw_request

PAYLOAD = {"ok": True, "n": [1, 2, 3], "name": "caf\u00e9"}


class Replies(Gateway):
    def __init__(self, static: Path) -> None:
        super().__init__(access_log=False)
        self.static = static

    def routes(self) -> list[Route | Group]:
        return [
            Route("/json", Direct(json=PAYLOAD)),
            Route("/null", Direct(json=None)),
            Route("/text", Direct(text="h\u00e9llo", status=201,
                                  headers={"X-Extra": "1", "Cache-Control": "no-store"})),
            Route("/bytes", Direct(body=b"\x00\x01\x02")),
            Route("/typed", Direct(body=b"<x/>", content_type="application/xml")),
            Route("/own-type", Direct(text="a,b", headers={"Content-Type": "text/csv"})),
            Route("/gone", Direct(status=410)),
            Route("/empty", Direct(status=204)),
            Route("/file", Direct(file=self.static / "note.txt", headers={"X-File": "yes"})),
            Route("/file-typed", Direct(file=self.static / "note.txt", content_type="text/markdown")),
            Route("/old/{id}", Redirect("/new/{id}", status=308)),
            Route("/plain-old", Redirect("/plain-new")),
            Route("/noquery/{id}", Redirect("/new/{id}", keep_query=False)),
            Route("/with-query/{id}", Redirect("/new/{id}?from=old", status=301)),
            Route("/abs/{id:int}", Redirect("https://example.com/users/{id}", status=302)),
            Route("/tree/{rest:path}", Redirect("/archive/{rest}")),
            Route("/frag/{id}", Redirect("/new/{id}?from=old#top")),
            Route("/frag-only", Redirect("/docs#install")),
            Group("/v1", [Route("/users/{uid}", Redirect("/v2/users/{uid}", status=308))]),
        ]


@pytest.fixture(scope="module")
def static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("static")
    (directory / "note.txt").write_text("file contents\n" * 100)
    return directory


@pytest.fixture(scope="module")
def server(static: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(Replies(static)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as http:
        yield http


def test_json(client: httpx.Client) -> None:
    response = client.get("/json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == PAYLOAD
    assert response.headers["content-length"] == str(len(orjson.dumps(PAYLOAD)))
    null = client.get("/null")
    assert null.content == b"null"
    assert null.headers["content-type"] == "application/json"


def test_text_status_and_headers(client: httpx.Client) -> None:
    response = client.get("/text")
    assert response.status_code == 201
    assert response.text == "h\u00e9llo"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-extra"] == "1"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-length"] == str(len("h\u00e9llo".encode()))


def test_bytes_and_content_types(client: httpx.Client) -> None:
    response = client.get("/bytes")
    assert response.content == b"\x00\x01\x02"
    assert response.headers["content-type"] == "application/octet-stream"
    assert client.get("/typed").headers["content-type"] == "application/xml"
    own = client.get("/own-type")
    assert own.headers.get_list("content-type") == ["text/csv"]
    assert own.text == "a,b"


def test_no_body(client: httpx.Client) -> None:
    gone = client.get("/gone")
    assert gone.status_code == 410
    assert gone.content == b""
    assert gone.headers["content-length"] == "0"
    empty = client.get("/empty")
    assert empty.status_code == 204
    assert "content-length" not in empty.headers


def test_file(client: httpx.Client, static: Path) -> None:
    response = client.get("/file")
    assert response.status_code == 200
    assert response.content == (static / "note.txt").read_bytes()
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-file"] == "yes"
    assert client.get("/file-typed").headers["content-type"].startswith("text/markdown")


@pytest.mark.parametrize("path", ["/json", "/text", "/file"])
def test_head_has_no_body(server: BackgroundServer, client: httpx.Client, path: str) -> None:
    full = client.get(path)
    raw = raw_request(server.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + str(full.status_code).encode())
    assert body == b""
    assert f"\r\ncontent-length: {len(full.content)}\r\n".encode() in head.lower()


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_direct_handle_called_directly(method: str) -> None:
    target = Direct(json={"a": 1}, headers={"X-A": "b"})
    scope: dict[str, Any] = {"type": "http", "method": method, "path": "/", "headers": [], "query_string": b""}
    exchange = Exchange(scope, Gateway())
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await target.handle(exchange, receive, send)
    await target.handle(exchange, receive, send)  # hooks may have mutated the first reply's headers
    sent[0]["headers"].append((b"x-mutated", b"1"))
    await target.handle(exchange, receive, send)
    start, body = sent[-2], sent[-1]
    assert start["status"] == 200
    assert (b"x-mutated", b"1") not in start["headers"]
    assert dict(start["headers"])[b"content-length"] == b"7"
    assert dict(start["headers"])[b"x-a"] == b"b"
    assert body["body"] == (b'{"a":1}' if method == "GET" else b"")


# --- redirects ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "location"),
    [
        ("/old/42", 308, "/new/42"),
        ("/old/42?a=1&b=two", 308, "/new/42?a=1&b=two"),
        ("/plain-old?x=1", 307, "/plain-new?x=1"),
        ("/noquery/7?a=1", 307, "/new/7"),
        ("/with-query/7?a=1", 301, "/new/7?from=old&a=1"),
        ("/frag/3?a=1", 307, "/new/3?from=old&a=1#top"),
        ("/frag-only?a=1", 307, "/docs?a=1#install"),
        ("/frag-only", 307, "/docs#install"),
        ("/abs/5", 302, "https://example.com/users/5"),
        ("/tree/a/b%2Fc/caf%C3%A9", 307, "/archive/a/b%2Fc/caf%C3%A9"),
        ("/tree/x%23y", 307, "/archive/x%23y"),
        ("/v1/users/u1", 308, "/v2/users/u1"),
    ],
)
def test_redirect(client: httpx.Client, path: str, status: int, location: str) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["location"] == location
    assert response.content == b""


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Direct(json={}, text="x"), "json and text"),
        (lambda: Direct(text="x", body=b"y"), "text and body"),
        (lambda: Direct(json=1, file="/x"), "json and file"),
        (lambda: Direct(file="/definitely/not/here.txt"), "does not exist"),
        (lambda: Direct(status=99), "not an HTTP status"),
        (lambda: Direct(status=600), "not an HTTP status"),
        (lambda: Redirect("/x", status=200), "not a redirect status"),
    ],
)
def test_construction_errors(make: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()


def test_redirect_with_a_parameter_the_route_does_not_capture() -> None:
    class Broken(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/old/{id}", Redirect("/new/{uid}/{id}"))]

    with pytest.raises(ConfigurationError, match=r"\['uid'\].*'/old/\{id\}'"):
        Broken().build()


def test_redirect_parameters_only_in_the_path() -> None:
    class Broken(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/old/{id}", Redirect("/search?user={id}"))]

    with pytest.raises(ConfigurationError, match="only be used in the path"):
        Broken().build()


def test_reprs() -> None:
    assert repr(Direct(json={"a": 1})) == "Direct(status=200, 7 bytes application/json)"
    assert repr(Redirect("/n", status=308)) == "Redirect('/n', status=308)"


def test_a_handler_reads_the_request_body() -> None:
    """A BFF's POST handler needs the body: `exchange.request` reads it there, even after a policy looked at it."""
    from asgigate import JSONResponse, Policy

    class Peek(Policy):
        async def on_request(self, exchange: Exchange) -> None:
            exchange.state["type"] = exchange.request.headers.get("content-type")  # the head, made before the body

    async def create(exchange: Exchange) -> JSONResponse:
        order = await exchange.request.json()
        return JSONResponse({"created": order, "type": exchange.state["type"]}, status_code=201)

    class Orders(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/orders", create, methods=["POST"], policies=[Peek()])]

    with BackgroundServer(Orders()) as server:
        response = httpx.post(f"{server.url}/orders", json={"sku": "A-1", "qty": 2})
        assert response.status_code == 201, response.text
        assert response.json() == {"created": {"sku": "A-1", "qty": 2}, "type": "application/json"}
