"""A small edge gateway in front of a sample "users" service, all in one process.

    python examples/quickstart.py            # serves on http://127.0.0.1:8000 (PORT=... to change)

The sample users service (a tiny Starlette app) starts first, on a free local port in a background thread;
then the gateway is served with uvicorn. To run the gateway alone against your own users service:

    USERS_URL=http://127.0.0.1:9000 uvicorn examples.quickstart:app
    python -m asgigate routes examples.quickstart:app     # the route table, each chain in run order
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from asgigate import (
    Direct,
    Exchange,
    Gateway,
    Group,
    Policy,
    Proxy,
    Redirect,
    ResponseHead,
    Route,
    Unauthorized,
    Upstream,
)
from asgigate.testing import serve_in_thread

# --- the gateway ------------------------------------------------------------------------------------------


class ServedBy(Policy):
    """Adds `x-served-by` to every reply of the routes it is on: upstream, local and error replies alike."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        head.headers["x-served-by"] = self.name


class ApiKeyForWrites(Policy):
    """Reads are open; anything else needs the `x-api-key` header. Refusing stops the chain: no upstream call."""

    def __init__(self, key: str) -> None:
        self.key = key

    async def on_request(self, exchange: Exchange) -> Response | None:
        if exchange.method not in ("GET", "HEAD") and exchange.headers.get("x-api-key") != self.key:
            raise Unauthorized("Writes need a valid x-api-key header.")
        return None


class Quickstart(Gateway):
    def __init__(self, users_url: str) -> None:
        super().__init__()
        self.users = Upstream(users_url, name="users", timeout=5.0)

    def policies(self) -> Sequence[Policy]:
        return [ServedBy("asgigate-quickstart")]

    def routes(self) -> Sequence[Route | Group]:
        return [
            Route("/healthz", Direct(json={"ok": True}), skip={ServedBy}),
            Group(
                "/api/v1",
                [
                    # /api/v1/users → /users on the users service
                    Route("/users", Proxy(self.users, strip_prefix="/api/v1"), methods=["GET", "POST"]),
                    # the upstream path is a template filled from the route's typed parameters
                    Route("/users/{id:int}", Proxy(self.users, path="/users/{id}"), methods=["GET"]),
                ],
                policies=[ApiKeyForWrites("demo-key")],
            ),
            # an old URL, moved permanently; the parameter is carried over
            Route("/users/{id:int}", Redirect("/api/v1/users/{id}", status=308)),
        ]


def build_gateway(upstream_url: str) -> Quickstart:
    """The demo gateway in front of the users service at `upstream_url`."""
    return Quickstart(upstream_url)


# `uvicorn examples.quickstart:app` and `python -m asgigate routes examples.quickstart:app` use this one.
app = build_gateway(os.environ.get("USERS_URL", "http://127.0.0.1:9000"))


# --- the sample upstream ----------------------------------------------------------------------------------

USERS: dict[int, dict[str, object]] = {1: {"id": 1, "name": "Ada"}, 2: {"id": 2, "name": "Grace"}}


async def list_users(request: Request) -> JSONResponse:
    return JSONResponse(
        {"users": list(USERS.values()), "request_id": request.headers.get("x-request-id")}
    )


async def get_user(request: Request) -> JSONResponse:
    user = USERS.get(int(request.path_params["id"]))
    if user is None:
        return JSONResponse({"error": "no such user"}, status_code=404)
    return JSONResponse(user)


async def create_user(request: Request) -> JSONResponse:
    data = await request.json()
    user_id = max(USERS, default=0) + 1
    USERS[user_id] = {"id": user_id, "name": str(data.get("name", "anonymous"))}
    return JSONResponse(USERS[user_id], status_code=201)


users_app = Starlette(
    routes=[
        StarletteRoute("/users", list_users, methods=["GET"]),
        StarletteRoute("/users", create_user, methods=["POST"]),
        StarletteRoute("/users/{id:int}", get_user, methods=["GET"]),
    ]
)


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    users_url = serve_in_thread(users_app)
    gateway = build_gateway(users_url)
    # One JSON line per request on the "asgigate.access" logger.
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stdout)
    base = f"http://127.0.0.1:{port}"
    print(f"sample users service on {users_url}", flush=True)
    print(f"gateway on {base}; try:", flush=True)
    tries = [
        (f"curl -i {base}/healthz", "answered by the gateway"),
        (f"curl -i {base}/api/v1/users", "proxied to the users service"),
        (f"curl -i {base}/api/v1/users/1", ""),
        (f"curl -i -X POST {base}/api/v1/users -d '{{\"name\": \"Linus\"}}'", "401: writes need a key"),
        (f"curl -i -X POST {base}/api/v1/users -H 'x-api-key: demo-key' -d '{{\"name\": \"Linus\"}}'", "201"),
        (f"curl -i {base}/users/2", "308 redirect"),
        (f"curl -i -X DELETE {base}/api/v1/users/1", "405"),
        (f"curl -i {base}/nowhere", "404"),
    ]
    width = max(len(command) for command, _ in tries)
    for command, note in tries:
        print(f"  {command:<{width}}  # {note}" if note else f"  {command}", flush=True)
    print(flush=True)
    print(gateway.describe(), flush=True)
    uvicorn.run(gateway, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
