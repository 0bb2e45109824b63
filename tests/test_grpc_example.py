"""The gRPC transcoding example, imported (its gateway under uvicorn) and started as a script."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asgigate.testing import BackgroundServer
from examples import grpc_transcoding

from servers import PYTHON, ROOT, free_port, serve_process

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def todo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    descriptor_set = grpc_transcoding.compile_todo_proto(tmp_path_factory.mktemp("todo"))
    grpc_url, _ = grpc_transcoding.start_todo_server(descriptor_set)
    with BackgroundServer(grpc_transcoding.build_gateway(grpc_url, descriptor_set)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield client


def test_example_crud(todo: httpx.Client) -> None:
    assert todo.get("/v1/todos/1").json() == {"id": "1", "title": "try asgigate", "done": True}
    created = todo.post("/v1/todos", json={"title": "write docs"}).json()
    assert created["title"] == "write docs"
    assert todo.get("/v1/todos", params={"done": "false"}).json() == [created]
    updated = todo.patch(f"/v1/todos/{created['id']}", json={"title": "write docs", "done": True}).json()
    assert updated["done"] is True
    assert todo.delete(f"/v1/todos/{created['id']}").json() == {}


def test_example_errors(todo: httpx.Client) -> None:
    response = todo.get("/v1/todos/999")
    assert response.status_code == 404
    assert response.json() == {"code": 5, "message": "no to-do 999", "details": []}
    response = todo.post("/v1/todos", json={"title": ""})
    assert response.status_code == 400
    response = todo.post("/v1/todos", json={"titel": "typo"})
    assert response.status_code == 400
    assert response.json()["details"][0]["reason"] == "invalid_body"


def test_example_stream_and_openapi(todo: httpx.Client) -> None:
    lines = todo.get("/v1/todos:watch").text.splitlines()
    assert json.loads(lines[0])["id"] == "1"
    document = todo.get("/openapi.json").json()
    assert document["paths"]["/v1/todos/{id}"]["get"]["description"] == "Gets one to-do."


def test_example_script(tmp_path: Path) -> None:
    port = free_port()
    with serve_process([PYTHON, str(EXAMPLES / "grpc_transcoding.py")], port, env={"PORT": str(port)},
                       timeout=60) as proc:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/todos/1", timeout=10).json()["title"] == "try asgigate"
        assert httpx.post(f"{base}/v1/todos", json={"title": "x"}, timeout=10).status_code == 200
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    assert "GET /v1/todos/{id}  [todo.v1.TodoService.GetTodo]" in output
