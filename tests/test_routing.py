"""Routes, predicates, groups, the 404/405 replies and request ids, through a real uvicorn server."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from asgigate import ConfigurationError, Direct, Exchange, Gateway, Group, Policy, ResponseHead, Route
from asgigate.responses import JSONResponse
from asgigate.testing import BackgroundServer

from servers import raw_get


class Tag(Policy):
    """Records its request phase in `exchange.state` and its response phase in the `x-trace` header."""

    def __init__(self, label: str) -> None:
        self.label = label

    async def on_request(self, exchange: Exchange) -> None:
        exchange.state.setdefault("trace", []).append(self.label)

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        previous = head.headers.get("x-trace")
        head.headers["x-trace"] = f"{previous},{self.label}" if previous else self.label


class GatewayTag(Tag):
    pass


async def echo(exchange: Exchange) -> JSONResponse:
    assert exchange.route is not None
    return JSONResponse(
        {
            "route": exchange.route.name,
            "path": exchange.path,
            "params": {k: [type(v).__name__, str(v)] for k, v in exchange.params.items()},
            "trace": exchange.state.get("trace", []),
        }
    )


class Routed(Gateway):
    def policies(self) -> list[Policy]:
        return [GatewayTag("gw")]

    def routes(self) -> list[Route | Group]:
        return [
            Route("/n/{v:int}", echo, name="int"),
            Route("/n/{v:float}", echo, name="float"),
            Route("/n/{v:uuid}", echo, name="uuid"),
            Route("/n/{v}", echo, name="str"),
            Route("/files/{rest:path}", echo, name="files"),
            Route("/items", echo, methods=["GET"], name="items-get"),
            Route("/items", echo, methods=["post", "PUT"], name="items-write"),
            Route("/submit", echo, methods=["POST"], name="submit"),
            Route("/host", echo, host="api.example.com", name="host-api"),
            Route("/host", echo, host="*.example.com", name="host-wild"),
            Route("/host", echo, name="host-any"),
            Route("/hdr", echo, headers={"X-Mode": "exact"}, name="hdr-exact"),
            Route("/hdr", echo, headers={"x-mode": re.compile(r"v\d+")}, name="hdr-regex"),
            Route("/hdr", echo, headers={"X-Flag": True}, name="hdr-present"),
            Route("/hdr", echo, name="hdr-none"),
            Route("/q", echo, query={"format": "csv"}, name="q-exact"),
            Route("/q", echo, query={"id": re.compile(r"\d+")}, name="q-regex"),
            Route("/q", echo, query={"debug": True}, name="q-present"),
            Route("/q", echo, name="q-none"),
            Route("/first/{x}", echo, name="first"),
            Route("/first/{x}", echo, name="second"),
            Route("/first/special", echo, name="shadowed"),
            Group("/v1", [Route("/orders/{id:int}", echo, name="v1-orders")]),
            Group("/v2", [Route("/orders/{id:int}", echo, name="v2-orders")]),
            Route("/orders", echo, headers={"X-API-Version": "2"}, name="orders-v2"),
            Route("/orders", echo, name="orders-v1"),
            Group(
                "/api",
                [
                    Route("/", echo, name="api-root"),
                    Route("/users/{id:int}", echo, name="api-users", policies=[Tag("route")]),
                    Group(
                        "/admin",
                        [Route("/stats", echo, name="admin-stats", policies=[Tag("route")])],
                        policies=[Tag("inner")],
                    ),
                ],
                policies=[Tag("outer")],
            ),
            Group("/internal", [Route("/ping", echo, name="internal-ping")], skip={GatewayTag}),
            Group("/tenant", [Route("/info", echo, name="tenant-info")], host="*.tenant.test", headers={"X-T": True}),
        ]


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(Routed(access_log=False)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as http:
        yield http


def routed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


# --- typed parameters and first match -------------------------------------------------------------------------


def test_typed_params(client: httpx.Client) -> None:
    assert routed(client.get("/n/42"))["params"] == {"v": ["int", "42"]}
    assert routed(client.get("/n/42"))["route"] == "int"
    assert routed(client.get("/n/2.5"))["params"] == {"v": ["float", "2.5"]}
    doc = uuid.uuid4()
    data = routed(client.get(f"/n/{doc}"))
    assert data["route"] == "uuid"
    assert data["params"] == {"v": ["UUID", str(doc)]}
    data = routed(client.get("/n/hello"))
    assert data["route"] == "str"
    assert data["params"] == {"v": ["str", "hello"]}
    assert routed(client.get("/n/caf%C3%A9"))["params"] == {"v": ["str", "caf\u00e9"]}


@pytest.mark.parametrize(
    "value",
    ["9" * 4301, "0" * 65 + "1", "1" * 65 + ".5", "1." + "5" * 65, "1" * 400 + ".0"],
    ids=["past int()'s limit", "65 digits", "65 digits before the point", "65 after", "an infinite float"],
)
def test_a_number_too_long_for_its_type_is_not_that_type(client: httpx.Client, value: str) -> None:
    # int and float match at most 64 digits (each side of the point): every value they admit converts, so a
    # longer one is another route's (here the str route's), or a 404, never a 500 when the params are read
    data = routed(client.get(f"/n/{value}"))
    assert (data["route"], data["params"]) == ("str", {"v": ["str", value]})
    response = client.get(f"/v1/orders/{value}")
    assert (response.status_code, response.json()["code"]) == (404, "no_route")


def test_path_param(client: httpx.Client) -> None:
    data = routed(client.get("/files/a/b/c.txt"))
    assert data["route"] == "files"
    assert data["params"] == {"rest": ["str", "a/b/c.txt"]}
    assert routed(client.get("/files/"))["params"] == {"rest": ["str", ""]}
    assert client.get("/files").status_code == 404


def test_first_match_wins(client: httpx.Client) -> None:
    assert routed(client.get("/first/anything"))["route"] == "first"
    assert routed(client.get("/first/special"))["route"] == "first"


# --- methods ----------------------------------------------------------------------------------------------------


def test_methods(client: httpx.Client) -> None:
    assert routed(client.get("/items"))["route"] == "items-get"
    assert routed(client.post("/items"))["route"] == "items-write"
    assert routed(client.put("/items"))["route"] == "items-write"
    head = client.head("/items")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(client.get("/items").content)


def test_method_not_allowed(client: httpx.Client) -> None:
    response = client.delete("/items")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST, PUT"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "method_not_allowed"
    response = client.get("/submit")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert client.head("/submit").status_code == 405


def test_not_found_is_problem_json_with_request_id(client: httpx.Client) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "no_route"
    assert problem["status"] == 404
    assert problem["type"] == "urn:asgigate:error:no_route"
    assert problem["request_id"] == response.headers["x-request-id"]
    assert client.get("/nowhere").json()["request_id"] != problem["request_id"]


# --- host, header and query predicates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "route"),
    [
        ("api.example.com", "host-api"),
        ("api.example.com:8443", "host-api"),
        ("API.Example.COM", "host-api"),
        ("www.example.com", "host-wild"),
        ("a.b.example.com:80", "host-wild"),
        ("example.com", "host-any"),
        ("evilexample.com", "host-any"),
        ("example.com.evil.test", "host-any"),
        ("[::1]:8080", "host-any"),
    ],
)
def test_host_predicate(client: httpx.Client, host: str, route: str) -> None:
    assert routed(client.get("/host", headers={"host": host}))["route"] == route


@pytest.mark.parametrize(
    ("headers", "route"),
    [
        ({"X-Mode": "exact"}, "hdr-exact"),
        ({"x-mode": "exact"}, "hdr-exact"),
        ({"X-Mode": "Exact"}, "hdr-none"),
        ({"X-Mode": "v12"}, "hdr-regex"),
        ({"X-Mode": "v12x"}, "hdr-none"),
        ({"X-Flag": ""}, "hdr-present"),
        ({"X-Flag": "anything"}, "hdr-present"),
        ({}, "hdr-none"),
    ],
)
def test_header_predicate(client: httpx.Client, headers: dict[str, str], route: str) -> None:
    assert routed(client.get("/hdr", headers=headers))["route"] == route


@pytest.mark.parametrize(
    ("query", "route"),
    [
        ("format=csv", "q-exact"),
        ("format=json", "q-none"),
        ("id=123", "q-regex"),
        ("id=12a", "q-none"),
        ("debug", "q-present"),
        ("debug=0", "q-present"),
        ("", "q-none"),
    ],
)
def test_query_predicate(client: httpx.Client, query: str, route: str) -> None:
    assert routed(client.get("/q?" + query if query else "/q"))["route"] == route


def test_predicate_must_be_str_regex_or_true() -> None:
    with pytest.raises(ConfigurationError, match="X-N"):
        Route("/x", echo, headers={"X-N": 1})  # type: ignore[dict-item]


# --- versioning ---------------------------------------------------------------------------------------------------


def test_versioning_by_path(client: httpx.Client) -> None:
    assert routed(client.get("/v1/orders/1"))["route"] == "v1-orders"
    assert routed(client.get("/v2/orders/1"))["route"] == "v2-orders"
    assert client.get("/v3/orders/1").status_code == 404


def test_versioning_by_header(client: httpx.Client) -> None:
    assert routed(client.get("/orders", headers={"X-API-Version": "2"}))["route"] == "orders-v2"
    assert routed(client.get("/orders", headers={"X-API-Version": "1"}))["route"] == "orders-v1"
    assert routed(client.get("/orders"))["route"] == "orders-v1"


# --- groups -----------------------------------------------------------------------------------------------------


def test_group_prefix_and_policies(client: httpx.Client) -> None:
    response = client.get("/api/users/3")
    data = routed(response)
    assert data["route"] == "api-users"
    assert data["params"] == {"id": ["int", "3"]}
    assert data["trace"] == ["gw", "outer", "route"]
    assert response.headers["x-trace"] == "route,outer,gw"
    assert routed(client.get("/api"))["route"] == "api-root"
    assert client.get("/api/").status_code == 404


def test_nested_groups(client: httpx.Client) -> None:
    response = client.get("/api/admin/stats")
    data = routed(response)
    assert data["route"] == "admin-stats"
    assert data["path"] == "/api/admin/stats"
    assert data["trace"] == ["gw", "outer", "inner", "route"]
    assert response.headers["x-trace"] == "route,inner,outer,gw"
    assert client.get("/admin/stats").status_code == 404


def test_group_skip(client: httpx.Client) -> None:
    response = client.get("/internal/ping")
    assert routed(response)["trace"] == []
    assert "x-trace" not in response.headers
    assert routed(client.get("/v1/orders/1"))["trace"] == ["gw"]


def test_group_predicates_apply_to_its_routes(client: httpx.Client) -> None:
    ok = client.get("/tenant/info", headers={"host": "acme.tenant.test", "X-T": "1"})
    assert routed(ok)["route"] == "tenant-info"
    assert client.get("/tenant/info", headers={"host": "acme.tenant.test"}).status_code == 404
    assert client.get("/tenant/info", headers={"host": "other.test", "X-T": "1"}).status_code == 404


def test_group_prefix_must_be_clean() -> None:
    with pytest.raises(ConfigurationError):
        Group("v1", [])
    with pytest.raises(ConfigurationError):
        Group("/v1/", [])


def test_routes_must_be_routes_or_groups() -> None:
    class Wrong(Gateway):
        def routes(self) -> list[Any]:
            return ["/oops"]

    with pytest.raises(ConfigurationError, match="neither a Route nor a Group"):
        Wrong().build()


def test_duplicate_route_names_rejected() -> None:
    class Twice(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/a", echo, name="same"), Route("/b", echo, name="same")]

    with pytest.raises(ConfigurationError, match="same"):
        Twice().build()


# --- request ids -------------------------------------------------------------------------------------------------


class Ids(Gateway):
    def routes(self) -> list[Route]:
        async def show(exchange: Exchange) -> JSONResponse:
            return JSONResponse({"request_id": exchange.request_id})

        return [Route("/id", show)]


@pytest.fixture(scope="module")
def id_servers() -> Iterator[dict[str, BackgroundServer]]:
    gateways = {
        "default": Ids(access_log=False),
        "trusting": Ids(access_log=False, trust_request_id=True),
        "proxied": Ids(access_log=False, trusted_proxies=["127.0.0.1"]),
        "elsewhere": Ids(access_log=False, trusted_proxies=["10.0.0.0/8"]),
        "never": Ids(access_log=False, trusted_proxies=["127.0.0.1"], trust_request_id=False),
    }
    servers = {name: BackgroundServer(gateway) for name, gateway in gateways.items()}
    for running in servers.values():
        running.__enter__()
    try:
        yield servers
    finally:
        for running in servers.values():
            running.__exit__(None, None, None)


def _id(server: BackgroundServer, incoming: str | None = None) -> tuple[str, str]:
    headers = {"x-request-id": incoming} if incoming is not None else {}
    response = httpx.get(server.url + "/id", headers=headers)
    assert response.status_code == 200
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]
    return response.headers["x-request-id"], response.json()["request_id"]


def test_request_id_generated(id_servers: dict[str, BackgroundServer]) -> None:
    header, seen = _id(id_servers["default"])
    assert header == seen
    assert re.fullmatch(r"[0-9a-f]{24}", header)
    assert _id(id_servers["default"])[0] != header


@pytest.mark.parametrize("name", ["default", "elsewhere", "never"])
def test_incoming_request_id_ignored_when_untrusted(id_servers: dict[str, BackgroundServer], name: str) -> None:
    header, seen = _id(id_servers[name], "client-chosen-id")
    assert header == seen
    assert header != "client-chosen-id"


@pytest.mark.parametrize("name", ["trusting", "proxied"])
def test_incoming_request_id_kept_when_trusted(id_servers: dict[str, BackgroundServer], name: str) -> None:
    assert _id(id_servers[name], "edge-7f3a:01/x+y=@z") == ("edge-7f3a:01/x+y=@z", "edge-7f3a:01/x+y=@z")


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "quote\"d", "<script>"])
def test_malformed_request_id_replaced(id_servers: dict[str, BackgroundServer], bad: str) -> None:
    header, seen = _id(id_servers["trusting"], bad)
    assert header == seen
    assert re.fullmatch(r"[0-9a-f]{24}", header)


def test_empty_request_id_replaced(id_servers: dict[str, BackgroundServer]) -> None:
    status, response = raw_get(id_servers["trusting"].port, "/id", "x-request-id: \r\n")
    assert status == 200
    assert re.search(rb"\r\nx-request-id: [0-9a-f]{24}\r\n", response), response


def test_reply_carries_exactly_one_request_id() -> None:
    class OwnId(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/x", Direct(text="x", headers={"X-Request-ID": "from-target"}))]

    with BackgroundServer(OwnId(access_log=False)) as running:
        response = httpx.get(running.url + "/x")
    assert response.status_code == 200
    assert len(response.headers.get_list("x-request-id")) == 1


def test_segment_index_keeps_declaration_order() -> None:
    from asgigate.routing import RouteTable

    wild_first = Route("/{kind}/a", Direct(text="wild"))
    literal = Route("/users/a", Direct(text="literal"))
    literal_other = Route("/users/{id:int}", Direct(text="int"))
    catch_all = Route("/{rest:path}", Direct(text="all"))
    table = RouteTable([literal_other, wild_first, literal, catch_all])
    assert table.candidates("/users/a") == (literal_other, wild_first, literal, catch_all)
    assert table.candidates("/orders/a") == (wild_first, catch_all)
    assert table.candidates("/") == (wild_first, catch_all)
    assert table.candidates("/users") == (literal_other, wild_first, literal, catch_all)


class Namespaced(Direct):
    """A target that answers the route table's misses in its own paths (the seam GrpcService uses)."""

    def bind(self, route: Route, gateway: Gateway) -> None:
        super().bind(route, gateway)
        route.claims_405 = True
        route.claims_404 = ("/ns",)


