"""GraphQL composition: backend calls per query, and fan-out latency against the slowest backend alone.

    python benchmarks/graphql_fanout.py [--runs 30] [--rest-ms 20] [--grpc-ms 30] [--graphql-ms 40]

Starts three real backends on 127.0.0.1 (the REST and GraphQL services as processes, the gRPC service in a
thread, each with a fixed artificial latency) and the gateway under uvicorn in its own process, then:

1. fan-out: a query with one root field per backend; its median latency through the gateway against the median
   latency of the slowest backend called alone (target: <= 1.3x, i.e. the backends run concurrently);
2. batching: a 100-item list with two related resources per item (a team over REST, orders over gRPC) and a
   composed remote field; counts the calls each backend receives per query (target: one per relation).

Every process and thread is started here and stopped by its own handle.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "tests" / "graphql"
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402
import strawberry  # noqa: E402
from strawberry.types import Info  # noqa: E402

from asgigate import Gateway, Route, Upstream  # noqa: E402
from asgigate.graphql import (  # noqa: E402
    GraphQL,
    GraphQLContext,
    GraphQLLimits,
    GrpcBackend,
    GrpcBatch,
    RemoteSchema,
    RestBatch,
)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"graphql_bench_{name}", SERVICES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


teams = RestBatch("users", "/teams", items="data.teams")
users_by_id = RestBatch("users", "/users", key="id")
orders_by_user = GrpcBatch("orders", "OrdersByUsers", keys_field="user_ids", items="orders", key="user_id",
                           many=True)


@strawberry.type
class Order:
    id: str


@strawberry.type
class Team:
    name: str


@strawberry.type
class User:
    id: strawberry.ID
    team_id: strawberry.Private[str]

    @strawberry.field
    async def team(self, info: Info[GraphQLContext, None]) -> Team | None:
        found = await info.context.load(teams, self.team_id)
        return Team(name=found["name"]) if found else None

    @strawberry.field
    async def orders(self, info: Info[GraphQLContext, None]) -> list[Order]:
        return [Order(id=o["id"]) for o in await info.context.load(orders_by_user, str(self.id))]


@strawberry.type
class Query:
    @strawberry.field
    async def users(self, info: Info[GraphQLContext, None], ids: list[strawberry.ID]) -> list[User | None]:
        found = await info.context.load_many(users_by_id, [str(i) for i in ids])
        return [User(id=u["id"], team_id=u["team_id"]) if u else None for u in found]

    @strawberry.field
    async def order_count(self, info: Info[GraphQLContext, None], user_id: str) -> int:
        return len((await info.context.grpc("orders", "ListOrders", {"user_id": user_id}))["orders"])


FANOUT = '{ users(ids: ["1"]) { id } orderCount(userId: "5") product(id: "1") { name } }'
LIST = "query($ids: [ID!]!) { users(ids: $ids) { id team { name } orders { id } } topProducts(first: 3) { name } }"


def timed(call: Any, runs: int) -> float:
    call()  # warm up: connections open
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def build_gateway(rest_url: str, grpc_target: str, catalog_url: str, pb2: ModuleType) -> Gateway:
    api = GraphQL(strawberry.Schema(query=Query), limits=GraphQLLimits(max_body_size=None), upstreams=[
        Upstream(rest_url, name="users"), GrpcBackend(grpc_target, pb2, name="orders")],
        remotes=[RemoteSchema(Upstream(catalog_url + "/graphql", name="catalog"), prefix="Catalog",
                              include=["product", "topProducts"])])

    class Bench(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/graphql", api)]

    return Bench(access_log=False)


def serve_gateway(port: int, rest_url: str, grpc_target: str, catalog_url: str, proto_dir: str) -> None:
    import uvicorn

    pb2, _ = load("grpc_service").compile_proto(Path(proto_dir))
    uvicorn.run(build_gateway(rest_url, grpc_target, catalog_url, pb2), host="127.0.0.1", port=port,
                log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rest-ms", type=float, default=20)
    parser.add_argument("--grpc-ms", type=float, default=30)
    parser.add_argument("--graphql-ms", type=float, default=40)
    parser.add_argument("--serve-gateway", nargs=5, metavar=("PORT", "REST", "GRPC", "CATALOG", "PROTOS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_gateway:
        port, rest_url, grpc_target, catalog_url, proto_dir = args.serve_gateway
        serve_gateway(int(port), rest_url, grpc_target, catalog_url, proto_dir)
        return

    from servers import free_port, serve_process

    grpc_service = load("grpc_service")
    proto_dir = tempfile.mkdtemp(prefix="graphql-bench-")
    pb2, pb2_grpc = grpc_service.compile_proto(Path(proto_dir))
    # Backends and the gateway are processes of their own (the gRPC backend a thread here): the client's
    # timings then do not share an interpreter with what they measure.
    rest_port, catalog_port, gateway_port = free_port(), free_port(), free_port()
    rest_url, catalog_url = f"http://127.0.0.1:{rest_port}", f"http://127.0.0.1:{catalog_port}"
    rest_command = [sys.executable, str(SERVICES / "rest_service.py"), str(rest_port), str(args.rest_ms / 1000)]
    catalog_command = [sys.executable, str(SERVICES / "graphql_service.py"), str(catalog_port),
                       str(args.graphql_ms / 1000)]
    with grpc_service.OrdersServer(pb2, pb2_grpc, delay=args.grpc_ms / 1000) as orders, \
            serve_process(rest_command, rest_port), serve_process(catalog_command, catalog_port), \
            serve_process([sys.executable, __file__, "--serve-gateway", str(gateway_port), rest_url, orders.target,
                           catalog_url, proto_dir], gateway_port), httpx.Client(timeout=30) as client:
        gateway_url = f"http://127.0.0.1:{gateway_port}/graphql"

        def query(text: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
            body: dict[str, Any] = client.post(gateway_url, json={"query": text, "variables": variables or {}}).json()
            if body.get("errors"):
                raise SystemExit(f"query failed: {body['errors']}")
            return body

        import grpc

        channel = grpc.insecure_channel(orders.target)
        list_orders = channel.unary_unary("/graphqltest.orders.Orders/ListOrders",
                                          request_serializer=pb2.ListOrdersRequest.SerializeToString,
                                          response_deserializer=pb2.ListOrdersResponse.FromString)
        alone = {
            "rest": timed(lambda: client.get(rest_url + "/users", params={"ids": "1"}), args.runs),
            "grpc": timed(lambda: list_orders(pb2.ListOrdersRequest(user_id="5")), args.runs),
            "graphql": timed(lambda: client.post(catalog_url + "/graphql",
                                                 json={"query": '{ product(id: "1") { name } }'}), args.runs),
        }
        channel.close()
        through = timed(lambda: query(FANOUT), args.runs)
        slowest = max(alone.values())

        client.delete(catalog_url + "/calls")
        client.delete(rest_url + "/_stats")
        orders.calls.clear()
        body = query(LIST, {"ids": [str(i) for i in range(1, 101)]})
        assert len(body["data"]["users"]) == 100
        calls = {"rest": client.get(rest_url + "/_stats").json()["paths"], "grpc": [n for n, _ in orders.calls],
                 "graphql": client.get(catalog_url + "/calls").json()["count"]}

    print("fan-out (one root field per backend), median of", args.runs, "runs:")
    for name, ms in alone.items():
        print(f"  {name:8} alone {ms:7.1f} ms")
    print(f"  gateway, all three {through:7.1f} ms  = {through / slowest:.2f}x the slowest alone (target <= 1.3x)")
    print("100 users, each with a team (REST) and orders (gRPC), plus a composed remote field:")
    print(f"  REST calls    {len(calls['rest'])}: {calls['rest']}  (target: 1 list + 1 batched teams)")
    print(f"  gRPC calls    {len(calls['grpc'])}: {calls['grpc']}  (target: 1 batched)")
    print(f"  GraphQL calls {calls['graphql']}  (target: 1)")


if __name__ == "__main__":
    main()
