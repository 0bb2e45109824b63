"""JSON over HTTP in front of a gRPC service: every google.api.http rule of the service becomes a route.

    python examples/grpc_transcoding.py      # serves on http://127.0.0.1:8000 (PORT=... to change)

The .proto below is compiled at start with grpcio-tools (in production, ship the descriptor set that
`protoc --descriptor_set_out=todo.binpb --include_imports --include_source_info todo.proto` writes), a sample
gRPC "todo" server starts on a free local port in a background thread, and the gateway is served with uvicorn:

    curl -s localhost:8000/v1/todos -d '{"title": "write docs"}'
    curl -s localhost:8000/v1/todos/1
    curl -s 'localhost:8000/v1/todos?done=false'
    curl -sN localhost:8000/v1/todos:watch              # a server stream, one JSON object per line
    curl -s localhost:8000/openapi.json                  # OpenAPI 3.1, proto comments as descriptions
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import uvicorn

from asgigate import Gateway, Group, RateLimit, Route
from asgigate.grpc import Descriptors, GrpcService, MethodSettings, compile_protos
from asgigate.policies.ratelimit import by_client_ip

PROTO = """
syntax = "proto3";
package todo.v1;
import "google/api/annotations.proto";
import "google/protobuf/empty.proto";

// A to-do list.
service TodoService {
  // Lists the to-dos, optionally only the done (or open) ones.
  rpc ListTodos(ListTodosRequest) returns (ListTodosResponse) {
    option (google.api.http) = { get: "/v1/todos" response_body: "todos" };
  }
  // Gets one to-do.
  rpc GetTodo(GetTodoRequest) returns (Todo) { option (google.api.http) = { get: "/v1/todos/{id}" }; }
  rpc CreateTodo(CreateTodoRequest) returns (Todo) {
    option (google.api.http) = { post: "/v1/todos" body: "todo" };
  }
  rpc UpdateTodo(UpdateTodoRequest) returns (Todo) {
    option (google.api.http) = { patch: "/v1/todos/{todo.id}" body: "todo" };
  }
  rpc DeleteTodo(GetTodoRequest) returns (google.protobuf.Empty) {
    option (google.api.http) = { delete: "/v1/todos/{id}" };
  }
  // Streams every to-do, one message each.
  rpc WatchTodos(google.protobuf.Empty) returns (stream Todo) {
    option (google.api.http) = { get: "/v1/todos:watch" };
  }
}

