"""Location and Content-Location of proxied replies: the upstream's own URLs become the client's.

A real upstream (uvicorn) answers with redirects whose Location names its own address, as a backend that builds
absolute URLs does; a real gateway (uvicorn) proxies to it on routes with each kind of path rewriting.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount as StarletteMount

from asgigate import ConfigurationError, Gateway, Proxy, Route, Upstream
from asgigate.exchange import Exchange
from asgigate.testing import BackgroundServer

from servers import raw_request


async def redirecting(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Any path: `?to=/path` answers 302 with `Location: http://<own address>/path` (`&host=1`: the address from the
    Host header it was sent, as frameworks build it), `?raw=value` with exactly that Location; `&cl=/path` adds a
    Content-Location on the upstream's address."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    server = scope["server"]
    own = f"{server[0]}:{server[1]}"
    if query.get("host"):
        own = dict(scope["headers"])[b"host"].decode()
    headers = [(b"content-length", b"0")]
    if "raw" in query:
        headers.append((b"location", query["raw"].encode()))
    elif "to" in query:
        headers.append((b"location", f"http://{own}{query['to']}".encode()))
    if "cl" in query:
        headers.append((b"content-location", f"http://{own}{query['cl']}".encode()))
    await send({"type": "http.response.start", "status": 302 if "raw" in query or "to" in query else 201,
                "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def renamed(exchange: Exchange, value: str) -> str:
    return value.replace("/get", "/renamed") + ";route=" + (exchange.route.name if exchange.route else "")


class LocationGateway(Gateway):
    def __init__(self, upstream_url: str, **options: Any) -> None:
        super().__init__(**options)
        self.backend = Upstream(upstream_url)
        self.based = Upstream(upstream_url + "/base")

    def routes(self) -> list[Route]:
        backend = self.backend
        return [
            Route("/v1/{rest:path}", Proxy(backend, strip_prefix="/v1")),
            Route("/plain/{rest:path}", Proxy(backend)),
            Route("/b/{rest:path}", Proxy(self.based, strip_prefix="/b")),
            Route("/users/{id:int}", Proxy(backend, path="/people/{id}/profile")),
            Route("/t/{tenant}/users/{id:int}", Proxy(backend, path="/people/{id}/profile")),
            Route("/off/{rest:path}", Proxy(backend, strip_prefix="/off", rewrite_location=False)),
            Route("/m/{rest:path}", Proxy(backend, strip_prefix="/m", rewrite_location={
                f"{backend.url}/": "https://public.example/m/",
                "http://elsewhere.example/": "/from-elsewhere/",
            })),
            Route("/f/{rest:path}", Proxy(backend, strip_prefix="/f", rewrite_location=renamed), name="custom"),
            Route("/ph/{rest:path}", Proxy(backend, strip_prefix="/ph", preserve_host=True)),
        ]


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[BackgroundServer]:
    with BackgroundServer(redirecting) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream_server: BackgroundServer) -> Iterator[BackgroundServer]:
    with BackgroundServer(LocationGateway(upstream_server.url)) as server:
        yield server


@pytest.fixture(scope="module")
def trusting(upstream_server: BackgroundServer) -> Iterator[BackgroundServer]:
    with BackgroundServer(LocationGateway(upstream_server.url, trusted_proxies=["127.0.0.1"])) as server:
        yield server


def location(server: BackgroundServer, target: str, header: str = "location", **headers: str) -> str | None:
    response = httpx.get(server.url + target, headers=headers, follow_redirects=False, timeout=10)
    value: str | None = response.headers.get(header)
    return value


def test_strip_prefix_is_put_back(gateway: BackgroundServer) -> None:
    assert location(gateway, "/v1/start?to=/get") == f"{gateway.url}/v1/get"
    to = quote("/a/b%2Fc?x=1%202#frag", safe="")  # the query and fragment of a location are kept as they are
    assert location(gateway, f"/v1/start?to={to}") == f"{gateway.url}/v1/a/b%2Fc?x=1%202#frag"
    assert location(gateway, "/v1/start?to=/") == f"{gateway.url}/v1/"


def test_an_unrewritten_path_keeps_its_path(gateway: BackgroundServer) -> None:
    assert location(gateway, "/plain/start?to=/plain/next") == f"{gateway.url}/plain/next"


def test_the_base_path_is_removed(gateway: BackgroundServer) -> None:
    assert location(gateway, "/b/start?to=/base/get") == f"{gateway.url}/b/get"
    assert location(gateway, "/b/start?to=/base") == f"{gateway.url}/b/"
    # outside the base path nothing reverses the path: the client still never sees the upstream's address
    assert location(gateway, "/b/start?to=/basement/x") == f"{gateway.url}/basement/x"


def test_a_templated_path_maps_back_to_the_route(gateway: BackgroundServer) -> None:
    assert location(gateway, "/users/7?to=/people/7/profile") == f"{gateway.url}/users/7"
    assert location(gateway, "/users/7?to=/people/8/profile") == f"{gateway.url}/users/8"
    # the route's other parameters keep this request's values
    assert location(gateway, "/t/acme/users/7?to=/people/9/profile") == f"{gateway.url}/t/acme/users/9"
    # a value the route's parameter type refuses, or a path the template does not match: the origin changes only
    assert location(gateway, "/users/7?to=/people/abc/profile") == f"{gateway.url}/people/abc/profile"
    assert location(gateway, "/users/7?to=/elsewhere") == f"{gateway.url}/elsewhere"


def test_content_location_too(gateway: BackgroundServer) -> None:
    assert location(gateway, "/v1/items?cl=/items/3", header="content-location") == f"{gateway.url}/v1/items/3"


def test_relative_and_foreign_locations_pass_unchanged(
    gateway: BackgroundServer, upstream_server: BackgroundServer
) -> None:
    assert location(gateway, "/v1/x?raw=/relative/path") == "/relative/path"
    assert location(gateway, "/v1/x?raw=next") == "next"
    assert location(gateway, "/v1/x?raw=http://other.example/get") == "http://other.example/get"
    # the upstream's host on another scheme or port is another origin
    port = upstream_server.port
    assert location(gateway, f"/v1/x?raw=https://127.0.0.1:{port}/get") == f"https://127.0.0.1:{port}/get"
    assert location(gateway, f"/v1/x?raw=http://127.0.0.1:{port + 1}/get") == f"http://127.0.0.1:{port + 1}/get"
    assert location(gateway, f"/v1/x?raw=http://user@127.0.0.1:{port}/get") == f"http://user@127.0.0.1:{port}/get"
    # a scheme-relative URL on the upstream's address is the upstream's
    assert location(gateway, f"/v1/x?raw=//127.0.0.1:{port}/get") == f"{gateway.url}/v1/get"


def test_off(gateway: BackgroundServer, upstream_server: BackgroundServer) -> None:
    assert location(gateway, "/off/x?to=/get") == f"{upstream_server.url}/get"


def test_a_custom_mapping(gateway: BackgroundServer) -> None:
    assert location(gateway, "/m/x?to=/get") == "https://public.example/m/get"
    assert location(gateway, "/m/x?raw=http://elsewhere.example/y") == "/from-elsewhere/y"
    assert location(gateway, "/m/x?raw=/relative") == "/relative"


def test_a_custom_function(gateway: BackgroundServer, upstream_server: BackgroundServer) -> None:
    assert location(gateway, "/f/x?to=/get") == f"{upstream_server.url}/renamed;route=custom"


def test_preserve_host_urls_built_from_the_host_sent(gateway: BackgroundServer) -> None:
    # the upstream saw the client's Host and built its URL from it, with its own path and scheme
    assert location(gateway, "/ph/x?to=/get&host=1", host="public.example") == "http://public.example/ph/get"


def test_forwarded_proto_and_host_only_from_trusted_proxies(
    gateway: BackgroundServer, trusting: BackgroundServer
) -> None:
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-host": "public.example"}
    assert location(gateway, "/v1/x?to=/get", **forwarded) == f"{gateway.url}/v1/get"
    assert location(trusting, "/v1/x?to=/get", **forwarded) == "https://public.example/v1/get"
    # a list: the value the trusted proxy itself added (the last one)
    chained = {"x-forwarded-proto": "http, https", "x-forwarded-host": "forged.example, public.example"}
    assert location(trusting, "/v1/x?to=/get", **chained) == "https://public.example/v1/get"
    # a forwarded value that is no scheme or no host is ignored
    garbage = {"x-forwarded-proto": "gopher", "x-forwarded-host": "a/b"}
    assert location(trusting, "/v1/x?to=/get", **garbage) == f"{trusting.url}/v1/get"


def test_without_a_host_header_the_servers_address(gateway: BackgroundServer) -> None:
    reply = raw_request(gateway.port, b"GET /v1/x?to=/get HTTP/1.0\r\n\r\n")
    assert f"\r\nlocation: http://127.0.0.1:{gateway.port}/v1/get\r\n".encode() in reply


def test_under_a_root_path(upstream_server: BackgroundServer) -> None:
    gateway = LocationGateway(upstream_server.url)
    # a mounted gateway gets no lifespan events of its own: the parent runs its lifespan (which closes its pools)
    parent = Starlette(routes=[StarletteMount("/gw", app=gateway)], lifespan=gateway.lifespan)
    with BackgroundServer(parent) as server:
        assert location(server, "/gw/v1/x?to=/get") == f"{server.url}/gw/v1/get"


def test_a_rewrite_location_that_is_none_of_the_kinds_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="rewrite_location"):
        Proxy(Upstream("http://127.0.0.1:1"), rewrite_location="yes")  # type: ignore[arg-type]
