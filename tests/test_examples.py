"""Every example runs, through the front door: real servers, real sample upstreams, real HTTP.

Each script is started the way the docs say (`python examples/<name>.py`, port from PORT); each gateway
builder is also served under uvicorn in front of the example's own sample upstream, and the quickstart
module is served by every ASGI server the docs name.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest

from examples import quickstart, versioning

from servers import PYTHON, ROOT, ThreadServer, free_port, serve_process

EXAMPLES = ROOT / "examples"
TESTED = {"quickstart.py", "versioning.py"}


def test_every_example_is_tested() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")} == TESTED


def problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- quickstart ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def users() -> Iterator[ThreadServer]:
    with ThreadServer(quickstart.users_app) as server:
        yield server


@pytest.fixture(scope="module")
def quick(users: ThreadServer) -> Iterator[httpx.Client]:
    with ThreadServer(quickstart.build_gateway(users.url)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield client


def test_quickstart_health_is_direct(quick: httpx.Client) -> None:
    response = quick.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert "x-served-by" not in response.headers  # the route skips the gateway-wide policy
    assert len(response.headers["x-request-id"]) == 24


def test_quickstart_proxies_the_group(quick: httpx.Client) -> None:
    response = quick.get("/api/v1/users", headers={"x-request-id": "client-chosen"})
    assert response.status_code == 200
    body = response.json()
    assert {"id": 1, "name": "Ada"} in body["users"]
    # the upstream saw the gateway's request id (the client's is not trusted), the client gets the same one
    assert body["request_id"] == response.headers["x-request-id"] != "client-chosen"
    assert response.headers["x-served-by"] == "asgigate-quickstart"

    response = quick.get("/api/v1/users/2")
    assert response.json() == {"id": 2, "name": "Grace"}
    response = quick.get("/api/v1/users/999")  # the upstream's own 404 is relayed as it is
    assert response.status_code == 404
    assert response.json() == {"error": "no such user"}


def test_quickstart_policy_stops_writes_without_key(quick: httpx.Client) -> None:
    response = quick.post("/api/v1/users", json={"name": "Linus"})
    body = problem(response, 401, "unauthorized")
    assert body["detail"] == "Writes need a valid x-api-key header."
    assert response.headers["x-served-by"] == "asgigate-quickstart"  # error replies pass the response hooks

    response = quick.post("/api/v1/users", json={"name": "Linus"}, headers={"x-api-key": "demo-key"})
    assert response.status_code == 201
    assert response.json()["name"] == "Linus"
    assert response.headers["x-served-by"] == "asgigate-quickstart"


def test_quickstart_redirect_and_errors(quick: httpx.Client) -> None:
    response = quick.get("/users/2?fields=name")
    assert response.status_code == 308
    assert response.headers["location"] == "/api/v1/users/2?fields=name"

    response = quick.delete("/api/v1/users/1")
    problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"

    response = quick.get("/nowhere")
    problem(response, 404, "no_route")
    assert "x-served-by" not in response.headers  # no route matched, so no policy chain ran

    problem(quick.get("/api/v1/users/abc"), 404, "no_route")  # {id:int} does not match
    problem(quick.get("/api/v1/users/%2e%2e/%2e%2e/%2e%2e/%2e%2e"), 400, "invalid_path")


def test_quickstart_script() -> None:
    """What `./dev demo` runs: the script starts its own upstream, serves on PORT and prints what to curl."""
    port = free_port()
    with serve_process([PYTHON, str(EXAMPLES / "quickstart.py")], port, env={"PORT": str(port)}) as proc:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"ok": True}
        response = httpx.get(f"{base}/api/v1/users/1", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json() == {"id": 1, "name": "Ada"}
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    assert f"curl -i http://127.0.0.1:{port}/healthz" in output
    assert "-> Proxy(users, strip_prefix='/api/v1')" in output  # the route table is printed
    assert '"route":"/api/v1/users/{id:int}"' in output  # and the JSON access log


def test_routes_command_on_the_quickstart() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "asgigate", "routes", "examples.quickstart:app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Quickstart\n")
    assert (
        "GET POST /api/v1/users  [/api/v1/users]\n"
        "  1. ServedBy(name='asgigate-quickstart')  (gateway)\n"
        "  2. ApiKeyForWrites(key='demo-key')  (group)\n"
        "  -> Proxy(users, strip_prefix='/api/v1')\n"
    ) in result.stdout


SERVERS = {
    "uvicorn": lambda port: [PYTHON, "-m", "uvicorn", "examples.quickstart:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
    "hypercorn": lambda port: [PYTHON, "-m", "hypercorn", "examples.quickstart:app", "--bind",
                               f"127.0.0.1:{port}"],
    "granian": lambda port: [PYTHON, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                             "--port", str(port), "examples.quickstart:app"],
}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_quickstart_under_each_server(server: str, users: ThreadServer) -> None:
    """The commands of docs/getting-started.md, against the sample upstream."""
    port = free_port()
    with serve_process(SERVERS[server](port), port, env={"USERS_URL": users.url}, timeout=30):
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"ok": True}
        response = httpx.get(f"{base}/api/v1/users/1", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json() == {"id": 1, "name": "Ada"}
        assert response.headers["x-served-by"] == "asgigate-quickstart"


# --- versioning ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def versioned() -> Iterator[httpx.Client]:
    with ThreadServer(versioning.orders_service(1)) as v1, ThreadServer(versioning.orders_service(2)) as v2:
        with ThreadServer(versioning.build_gateway(v1.url, v2.url)) as gateway:
            with httpx.Client(base_url=gateway.url, timeout=10) as client:
                yield client


V1_ORDER = {"id": 1, "total": "12.50"}
V2_ORDER = {"id": 1, "total": {"amount": 1250, "currency": "EUR"}, "api_version": 2}


def test_versioning_by_path(versioned: httpx.Client) -> None:
    assert versioned.get("/v1/orders/1").json() == V1_ORDER
    assert versioned.get("/v2/orders/1").json() == V2_ORDER
    listing = versioned.get("/v2/orders").json()
    assert listing["path"] == "/orders"  # the version prefix is stripped before forwarding
    assert len(listing["orders"]) == 2


def test_versioning_by_header(versioned: httpx.Client) -> None:
    assert versioned.get("/orders/1").json() == V1_ORDER
    assert versioned.get("/orders/1", headers={"X-API-Version": "1"}).json() == V1_ORDER
    assert versioned.get("/orders/1", headers={"X-API-Version": "2"}).json() == V2_ORDER
    assert versioned.get("/orders", headers={"x-api-version": "2"}).json()["orders"][0] == V2_ORDER


def test_versioning_unknown_version(versioned: httpx.Client) -> None:
    for path in ("/orders/1", "/orders"):
        body = problem(versioned.get(path, headers={"X-API-Version": "3"}), 400, "bad_request")
        assert body["detail"] == "Unsupported API version '3'; use 1 or 2."
    problem(versioned.get("/v3/orders/1"), 404, "no_route")
    problem(versioned.post("/v1/orders"), 405, "method_not_allowed")


def test_versioning_script() -> None:
    port = free_port()
    with serve_process([PYTHON, str(EXAMPLES / "versioning.py")], port, env={"PORT": str(port)}, timeout=30):
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/orders/1", headers={"X-API-Version": "2"}, timeout=10).json() == V2_ORDER
        assert httpx.get(f"{base}/v1/orders/1", timeout=10).json() == V1_ORDER
