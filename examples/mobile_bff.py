"""A mobile backend-for-frontend: one GraphQL API over a REST, a gRPC and a GraphQL backend.

    python examples/mobile_bff.py            # serves on http://127.0.0.1:8000/graphql (PORT=... to change)

It starts three sample backends on free local ports: a REST "accounts" service, a gRPC "orders" service (its
.proto compiled at startup with grpcio-tools) and a GraphQL "catalog" service. The gateway's schema has
``me`` and ``user`` (REST), ``orders`` on a user (gRPC, one batched call for a whole list), and the catalog's
root fields composed in under a ``Catalog`` prefix, whose products gain a ``seller`` from the REST service.
Try::

    curl -s localhost:8000/graphql -H 'authorization: Bearer user-1' -H 'content-type: application/json' \\
      -d '{"query": "{ me { name orders { id total } } catalogTopProducts(first: 3) { name seller { name } } }"}'
    curl -s localhost:8000/v1/users/2                 # a REST endpoint backed by a GraphQL query
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute
from strawberry.asgi import GraphQL as StrawberryApp
from strawberry.types import Info

from asgigate import Gateway, Policy, RateLimit, Route, Upstream
from asgigate.exchange import Exchange
from asgigate.graphql import (
    DeGraphQL,
    Extend,
    GraphQL,
    GraphQLContext,
    GraphQLCost,
    GraphQLLimits,
    GrpcBackend,
    GrpcBatch,
    PersistedQueries,
    RemoteSchema,
    RestBatch,
)
from asgigate.policies.auth import Identity
from asgigate.policies.ratelimit import by_subject
from asgigate.testing import serve_in_thread

# --- the gateway's own schema -------------------------------------------------------------------------------

users_by_id = RestBatch("accounts", "/users", param="ids", key="id")  # GET /users?ids=1,2,3
orders_by_user = GrpcBatch("orders", "mobile.orders.Orders/OrdersByUsers", keys_field="user_ids", items="orders",
                           key="user_id", many=True)


@strawberry.type
class Order:
    id: str
    total: float


@strawberry.type
class User:
    id: strawberry.ID
    name: str

    @strawberry.field
    async def orders(self, info: Info[GraphQLContext, None]) -> list[Order]:
        found = await info.context.load(orders_by_user, str(self.id))
        return [Order(id=o["id"], total=o["total"]) for o in found]


async def load_user(context: GraphQLContext, user_id: str) -> User | None:
    found = await context.load(users_by_id, user_id)
    return User(id=found["id"], name=found["name"]) if found else None


@strawberry.type
class Query:
    @strawberry.field
    async def me(self, info: Info[GraphQLContext, None]) -> User | None:
        identity = info.context.identity
        return await load_user(info.context, identity.subject.removeprefix("user-")) if identity else None

    @strawberry.field
    async def user(self, info: Info[GraphQLContext, None], id: strawberry.ID) -> User | None:
        return await load_user(info.context, str(id))


schema = strawberry.Schema(query=Query)


async def seller_of(product: dict[str, Any], info: Any) -> User | None:
    return await load_user(info.context, product["sellerId"])


class DemoBearer(Policy):
    """Stands in for BearerAuth in this demo: ``Authorization: Bearer user-N`` is user N."""

    async def on_request(self, exchange: Exchange) -> None:
        header = exchange.headers.get("authorization", "")
        if header.startswith("Bearer user-"):
            exchange.identity = Identity(subject=header.removeprefix("Bearer "))


def build_gateway(accounts_url: str, orders_target: str, catalog_url: str, orders_pb2: ModuleType) -> Gateway:
    accounts = Upstream(accounts_url, name="accounts", timeout=2.0)
    orders = GrpcBackend(orders_target, orders_pb2, name="orders", timeout=2.0)
    catalog = RemoteSchema(Upstream(catalog_url, name="catalog", timeout=2.0), prefix="Catalog",
                           field_prefix="catalog_")
    api = GraphQL(
        schema,
        upstreams=[accounts, orders],
        remotes=[catalog],
        extend=[Extend("CatalogProduct", "seller", "User", seller_of, requires="sellerId")],
        limits=GraphQLLimits(max_depth=8, max_aliases=10),
        cost=GraphQLCost(maximum=500, list_sizes={"User.orders": 5}),
        persisted=PersistedQueries(),
        graphiql=True,
        introspection=True,
    )

    class MobileBFF(Gateway):
        def policies(self) -> list[Policy]:
            return [DemoBearer(), RateLimit("300/minute", key=by_subject)]

        def routes(self) -> list[Route]:
            return [
                Route("/graphql", api),
                Route("/v1/users/{id}", DeGraphQL(api, "query($id: ID!) { user(id: $id) { id name orders { id } } }",
                                                  unwrap=True)),
            ]

    return MobileBFF()


# --- sample backends ----------------------------------------------------------------------------------------

USERS = {str(i): {"id": str(i), "name": name} for i, name in enumerate(["Ada", "Grace", "Edsger", "Barbara"], 1)}


async def users_endpoint(request: Request) -> JSONResponse:
    ids = request.query_params.get("ids", "").split(",")
    return JSONResponse([USERS[i] for i in ids if i in USERS])


accounts_app = Starlette(routes=[StarletteRoute("/users", users_endpoint)])


@strawberry.type
class Product:
    id: strawberry.ID
    name: str
    price: float
    seller_id: strawberry.ID


@strawberry.type
class CatalogQuery:
    @strawberry.field
    def top_products(self, first: int = 3) -> list[Product]:
        return [Product(id=strawberry.ID(str(n)), name=f"product {n}", price=n * 9.5,
                        seller_id=strawberry.ID(str(n % 4 + 1))) for n in range(1, first + 1)]


catalog_app = Starlette(routes=[StarletteRoute("/graphql", StrawberryApp(strawberry.Schema(query=CatalogQuery)))])

ORDERS_PROTO = """syntax = "proto3";
package mobile.orders;
message Order { string id = 1; string user_id = 2; double total = 3; }
message OrdersByUsersRequest { repeated string user_ids = 1; }
message OrdersResponse { repeated Order orders = 1; }
service Orders { rpc OrdersByUsers(OrdersByUsersRequest) returns (OrdersResponse); }
"""


def compile_orders_proto() -> tuple[ModuleType, ModuleType]:
    """The generated modules of the orders service (a real service would ship them)."""
    if "mobile_orders_pb2_grpc" not in sys.modules:
        from grpc_tools import protoc

        directory = Path(tempfile.mkdtemp(prefix="mobile-bff-"))
        (directory / "mobile_orders.proto").write_text(ORDERS_PROTO)
        if protoc.main(["protoc", f"-I{directory}", f"--python_out={directory}", f"--grpc_python_out={directory}",
                        str(directory / "mobile_orders.proto")]) != 0:
            raise RuntimeError("protoc failed")
        sys.path.insert(0, str(directory))
    return importlib.import_module("mobile_orders_pb2"), importlib.import_module("mobile_orders_pb2_grpc")


def serve_orders(pb2: ModuleType, pb2_grpc: ModuleType) -> str:
    """The orders service on a free port, in a background thread; returns its host:port."""
    import grpc

    class Orders(pb2_grpc.OrdersServicer):  # type: ignore[name-defined,misc]
        async def OrdersByUsers(self, request: Any, context: Any) -> Any:
            return pb2.OrdersResponse(orders=[pb2.Order(id=f"{u}-{n}", user_id=u, total=12.5 * (n + 1))
                                              for u in request.user_ids for n in range(int(u) % 3)])

    started = threading.Event()
    port: list[int] = []

    async def run() -> None:
        server = grpc.aio.server()
        pb2_grpc.add_OrdersServicer_to_server(Orders(), server)
        port.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        started.set()
        await server.wait_for_termination()

    threading.Thread(target=lambda: asyncio.run(run()), daemon=True).start()
    started.wait(10)
    return f"127.0.0.1:{port[0]}"


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    pb2, pb2_grpc = compile_orders_proto()
    gateway = build_gateway(serve_in_thread(accounts_app), serve_orders(pb2, pb2_grpc),
                            serve_in_thread(catalog_app) + "/graphql", pb2)
    print(f"GraphQL on http://127.0.0.1:{port}/graphql", flush=True)
    uvicorn.run(gateway, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
