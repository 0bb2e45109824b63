"""Immutable configuration: one target, policy or route shared by routes and gateways serves each as configured.

What a target resolves for a route at build time (a limit defaulting to the gateway's, a rewriter made for the
route's path, the gateway whose upstreams it reaches) is kept in the object `bind` returns for that route, never
written back onto the shared one; the library's targets and policies refuse assignment once constructed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import FrozenInstanceError
from typing import Any

import httpx
import pytest
import strawberry
from starlette.responses import PlainTextResponse, Response
from strawberry.types import Info

from asgigate import ConfigurationError, Direct, Gateway, Group, Policy, Proxy, Route, Upstream
from asgigate.exchange import Exchange
from asgigate.graphql import DeGraphQL, GraphQL, GraphQLContext
from asgigate.pipeline import ResponseHead
from asgigate.policies.faults import FaultInjection
from asgigate.policies.ratelimit import RateLimit
from asgigate.targets.base import Target
from asgigate.targets.direct import Redirect
from asgigate.targets.mock import Mock
from asgigate.testing import BackgroundServer
from asgigate.types import Receive, Send


class Routes(Gateway):
    """A gateway serving the routes it is given (several gateways below share their targets and policies)."""

    def __init__(self, routes: list[Route | Group], policies: Sequence[Policy] = (), **options: Any) -> None:
        super().__init__(**options)
        self._given = routes
        self._given_policies = list(policies)

    def routes(self) -> list[Route | Group]:
        return self._given

    def policies(self) -> list[Policy]:
        return self._given_policies


@pytest.fixture(scope="module")
def redirecting() -> Iterator[BackgroundServer]:
    """An upstream that answers every request with a redirect to its own absolute URL of the same path (`?next=1`)."""

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        host, port = scope["server"]
        location = f"http://{host}:{port}{scope['path']}?next=1".encode()
        await send({"type": "http.response.start", "status": 302,
                    "headers": [(b"location", location), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    with BackgroundServer(app) as server:
        yield server


# --- targets shared by gateways and routes ------------------------------------------------------------------


def test_one_proxy_in_two_gateways_keeps_each_gateways_body_limit(upstream: Any) -> None:
    proxy = Proxy(Upstream(upstream.url))
    strict = Routes([Route("/echo", proxy)], max_body_size=10)
    lenient = Routes([Route("/echo", proxy)], max_body_size=1000)
    with BackgroundServer(strict) as a, BackgroundServer(lenient) as b:
        assert httpx.post(a.url + "/echo", content=b"x" * 100, timeout=10).status_code == 413
        assert httpx.post(b.url + "/echo", content=b"x" * 100, timeout=10).status_code == 200
        assert httpx.post(b.url + "/echo", content=b"x" * 2000, timeout=10).status_code == 413
    assert proxy.max_body_size is None  # the shared configuration is as it was written


def test_one_proxy_on_two_routes_rewrites_locations_for_each(redirecting: BackgroundServer) -> None:
    proxy = Proxy(Upstream(redirecting.url), path="/people/{id}")
    gateway = Routes([Route("/v1/users/{id}", proxy), Route("/v2/users/{id}", proxy)])
    with BackgroundServer(gateway) as server:
        for version in ("v1", "v2"):
            response = httpx.get(f"{server.url}/{version}/users/7", follow_redirects=False, timeout=10)
            assert response.headers["location"] == f"{server.url}/{version}/users/7?next=1"


def test_a_route_in_two_gateways_runs_each_gateways_chain() -> None:
    class Tag(Policy):
        def __init__(self, value: str) -> None:
            self.value = value

        async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
            head.headers["x-gateway"] = self.value

    route = Route("/ok", Direct(text="ok"))
    first = Routes([route], policies=[Tag("first")])
    second = Routes([route], policies=[Tag("second")])
    first.build()
    second.build()
    with BackgroundServer(first) as a, BackgroundServer(second) as b:
        assert httpx.get(a.url + "/ok", timeout=10).headers["x-gateway"] == "first"
        assert httpx.get(b.url + "/ok", timeout=10).headers["x-gateway"] == "second"


@strawberry.type
class Query:
    @strawberry.field
    def greeting(self, name: str) -> str:
        return f"hello {name}"

    @strawberry.field
    def backend(self, info: Info[GraphQLContext, None]) -> str:
        return info.context.upstreams["users"].url


def test_one_degraphql_on_two_routes_reads_each_routes_parameters() -> None:
    api = GraphQL(strawberry.Schema(query=Query))
    hello = DeGraphQL(api, "query($name: String!) { greeting(name: $name) }", unwrap=True)
    gateway = Routes([Route("/hello/{name}", hello), Route("/hello", hello)])
    with BackgroundServer(gateway) as server:
        assert httpx.get(server.url + "/hello/ada", timeout=10).json() == "hello ada"
        assert httpx.get(server.url + "/hello?name=alan", timeout=10).json() == "hello alan"


def test_one_graphql_target_in_two_gateways_reaches_each_gateways_upstreams() -> None:
    class Api(Routes):
        def __init__(self, routes: list[Route | Group], users: str) -> None:
            super().__init__(routes)
            self.users = Upstream(users, name="users")

    api = GraphQL(strawberry.Schema(query=Query))
    first = Api([Route("/graphql", api)], "http://127.0.0.1:1")
    second = Api([Route("/graphql", api)], "http://127.0.0.1:2")
    first.build()
    second.build()
    with BackgroundServer(first) as a, BackgroundServer(second) as b:
        for server, url in ((a, "http://127.0.0.1:1"), (b, "http://127.0.0.1:2")):
            response = httpx.post(server.url + "/graphql", json={"query": "{ backend }"}, timeout=10)
            assert response.json() == {"data": {"backend": url}}


def test_bind_returns_what_serves_the_route_and_leaves_the_target_as_it_was() -> None:
    proxy = Proxy(Upstream("http://127.0.0.1:9"), path="/people/{id}")
    before = dict(vars(proxy))
    route = Route("/users/{id}", proxy)
    bound = proxy.bind(route, Routes([route], max_body_size=5))
    assert isinstance(bound, Proxy) and bound is not proxy
    assert bound.max_body_size == 5 and bound._template is not None
    assert vars(proxy) == before
    direct = Direct(text="ok")
    assert direct.bind(Route("/", direct), Routes([])) is direct  # nothing to resolve: it serves as it is


def test_a_target_whose_bind_returns_nothing_serves_as_it_is() -> None:
    class Legacy(Target):
        """A target written for the earlier contract: `bind` checks the route and returns None."""

        def __init__(self) -> None:
            self.seen: list[str] = []

        def bind(self, route: Route, gateway: Gateway) -> None:  # type: ignore[override]
            if "{" in route.path:
                raise ConfigurationError("no parameters, please")

        async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
            self.seen.append(exchange.path)
            await PlainTextResponse("legacy")(exchange.scope, receive, send)

    target = Legacy()
    with BackgroundServer(Routes([Route("/old", target)])) as server:
        assert httpx.get(server.url + "/old", timeout=10).text == "legacy"
    assert target.seen == ["/old"]
    with pytest.raises(ConfigurationError, match="no parameters"):
        Routes([Route("/old/{x}", Legacy())]).build()


def test_one_grpc_service_in_two_gateways_keeps_each_gateways_body_limit() -> None:
    from asgigate.grpc import GrpcService

    from grpcbackend import GrpcServer, compiled

    with GrpcServer() as backend:
        service = GrpcService.from_descriptor_set(compiled().descriptor_set, backend.url, max_body_size=None,
                                                  services=["library.v1.LibraryService"])
        strict = Routes([service], max_body_size=50)
        lenient = Routes([service], max_body_size=None)
        body = {"text": "x" * 100}
        with BackgroundServer(strict) as a, BackgroundServer(lenient) as b:
            assert httpx.post(a.url + "/v1/echo", json=body, timeout=10).status_code == 413
            assert httpx.post(b.url + "/v1/echo", json=body, timeout=10).status_code == 200


def test_one_grpc_service_in_two_gateways_describes_each_gateways_routes() -> None:
    from asgigate.grpc import GrpcService

    from grpcbackend import compiled

    service = GrpcService.from_descriptor_set(compiled().descriptor_set, "grpc://127.0.0.1:9",
                                              services=["library.v1.LibraryService"])
    stand_ins = [(route.path, route.template) for route in service.routes]
    first = Routes([Group("/one", [service]), Route("/openapi.json", service.openapi())])
    second = Routes([Group("/two", [service]), Route("/openapi.json", service.openapi())])
    first.build()
    second.build()
    with BackgroundServer(first) as a, BackgroundServer(second) as b:
        for server, prefix in ((a, "/one"), (b, "/two")):
            paths = httpx.get(server.url + "/openapi.json", timeout=10).json()["paths"]
            assert f"{prefix}/v1/shelves/{{shelf}}" in paths
            assert all(path.startswith(prefix) for path in paths)
    # the routes each gateway built have the HttpRule templates; the service's own routes are as they were
    assert [(route.path, route.template) for route in service.routes] == stand_ins


# --- policies shared by routes and gateways -----------------------------------------------------------------


def test_one_policy_on_two_routes_of_two_gateways() -> None:
    limit = RateLimit("2/minute")
    faults = FaultInjection(abort_percent=100, enabled=False)
    first = Routes([Route("/a", Direct(text="a"), policies=[faults, limit]),
                    Route("/b", Direct(text="b"), policies=[limit])])
    second = Routes([Route("/c", Direct(text="c"), policies=[faults, limit])])
    with BackgroundServer(first) as a, BackgroundServer(second) as b:
        assert httpx.get(a.url + "/a", timeout=10).status_code == 200
        assert httpx.get(b.url + "/c", timeout=10).status_code == 200  # one limit: the routes share its budget
        assert httpx.get(a.url + "/b", timeout=10).status_code == 429
        faults.enable()  # a switch is run-time state: it holds wherever the policy is used
        assert httpx.get(b.url + "/c", timeout=10).status_code == 503
    with pytest.raises(FrozenInstanceError):
        limit.limits = ()  # type: ignore[misc]


# --- frozen after construction ------------------------------------------------------------------------------


def frozen_targets() -> list[Any]:
    upstream = Upstream("http://127.0.0.1:9")
    api = GraphQL(strawberry.Schema(query=Query))
    return [
        Proxy(upstream),
        Direct(json={"ok": True}),
        Redirect("/elsewhere"),
        Mock({"id": 1}),
        api,
        DeGraphQL(api, "query($name: String!) { greeting(name: $name) }"),
        RateLimit("10/second"),
        FaultInjection(abort_percent=5),
    ]


@pytest.mark.parametrize("config", frozen_targets(), ids=lambda c: type(c).__name__)
def test_library_targets_and_policies_refuse_assignment(config: Any) -> None:
    name = next(iter(vars(config)))
    with pytest.raises(FrozenInstanceError, match=rf"cannot set {type(config).__name__}\.{name}: .* immutable"):
        setattr(config, name, None)
    with pytest.raises(FrozenInstanceError, match=r"cannot set .*: .*share"):
        config.new_attribute = 1
    with pytest.raises(FrozenInstanceError, match="cannot delete"):
        delattr(config, name)


def test_a_subclass_sets_its_own_attributes_in_its_constructor_and_is_frozen_after() -> None:
    class Labelled(Direct):
        def __init__(self, label: str) -> None:
            self.label = label  # before the library's constructor ...
            super().__init__(text=label)
            self.shout = label.upper()  # ... and after it

    target = Labelled("hi")
    assert (target.label, target.shout, target.body) == ("hi", "HI", b"hi")
    with pytest.raises(FrozenInstanceError):
        target.label = "changed"


def test_a_policy_written_from_the_base_class_keeps_its_own_state() -> None:
    class Counting(Policy):
        def __init__(self) -> None:
            self.count = 0

        async def on_request(self, exchange: Exchange) -> Response | None:
            self.count += 1
            return None

    policy = Counting()
    with BackgroundServer(Routes([Route("/", Direct(text="ok"), policies=[policy])])) as server:
        httpx.get(server.url + "/", timeout=10)
        httpx.get(server.url + "/", timeout=10)
    assert policy.count == 2


def test_every_library_target_and_policy_is_frozen() -> None:
    """A new target or policy of the library adopts the rule too: only the extension bases are left open."""
    import importlib
    import pkgutil

    import asgigate
    from asgigate._frozen import Frozen
    from asgigate.policies.auth import Authenticator

    for module in pkgutil.walk_packages(asgigate.__path__, "asgigate."):
        if module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except ImportError:  # an optional extra that is not installed
            continue

    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    open_bases = {Policy, Target, Authenticator}
    library = {cls for base in (Policy, Target) for cls in subclasses(base) if cls.__module__.startswith("asgigate.")}
    assert library - open_bases, "the walk found no library classes"
    assert sorted(c.__qualname__ for c in library - open_bases if not issubclass(c, Frozen)) == []
