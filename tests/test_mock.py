"""Mock: routes answering from examples until their backend exists, through a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.responses import PlainTextResponse, Response

from asgigate import ConfigurationError, Direct, Exchange, Gateway, Group, Mock, Route
from asgigate.testing import BackgroundServer


async def search(exchange: Exchange) -> Any:
    return {"query": exchange.query_params.get("q"), "hits": []}


def teapot(exchange: Exchange) -> Response:
    return PlainTextResponse("short and stout", status_code=418)


class API(Gateway):
    def routes(self) -> list[Route | Group]:
        return [
            Route("/users/{id:int}", Mock({"id": "{id}", "name": "Ada", "link": "/users/{id}", "tpl": "{{id}}"},
                                          headers={"x-mock": "yes"})),
            Route("/orders", Mock(
                [{"id": 1}],
                examples={
                    "empty": [],
                    "gone": Direct(status=410, json={"error": "gone"}),
                    "teapot": teapot,
                },
                status=200,
            )),
            Route("/search", Mock(search, delay=0.2)),
            Route("/created", Mock(examples={"first": {"ok": True}}, status=201)),
        ]


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    with BackgroundServer(API()) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def test_static_example_with_route_parameters(api: httpx.Client) -> None:
    response = api.get("/users/42")
    assert response.status_code == 200
    assert response.json() == {"id": 42, "name": "Ada", "link": "/users/42", "tpl": "{id}"}
    assert response.headers["x-mock"] == "yes"
    assert "preference-applied" not in response.headers


def test_named_examples_by_prefer_header(api: httpx.Client) -> None:
    assert api.get("/orders").json() == [{"id": 1}]
    empty = api.get("/orders", headers={"prefer": "example=empty"})
    assert (empty.json(), empty.headers["preference-applied"]) == ([], "example=empty")
    gone = api.get("/orders", headers={"prefer": 'respond-async, example="gone"'})
    assert (gone.status_code, gone.json(), gone.headers["preference-applied"]) == (410, {"error": "gone"},
                                                                                   "example=gone")
    teapot_reply = api.get("/orders", headers={"prefer": "example=teapot"})
    assert (teapot_reply.status_code, teapot_reply.text) == (418, "short and stout")
    assert teapot_reply.headers["preference-applied"] == "example=teapot"
    assert api.get("/orders", headers={"prefer": "return=minimal"}).json() == [{"id": 1}]


def test_unknown_example_is_a_clear_400(api: httpx.Client) -> None:
    response = api.get("/orders", headers={"prefer": "example=nope"})
    assert response.status_code == 400
    assert response.json()["detail"] == "No mock example named 'nope'; known examples: empty, gone, teapot."


def test_function_and_delay(api: httpx.Client) -> None:
    started = time.monotonic()
    response = api.get("/search", params={"q": "tea"})
    assert time.monotonic() - started >= 0.2
    assert response.json() == {"query": "tea", "hits": []}


def test_first_named_example_is_the_default(api: httpx.Client) -> None:
    response = api.get("/created")
    assert (response.status_code, response.json()) == (201, {"ok": True})


def test_bad_examples_fail_the_build_naming_the_route() -> None:
    class Bad(Gateway):
        def routes(self) -> list[Route | Group]:
            return [Route("/users/{id}", Mock({"id": "{user_id}"}))]

    with pytest.raises(ConfigurationError, match=r"Mock example on route '/users/\{id\}': unknown placeholder"):
        Bad().build()


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "needs an example"),
        (({},), {"status": 204}, "cannot carry"),
        (({},), {"delay": -1}, "negative"),
        ((), {"examples": {"a b": {}}}, "example name 'a b'"),
    ],
)
def test_bad_settings(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Mock(*args, **kwargs)


def test_repr() -> None:
    assert repr(Mock({"a": 1}, examples={"b": 2})) == "Mock(examples=['default', 'b'], status=200)"
