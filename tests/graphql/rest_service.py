"""A real REST backend for the GraphQL tests: users and their addresses, with call counting, delays and failures.

Run alone: ``python tests/graphql/rest_service.py PORT``. In tests, `make_app()` is served by a BackgroundServer and the
test reads `app.state.calls` (one entry per request: method, path, query string, Authorization header).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

USERS = {str(i): {"id": str(i), "name": f"user {i}", "team_id": str(i % 3)} for i in range(1, 201)}
TEAMS = {str(i): {"id": str(i), "name": f"team {i}"} for i in range(3)}


def make_app(delay: float = 0.0) -> Starlette:
    async def record(request: Request) -> None:
        request.app.state.calls.append({
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "authorization": request.headers.get("authorization"),
            "request_id": request.headers.get("x-request-id"),
        })
        pause = float(request.query_params.get("delay", request.app.state.delay))
        if pause:
            await asyncio.sleep(pause)

    async def users(request: Request) -> Response:
        await record(request)
        ids = request.query_params.get("ids")
        if ids is None:
            return JSONResponse(list(USERS.values())[:10])
        return JSONResponse([USERS[i] for i in ids.split(",") if i in USERS])

    async def user(request: Request) -> Response:
        await record(request)
        found = USERS.get(request.path_params["id"])
        return JSONResponse(found) if found else JSONResponse({"error": "no such user"}, status_code=404)

    async def teams(request: Request) -> Response:
        await record(request)
        ids = request.query_params.get("ids", "").split(",")
        return JSONResponse({"data": {"teams": [TEAMS[i] for i in ids if i in TEAMS]}})

    async def whoami(request: Request) -> Response:
        await record(request)
        return JSONResponse({"authorization": request.headers.get("authorization"),
                             "request_id": request.headers.get("x-request-id")})

    async def broken(request: Request) -> Response:
        await record(request)
        return JSONResponse({"error": "boom"}, status_code=500)

    async def stats(request: Request) -> Response:
        calls = request.app.state.calls
        if request.method == "DELETE":
            calls.clear()
        return JSONResponse({"calls": len(calls), "paths": [call["path"] for call in calls]})

    app = Starlette(routes=[
        Route("/users", users),
        Route("/users/{id}", user),
        Route("/teams", teams),
        Route("/whoami", whoami),
        Route("/broken", broken),
        Route("/_stats", stats, methods=["GET", "DELETE"]),
    ])
    app.state.calls = []
    app.state.delay = delay
    return app


app: Any = make_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(make_app(float(sys.argv[2]) if len(sys.argv) > 2 else 0.0), host="127.0.0.1",
                port=int(sys.argv[1]), log_level="warning")