def test_a_route_can_claim_the_tables_misses_for_its_paths() -> None:
    from asgigate import Reply

    own = Reply(json={"own": "{code}"})

    class Claiming(Gateway):
        def routes(self) -> list[Route | Group]:
            return [
                Route("/plain", Direct(text="x"), methods=["GET"], errors=own),  # claims nothing
                Group("/ns", [Route("/item", Namespaced(text="x"), methods=["GET"])], errors=own),
                Route("/ns/open", Direct(text="open")),
            ]

    with BackgroundServer(Claiming(access_log=False)) as running:
        # a 405 on the claiming route's path and a 404 under its prefix: the route's own errors= (its group's here)
        response = httpx.post(running.url + "/ns/item")
        assert (response.status_code, response.json(), response.headers["allow"]) == (
            405, {"own": "method_not_allowed"}, "GET, HEAD")
        for path in ("/ns/nothing", "/ns"):
            response = httpx.get(running.url + path)
            assert (response.status_code, response.json()) == (404, {"own": "no_route"})
        assert httpx.get(running.url + "/ns/open").text == "open"  # other routes there are unaffected
        # an ordinary route's errors= are for what happens in its chain: the table's misses are the gateway's
        response = httpx.post(running.url + "/plain")
        assert (response.status_code, response.headers["content-type"]) == (405, "application/problem+json")
        for path in ("/nsx", "/elsewhere"):
            response = httpx.get(running.url + path)
            assert (response.status_code, response.headers["content-type"]) == (404, "application/problem+json")
