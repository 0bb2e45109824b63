"""Starlette and FastAPI apps mounted in a gateway, and a gateway mounted in Starlette and FastAPI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as StarletteJSON
from starlette.responses import PlainTextResponse
from starlette.routing import Mount as StarletteMount
from starlette.routing import Route as StarletteRoute

from asgigate import Exchange, Gateway, Mount, Policy, ResponseHead, Route
from asgigate.responses import JSONResponse
from asgigate.testing import BackgroundServer

from servers import raw_get


def sub_starlette() -> Starlette:
    async def index(request: Request) -> StarletteJSON:
        return StarletteJSON({"at": "index", "item_url": str(request.url_for("item", id=3))})

    async def item(request: Request) -> StarletteJSON:
        return StarletteJSON(
            {
                "id": request.path_params["id"],
                "path": request.scope["path"],
                "root_path": request.scope["root_path"],
                "url": str(request.url),
                "self_url": str(request.url_for("item", id=request.path_params["id"])),
                "has_exchange": "asgigate.exchange" in request.scope,
            }
        )

    async def files(request: Request) -> StarletteJSON:
        return StarletteJSON({"name": request.path_params["name"]})

    return Starlette(
        routes=[
            StarletteRoute("/", index),
            StarletteRoute("/items/{id:int}", item, name="item"),
            StarletteRoute("/files/{name:path}", files),
        ]
    )


def sub_fastapi() -> FastAPI:
    api = FastAPI(title="sub")

    @api.get("/items/{item_id}", name="get_item")
    async def get_item(item_id: int, request: FastAPIRequest) -> dict[str, Any]:
        return {
            "item_id": item_id,
            "root_path": request.scope["root_path"],
            "self_url": str(request.url_for("get_item", item_id=item_id)),
        }

    return api


class Tag(Policy):
    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        head.headers["x-gateway-route"] = exchange.route.name if exchange.route else "-"


class Host(Gateway):
    """A gateway with both kinds of apps mounted, and its own routes around them."""

    def __init__(self) -> None:
        super().__init__(access_log=False)
        self.started = 0
        self.stopped = 0

    async def startup(self) -> None:
        self.started += 1

    async def shutdown(self) -> None:
        self.stopped += 1

    def policies(self) -> list[Policy]:
        return [Tag()]

    def routes(self) -> list[Any]:
        async def where(exchange: Exchange) -> JSONResponse:
            return JSONResponse(
                {"path": exchange.path, "root_path": exchange.scope.get("root_path", ""), "params": exchange.params}
            )

        return [
            Route("/hello/{name}", where),
            Mount("/sub", sub_starlette()),
            Mount("/api", sub_fastapi()),
            Route("/subway", where),
        ]


@pytest.fixture(scope="module")
def host() -> Iterator[tuple[BackgroundServer, httpx.Client]]:
    with BackgroundServer(Host()) as server, httpx.Client(base_url=server.url) as http:
        yield server, http


# --- apps mounted in a gateway ----------------------------------------------------------------------------------


def test_starlette_app_sees_its_root_path_and_url_for_works(host: tuple[BackgroundServer, httpx.Client]) -> None:
    server, client = host
    response = client.get("/sub/items/7?x=1")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": 7,
        "path": "/sub/items/7",
        "root_path": "/sub",
        "url": f"{server.url}/sub/items/7?x=1",
        "self_url": f"{server.url}/sub/items/7",
        "has_exchange": True,
    }
    assert response.headers["x-gateway-route"] == "/sub/{path:path}"


def test_starlette_app_index_and_prefix(host: tuple[BackgroundServer, httpx.Client]) -> None:
    server, client = host
    response = client.get("/sub/")
    assert response.status_code == 200
    assert response.json() == {"at": "index", "item_url": f"{server.url}/sub/items/3"}
    bare = client.get("/sub", follow_redirects=True)
    assert bare.status_code == 200
    assert bare.json()["at"] == "index"
    # "/subway" is not under the "/sub" mount.
    assert client.get("/subway").json()["path"] == "/subway"


def test_mounted_app_gets_the_normalized_path(host: tuple[BackgroundServer, httpx.Client]) -> None:
    server, _ = host
    status, response = raw_get(server.port, "/sub/x/..//items/%37")
    assert status == 200, response
    assert b'"path":"/sub/items/7"' in response
    status, response = raw_get(server.port, "/sub/files/a%2Fb")
    assert status == 200, response
    assert b'"name":"a/b"' in response
    status, _ = raw_get(server.port, "/sub/..%2Fhello/x")
    assert status == 400


def test_mounted_app_answers_its_own_404(host: tuple[BackgroundServer, httpx.Client]) -> None:
    _, client = host
    response = client.get("/sub/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-gateway-route"] == "/sub/{path:path}"
    outside = client.get("/elsewhere")
    assert outside.headers["content-type"] == "application/problem+json"


def test_fastapi_app_mounted(host: tuple[BackgroundServer, httpx.Client]) -> None:
    server, client = host
    response = client.get("/api/items/5")
    assert response.status_code == 200, response.text
    assert response.json() == {"item_id": 5, "root_path": "/api", "self_url": f"{server.url}/api/items/5"}
    assert client.get("/api/items/x").status_code == 422
    assert client.get("/api/openapi.json").json()["info"]["title"] == "sub"
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    assert "/api/openapi.json" in docs.text


# --- a gateway mounted in Starlette / FastAPI ------------------------------------------------------------------


def outer_starlette(gateway: Gateway) -> Starlette:
    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    return Starlette(
        routes=[StarletteRoute("/home", home, name="home"), StarletteMount("/gw", app=gateway)],
        lifespan=gateway.lifespan,
    )


def test_gateway_mounted_in_starlette() -> None:
    gateway = Host()
    with BackgroundServer(outer_starlette(gateway)) as server, httpx.Client(base_url=server.url) as client:
        assert gateway.started == 1
        response = client.get("/gw/hello/ann")
        assert response.status_code == 200, response.text
        assert response.json() == {"path": "/hello/ann", "root_path": "/gw", "params": {"name": "ann"}}
        assert response.headers["x-gateway-route"] == "/hello/{name}"
        assert client.get("/home").text == "home"
        missing = client.get("/gw/nothing")
        assert missing.status_code == 404
        assert missing.json()["code"] == "no_route"
        assert client.get("/hello/ann").status_code == 404  # only under the prefix
        status, _ = raw_get(server.port, "/gw/hello/..%2F..%2Fhome")
        assert status == 400
    assert gateway.stopped == 1


def test_app_mounted_in_a_gateway_mounted_in_starlette() -> None:
    gateway = Host()
    with BackgroundServer(outer_starlette(gateway)) as server, httpx.Client(base_url=server.url) as client:
        response = client.get("/gw/sub/items/4")
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["path"] == "/gw/sub/items/4"
        assert data["root_path"] == "/gw/sub"
        assert data["self_url"] == f"{server.url}/gw/sub/items/4"
        fast = client.get("/gw/api/items/2")
        assert fast.status_code == 200, fast.text
        assert fast.json()["self_url"] == f"{server.url}/gw/api/items/2"


def test_gateway_mounted_in_fastapi() -> None:
    gateway = Host()
    app = FastAPI(lifespan=gateway.lifespan)

    @app.get("/status")
    async def status() -> dict[str, str]:
        return {"status": "up"}

    app.mount("/gw", gateway)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        assert gateway.started == 1
        response = client.get("/gw/hello/bo")
        assert response.status_code == 200, response.text
        assert response.json()["path"] == "/hello/bo"
        assert client.get("/status").json() == {"status": "up"}
        assert client.get("/gw/sub/items/1").json()["self_url"] == f"{server.url}/gw/sub/items/1"
        assert client.get("/gw/nothing").json()["code"] == "no_route"
    assert gateway.stopped == 1


def test_parent_url_for_still_works_with_a_gateway_mounted() -> None:
    gateway = Host()

    async def links(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.url_for("home")))

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    app = Starlette(
        routes=[StarletteMount("/gw", app=gateway), StarletteRoute("/home", home, name="home"),
                StarletteRoute("/links", links)],
        lifespan=gateway.lifespan,
    )
    with BackgroundServer(app) as server:
        response = httpx.get(server.url + "/links")
    assert response.status_code == 200
    assert response.text == f"{server.url}/home"