// One thing to do.
message Todo {
  int64 id = 1;
  // What to do.
  string title = 2;
  bool done = 3;
}
message ListTodosRequest { optional bool done = 1; }
message ListTodosResponse { repeated Todo todos = 1; }
message GetTodoRequest { int64 id = 1; }
message CreateTodoRequest { Todo todo = 1; }
message UpdateTodoRequest { Todo todo = 1; }
"""

# --- the gateway ------------------------------------------------------------------------------------------


def build_gateway(grpc_url: str, descriptor_set: str | Path) -> Gateway:
    todos = GrpcService.from_descriptor_set(
        descriptor_set,
        grpc_url,
        timeout=5.0,  # a deadline for every call; a client's Grpc-Timeout header can only shorten it
        methods={
            "CreateTodo": MethodSettings(policies=[RateLimit("30/minute", key=by_client_ip)]),
            "WatchTodos": MethodSettings(stream_format="ndjson"),
        },
    )

    class TodoGateway(Gateway):
        def routes(self) -> Sequence[Route | Group]:
            return [todos, Route("/openapi.json", todos.openapi(title="Todo API", version="1.0"))]

    return TodoGateway()


# --- the sample gRPC server -------------------------------------------------------------------------------


def compile_todo_proto(out_dir: str | Path) -> Path:
    proto = Path(out_dir) / "todo.proto"
    proto.write_text(PROTO)
    return compile_protos([proto], out_dir)


def todo_handlers(descriptors: Descriptors) -> grpc.GenericRpcHandler:
    """The sample service, with message classes made from the descriptors (no generated code needed)."""
    methods = {m.name: m for m in descriptors.methods("todo.v1.TodoService")}
    types = {name: (m.input, m.output) for name, m in methods.items()}
    Todo = types["GetTodo"][1]
    store: dict[int, Any] = {1: Todo(id=1, title="try asgigate", done=True)}

    async def list_todos(request: Any, context: grpc.aio.ServicerContext) -> Any:
        todos = [t for t in store.values() if not request.HasField("done") or t.done == request.done]
        return types["ListTodos"][1](todos=todos)

    async def get_todo(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.id not in store:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no to-do {request.id}")
        return store[request.id]

    async def create_todo(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not request.todo.title:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a to-do needs a title")
        todo = Todo(id=max(store, default=0) + 1, title=request.todo.title, done=request.todo.done)
        store[todo.id] = todo
        return todo

    async def update_todo(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.todo.id not in store:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no to-do {request.todo.id}")
        store[request.todo.id] = request.todo
        return request.todo

    async def delete_todo(request: Any, context: grpc.aio.ServicerContext) -> Any:
        store.pop(request.id, None)
        return types["DeleteTodo"][1]()

    async def watch_todos(request: Any, context: grpc.aio.ServicerContext) -> Any:
        for todo in list(store.values()):
            yield todo

    def unary(name: str, func: Any) -> grpc.RpcMethodHandler:
        request, response = types[name]
        return grpc.unary_unary_rpc_method_handler(func, request_deserializer=request.FromString,
                                                   response_serializer=response.SerializeToString)

    handlers = {
        "ListTodos": unary("ListTodos", list_todos),
        "GetTodo": unary("GetTodo", get_todo),
        "CreateTodo": unary("CreateTodo", create_todo),
        "UpdateTodo": unary("UpdateTodo", update_todo),
        "DeleteTodo": unary("DeleteTodo", delete_todo),
        "WatchTodos": grpc.unary_stream_rpc_method_handler(
            watch_todos, request_deserializer=types["WatchTodos"][0].FromString,
            response_serializer=Todo.SerializeToString),
    }
    return grpc.method_handlers_generic_handler("todo.v1.TodoService", handlers)


_RUNNING: list[grpc.aio.Server] = []  # a grpc.aio server nobody refers to is collected, and stops


def start_todo_server(descriptor_set: str | Path, port: int = 0) -> tuple[str, threading.Thread]:
    """The sample gRPC server on 127.0.0.1 in a daemon thread; returns its grpc:// URL."""
    descriptors = Descriptors.from_file_descriptor_set(descriptor_set)
    loop = asyncio.new_event_loop()
    ready: dict[str, int] = {}

    async def serve() -> grpc.aio.Server:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([todo_handlers(descriptors)])
        ready["port"] = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return server

    thread = threading.Thread(target=loop.run_forever, daemon=True, name="todo-grpc")
    thread.start()
    _RUNNING.append(asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=30))
    return f"grpc://127.0.0.1:{ready['port']}", thread


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    # one fixed work directory, rewritten at each start (uvicorn ends the process on SIGTERM before any cleanup)
    work = Path(tempfile.gettempdir()) / "asgigate-todo-example"
    work.mkdir(exist_ok=True)
    descriptor_set = compile_todo_proto(work)
    grpc_url, _ = start_todo_server(descriptor_set)
    gateway = build_gateway(grpc_url, descriptor_set)
    print(gateway.describe())
    print(f"todo gRPC server at {grpc_url}; try:\n  curl -s http://127.0.0.1:{port}/v1/todos/1\n"
          f"  curl -s http://127.0.0.1:{port}/v1/todos -d '{{\"title\": \"write docs\"}}'", flush=True)
    uvicorn.run(gateway, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    sys.exit(main())
