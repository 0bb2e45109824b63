"""The upstream hierarchy: HTTP and gRPC upstreams are siblings under `BaseUpstream`, each target takes the kind
it can use and says so at build time (naming the route), and the old import paths still work."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import asgigate
from asgigate import ConfigurationError, Gateway, Group, Proxy, Route, Upstream
from asgigate.upstreams import BaseUpstream, GrpcUpstream


def gateway(routes: list[Route | Group], **attributes: object) -> Gateway:
    class Api(Gateway):
        def routes(self) -> list[Route | Group]:
            return routes

    api = Api()
    vars(api).update(attributes)
    return api


def test_kinds_are_siblings() -> None:
    http, grpc = Upstream("http://users:8080/api"), GrpcUpstream("grpc://orders:50051")
    assert isinstance(http, BaseUpstream) and isinstance(grpc, BaseUpstream)
    assert not isinstance(grpc, Upstream) and not isinstance(http, GrpcUpstream)
    assert not hasattr(grpc, "pool") and not hasattr(grpc, "client") and not hasattr(grpc, "timeout")
    assert (http.name, http.authority, http.base_path) == ("users:8080", "users:8080", "/api")
    assert (grpc.name, grpc.authority, grpc.describe()) == ("orders:50051", "orders:50051",
                                                            "orders:50051 = grpc://orders:50051")
    assert repr(grpc) == "GrpcUpstream('grpc://orders:50051', name='orders:50051')"
    assert http == Upstream("http://users:8080/api") and http != Upstream("http://users:8080/api", name="u")
    assert grpc == GrpcUpstream("grpc://orders:50051") and hash(grpc) == hash(GrpcUpstream("grpc://orders:50051"))
    assert http != grpc


def test_old_import_paths_still_work() -> None:
    from asgigate.grpc import GrpcUpstream as from_grpc
    from asgigate.grpc.channels import GrpcUpstream as from_channels
    from asgigate.upstream import Upstream as from_module

    assert from_module is Upstream is asgigate.Upstream
    assert from_channels is from_grpc is GrpcUpstream is asgigate.GrpcUpstream


def test_proxy_to_a_grpc_upstream_fails_at_build_naming_the_route() -> None:
    api = gateway([Route("/orders/{rest:path}", Proxy(GrpcUpstream("grpc://orders:50051")))])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as caught:
        api.build()
    message = str(caught.value)
    assert "route '/orders/{rest:path}'" in message
    assert "Proxy needs an HTTP upstream (Upstream), got a gRPC upstream GrpcUpstream(" in message
    assert "GrpcService" in message


def test_proxy_refuses_what_is_no_upstream_at_once() -> None:
    with pytest.raises(ConfigurationError, match="Proxy needs an Upstream, got 'http://x'"):
        Proxy("http://x")  # type: ignore[arg-type]


def test_a_wrong_kind_is_never_a_500_at_request_time() -> None:
    api = gateway([Route("/ok", Proxy(Upstream("http://127.0.0.1:9"))),
                   Route("/grpc", Proxy(GrpcUpstream("grpc://127.0.0.1:9")))])  # type: ignore[arg-type]

    async def first_request() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://gw") as client:
            await client.get("/ok")

    # The first request builds the gateway: the whole gateway is refused, not the one route answering 500.
    with pytest.raises(ConfigurationError, match="route '/grpc'"):
        asyncio.run(first_request())


def test_grpc_service_with_an_http_upstream_fails_at_build_naming_the_route() -> None:
    from asgigate.grpc import GrpcService

    from grpcbackend import compiled

    service = GrpcService.from_modules([compiled().library_pb2], Upstream("http://library:8080"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as caught:
        gateway([service]).build()
    message = str(caught.value)
    assert "route '/v1/" in message and "needs a gRPC upstream (GrpcUpstream), got an HTTP upstream" in message
    with pytest.raises(ConfigurationError, match="GrpcService needs a GrpcUpstream or a grpc:// URL, got 42"):
        GrpcService.from_modules([compiled().library_pb2], 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="from_reflection needs a gRPC upstream"):
        GrpcService.from_reflection(Upstream("http://library:8080"))  # type: ignore[arg-type]


def test_gateway_closes_upstreams_of_every_kind() -> None:
    closed: list[str] = []

    class Closing(GrpcUpstream):
        async def aclose(self) -> None:
            closed.append(self.name)
            await super().aclose()

    api = gateway([], orders=Closing("grpc://orders:50051", name="orders"))
    assert [u.name for u in api.upstreams] == ["orders"]
    asyncio.run(api.aclose())
    assert closed == ["orders"]


def test_graphql_context_calls_need_the_right_kind() -> None:
    pytest.importorskip("strawberry")
    from asgigate.graphql import GraphQLContext

    context = GraphQLContext(None, {"orders": GrpcUpstream("grpc://orders:50051", name="orders")})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="'orders' is a gRPC upstream, not an HTTP Upstream"):
        asyncio.run(context.rest("orders", "/x", relay=False))
    with pytest.raises(ConfigurationError, match="is not a GrpcBackend"):
        asyncio.run(context.grpc("orders", "Orders/Get", relay=False))


def test_gateway_startup_starts_every_upstream() -> None:
    started: list[str] = []

    class Starting(Upstream):
        async def start(self) -> None:
            started.append(self.name)

    api = gateway([Route("/x", Proxy(Starting("http://a.internal", name="a")))], b=Starting("http://b", name="b"))

    async def go() -> None:
        async with api.lifespan():
            assert started == ["a", "b"]

    asyncio.run(go())
