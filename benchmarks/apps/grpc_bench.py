"""The three processes of benchmarks/grpc_transcode.py: the gRPC backend, the asgigate gateway and a minimal
hand-written ASGI + json_format app (the baseline), all built from one descriptor set.

    python benchmarks/apps/grpc_bench.py backend DESCRIPTOR_SET PORT
    uvicorn --app-dir benchmarks/apps grpc_bench:gateway     # GRPC_BENCH_DESCRIPTORS, GRPC_BENCH_UPSTREAM set
    uvicorn --app-dir benchmarks/apps grpc_bench:minimal
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import grpc
import grpc.aio
import orjson
from google.protobuf import json_format

from asgigate import Gateway
from asgigate.grpc import Descriptors, GrpcService

SERVICE = "bench.v1.ItemService"
PROTO = """
syntax = "proto3";
package bench.v1;
import "google/api/annotations.proto";
service ItemService {
  rpc GetItem(GetItemRequest) returns (Item) { option (google.api.http) = { get: "/v1/items/{id}" }; }
}
message GetItemRequest { int64 id = 1; }
message Item { int64 id = 1; string name = 2; repeated string tags = 3; double price = 4; bool in_stock = 5; }
"""


def _method(descriptors: Descriptors) -> Any:
    return descriptors.methods(SERVICE)[0]


async def serve_backend(descriptor_set: str, port: int) -> None:
    method = _method(Descriptors.from_file_descriptor_set(descriptor_set))
    Item = method.output

    async def get_item(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return Item(id=request.id, name=f"item {request.id}", tags=["a", "b"], price=9.5, in_stock=True)

    handler = grpc.unary_unary_rpc_method_handler(get_item, request_deserializer=method.input.FromString,
                                                  response_serializer=Item.SerializeToString)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"GetItem": handler})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def build_gateway() -> Gateway:
    descriptor_set = os.environ["GRPC_BENCH_DESCRIPTORS"]
    upstream = os.environ["GRPC_BENCH_UPSTREAM"]

    class Bench(Gateway):
        def routes(self) -> list[Any]:
            return [GrpcService.from_descriptor_set(descriptor_set, upstream, services=[SERVICE])]

    return Bench(access_log=False)


def build_minimal() -> Any:
    """What one would write by hand for this one route: no routing table, no policies, no error shapes."""
    method = _method(Descriptors.from_file_descriptor_set(os.environ["GRPC_BENCH_DESCRIPTORS"]))
    target = os.environ["GRPC_BENCH_UPSTREAM"].removeprefix("grpc://")
    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            if message["type"] == "lifespan.shutdown" and "channel" in state:
                await state["channel"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        call = state.get("call")
        if call is None:
            state["channel"] = channel = grpc.aio.insecure_channel(target)
            call = state["call"] = channel.unary_unary(
                method.path, request_serializer=method.input.SerializeToString,
                response_deserializer=method.output.FromString)
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith("/v1/items/"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        request = json_format.ParseDict({"id": path[len("/v1/items/"):]}, method.input())
        reply = await call(request)
        body = orjson.dumps(json_format.MessageToDict(reply))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def __getattr__(name: str) -> Any:
    # uvicorn imports `module:gateway` or `module:minimal`; each is built only when asked for
    if name == "gateway":
        return build_gateway()
    if name == "minimal":
        return build_minimal()
    raise AttributeError(name)


if __name__ == "__main__" and sys.argv[1:2] == ["backend"]:
    asyncio.run(serve_backend(sys.argv[2], int(sys.argv[3])))
