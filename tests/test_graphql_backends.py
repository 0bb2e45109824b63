"""Resolvers calling three kinds of real backends: gRPC (a grpc.aio server, .proto compiled at test time), REST
and a separate GraphQL service process. Counts what each backend receives to prove batching, deduplication and
concurrent fan-out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
import strawberry
from strawberry.types import Info

from asgigate import ConfigurationError, Gateway, Route, Upstream
from asgigate.graphql import GraphQL, GraphQLContext, GrpcBatch, RestBatch, batch_loader
from asgigate.graphql.grpc import GrpcBackend
from asgigate.testing import BackgroundServer

from graphqlbackends import load
from servers import free_port

DELAY = 0.4


grpc_service = load("grpc_service")
orders_by_user = GrpcBatch("orders", "OrdersByUsers", keys_field="user_ids", items="orders", key="user_id",
                           many=True)
users_by_id = RestBatch("users", "/users", key="id")
seen_keys: list[list[Any]] = []


@batch_loader
async def squares(ctx: GraphQLContext, keys: list[int]) -> list[int]:
    seen_keys.append(list(keys))
    return [k * k for k in keys]


@strawberry.type
class Order:
    id: str
    total: float
    items: list[str]


@strawberry.type
class User:
    id: strawberry.ID
    name: str

    @strawberry.field
    async def orders(self, info: Info[GraphQLContext, None]) -> list[Order]:
        found = await info.context.load(orders_by_user, str(self.id))
        return [Order(id=o["id"], total=o["total"], items=o["items"]) for o in found]


@strawberry.type
class Query:
    @strawberry.field
    async def order(self, info: Info[GraphQLContext, None], id: str) -> Order | None:
        found = await info.context.grpc("orders", "graphqltest.orders.Orders/GetOrder", {"id": id})
        return Order(id=found["id"], total=found["total"], items=found["items"])

    @strawberry.field
    async def order_count(self, info: Info[GraphQLContext, None], user_id: str, slow: bool = False) -> int:
        backend = "slow_orders" if slow else "orders"
        found = await info.context.grpc(backend, "ListOrders", {"user_id": user_id}, timeout=5.0)
        return len(found["orders"])

    @strawberry.field
    async def order_timeout(self, info: Info[GraphQLContext, None]) -> int | None:
        found = await info.context.grpc("slow_orders", "ListOrders", {"user_id": "1"}, timeout=0.05)
        return len(found["orders"])

    @strawberry.field
    async def grpc_down(self, info: Info[GraphQLContext, None]) -> int | None:
        found = await info.context.grpc("down_orders", "ListOrders", {"user_id": "1"}, timeout=1.0)
        return len(found["orders"])

    @strawberry.field
    async def grpc_auth(self, info: Info[GraphQLContext, None]) -> str:
        await info.context.grpc("orders", "ListOrders", {"user_id": "1"})
        return "ok"

    @strawberry.field
    async def users(self, info: Info[GraphQLContext, None], ids: list[strawberry.ID]) -> list[User | None]:
        found = await info.context.load_many(users_by_id, list(ids))
        return [User(id=u["id"], name=u["name"]) if u else None for u in found]

    @strawberry.field
    async def slow_user(self, info: Info[GraphQLContext, None]) -> str:
        return (await info.context.rest("users", "/users/1", query={"delay": DELAY}))["name"]  # type: ignore[no-any-return]

    @strawberry.field
    async def slow_product(self, info: Info[GraphQLContext, None]) -> str:
        data = await info.context.graphql("catalog", f'{{ product(id: "1", delay: {DELAY}) {{ name }} }}')
        return data["product"]["name"]  # type: ignore[no-any-return]

    @strawberry.field
    async def square(self, info: Info[GraphQLContext, None], n: int) -> int:
        return await info.context.load(squares, n)  # type: ignore[no-any-return]


schema = strawberry.Schema(query=Query)


@pytest.fixture(scope="module")
def protos(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return grpc_service.compile_proto(tmp_path_factory.mktemp("protos"))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def orders(protos: tuple[ModuleType, ModuleType]) -> Iterator[Any]:
    with grpc_service.OrdersServer(*protos) as server:
        yield server


@pytest.fixture(scope="module")
def slow_orders(protos: tuple[ModuleType, ModuleType]) -> Iterator[Any]:
    with grpc_service.OrdersServer(*protos, delay=DELAY) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(protos: Any, orders: Any, slow_orders: Any, rest: Any, catalog: str) -> Iterator[str]:
    pb2 = protos[0]
    upstreams = [
        GrpcBackend(orders.target, pb2, name="orders"),
        GrpcBackend(slow_orders.target, pb2, name="slow_orders"),
        GrpcBackend(f"127.0.0.1:{free_port()}", pb2, name="down_orders"),
        Upstream(rest.url, name="users"),
        Upstream(catalog + "/graphql", name="catalog"),
    ]

    class BFF(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/graphql", GraphQL(schema, upstreams=upstreams))]

    with BackgroundServer(BFF(access_log=False)) as server:
        yield server.url


def query(gateway: str, text: str, variables: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    response = httpx.post(gateway + "/graphql", json={"query": text, "variables": variables or {}},
                          headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_grpc_method_by_full_or_short_name(gateway: str) -> None:
    body = query(gateway, '{ order(id: "4-0") { id total items } orderCount(userId: "5") }')
    assert body == {"data": {"order": {"id": "4-0", "total": 40.0, "items": ["item 0"]}, "orderCount": 2}}


def test_grpc_failures_become_graphql_errors(gateway: str) -> None:
    body = query(gateway, '{ order(id: "9-9") { id } orderTimeout grpcDown orderCount(userId: "2") }')
    assert body["data"] == {"order": None, "orderTimeout": None, "grpcDown": None, "orderCount": 2}
    codes = {error["path"][0]: error["extensions"] for error in body["errors"]}
    assert codes["order"] == {"code": "NOT_FOUND", "upstream": "orders", "grpcStatus": "NOT_FOUND"}
    assert codes["orderTimeout"]["code"] == "UPSTREAM_TIMEOUT"
    assert codes["grpcDown"]["code"] == "UPSTREAM_UNAVAILABLE"


def test_grpc_metadata_carries_the_token_and_request_id(gateway: str, orders: Any) -> None:
    orders.metadata.clear()
    response = httpx.post(gateway + "/graphql", json={"query": "{ grpcAuth }"},
                          headers={"authorization": "Bearer abc", "x-request-id": "ignored-untrusted"})
    assert response.json() == {"data": {"grpcAuth": "ok"}}
    metadata = orders.metadata[-1]
    assert metadata["authorization"] == "Bearer abc"
    assert metadata["x-request-id"] == response.headers["x-request-id"]


def test_grpc_and_rest_batch_loaders_one_call_each(gateway: str, orders: Any, rest: Any) -> None:
    orders.calls.clear()
    rest.app.state.calls.clear()
    ids = [str(i % 50 + 1) for i in range(100)]  # 100 items, 50 distinct users
    body = query(gateway, "query($ids: [ID!]!) { users(ids: $ids) { id orders { id total } } }", {"ids": ids})
    users = body["data"]["users"]
    assert len(users) == 100
    assert users[4]["orders"] == [{"id": "5-0", "total": 50.0}, {"id": "5-1", "total": 51.0}]
    assert users[2]["orders"] == []  # user 3 has no orders
    assert [name for name, _ in orders.calls] == ["OrdersByUsers"]
    assert sorted(orders.calls[0][1].user_ids, key=int) == [str(i) for i in range(1, 51)]  # deduplicated
    assert len(rest.app.state.calls) == 1
    assert rest.app.state.calls[0]["path"] == "/users"


def test_function_loader_dedupes_and_caches_per_request(gateway: str) -> None:
    seen_keys.clear()
    body = query(gateway, "{ a: square(n: 3) b: square(n: 4) c: square(n: 3) }")
    assert body == {"data": {"a": 9, "b": 16, "c": 9}}
    assert seen_keys == [[3, 4]]
    query(gateway, "{ a: square(n: 3) }")
    assert seen_keys == [[3, 4], [3]]  # a new request starts with a new loader


def test_three_backends_fan_out_concurrently(gateway: str, slow_orders: Any, rest: Any, catalog: str) -> None:
    query(gateway, '{ slowUser slowProduct orderCount(userId: "1", slow: true) }')  # warm connections
    timings = []
    for _ in range(3):  # the best of three: this machine may be busy with other work
        started = time.perf_counter()
        body = query(gateway, '{ slowUser slowProduct orderCount(userId: "1", slow: true) }')
        timings.append(time.perf_counter() - started)
        assert body == {"data": {"slowUser": "user 1", "slowProduct": "product 1", "orderCount": 1}}
    elapsed = min(timings)
    # one after the other they would take 3 x DELAY
    assert elapsed < DELAY * 2, f"three {DELAY}s backends took {elapsed:.2f}s: they did not run concurrently"


def test_grpc_backend_configuration_errors(protos: Any) -> None:
    with pytest.raises(ConfigurationError):
        GrpcBackend("127.0.0.1:1")
    backend = GrpcBackend("127.0.0.1:1", protos[0])
    with pytest.raises(ConfigurationError):
        backend.method("Orders/Nope")
    assert backend.method("GetOrder") == backend.method("/graphqltest.orders.Orders/GetOrder")
