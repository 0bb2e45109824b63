"""A real gRPC backend (grpc.aio) for the GraphQL tests: orders per user, with call counting and delays.

`compile_proto(directory)` compiles ``graphql_orders.proto`` with grpcio-tools into `directory` and imports the
generated modules; `OrdersServer(pb2, pb2_grpc, delay=...)` serves them on a free 127.0.0.1 port in a thread.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

HERE = Path(__file__).resolve().parent


def compile_proto(directory: Path) -> tuple[ModuleType, ModuleType]:
    if "graphql_orders_pb2_grpc" in sys.modules:  # a .proto goes into protobuf's default pool once per process
        return sys.modules["graphql_orders_pb2"], sys.modules["graphql_orders_pb2_grpc"]
    from grpc_tools import protoc

    code = protoc.main(["protoc", f"-I{HERE}", f"--python_out={directory}", f"--grpc_python_out={directory}",
                        str(HERE / "graphql_orders.proto")])
    if code != 0:
        raise RuntimeError(f"protoc failed with {code}")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    return importlib.import_module("graphql_orders_pb2"), importlib.import_module("graphql_orders_pb2_grpc")


def orders_of(pb2: ModuleType, user_id: str) -> list[Any]:
    number = int(user_id) if user_id.isdigit() else 0
    return [pb2.Order(id=f"{user_id}-{n}", user_id=user_id, total=number * 10.0 + n, items=[f"item {n}"])
            for n in range(number % 3)]


class OrdersServer:
    """The Orders service in a thread with its own event loop; `calls` lists (method, request) per call."""

    def __init__(self, pb2: ModuleType, pb2_grpc: ModuleType, *, delay: float = 0.0) -> None:
        self.pb2, self.pb2_grpc, self.delay = pb2, pb2_grpc, delay
        self.calls: list[tuple[str, Any]] = []
        self.metadata: list[dict[str, str]] = []
        self.port = 0
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _servicer(self) -> Any:
        server = self
        pb2 = self.pb2

        class Servicer(self.pb2_grpc.OrdersServicer):  # type: ignore[name-defined,misc]
            async def _record(self, name: str, request: Any, context: Any) -> None:
                server.calls.append((name, request))
                server.metadata.append({k: v for k, v in context.invocation_metadata()})
                if server.delay:
                    await asyncio.sleep(server.delay)

            async def GetOrder(self, request: Any, context: Any) -> Any:
                await self._record("GetOrder", request, context)
                user_id = request.id.split("-")[0]
                for order in orders_of(pb2, user_id):
                    if order.id == request.id:
                        return order
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no order {request.id}")

            async def ListOrders(self, request: Any, context: Any) -> Any:
                await self._record("ListOrders", request, context)
                return pb2.ListOrdersResponse(orders=orders_of(pb2, request.user_id))

            async def OrdersByUsers(self, request: Any, context: Any) -> Any:
                await self._record("OrdersByUsers", request, context)
                found = [order for user_id in request.user_ids for order in orders_of(pb2, user_id)]
                return pb2.ListOrdersResponse(orders=found)

        return Servicer()

    def _run(self) -> None:
        async def main() -> None:
            server = grpc.aio.server()
            self.pb2_grpc.add_OrdersServicer_to_server(self._servicer(), server)
            self.port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._started.set()
            await self._stop.wait()
            await server.stop(0)

        asyncio.run(main())

    def __enter__(self) -> OrdersServer:
        self._thread.start()
        if not self._started.wait(15):
            raise RuntimeError("gRPC server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
