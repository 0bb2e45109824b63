"""A separate GraphQL service (strawberry under uvicorn) for the composition and remote-call tests.

``python tests/graphql/graphql_service.py PORT [DELAY]``: serves ``/graphql`` (introspection on) and counts what
it receives: ``GET /calls`` gives ``{"count", "requests": [{"query", "variables", "authorization"}]}``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import orjson
import strawberry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.types import Info

CALLS: list[dict[str, Any]] = []
DELAY = 0.0


@strawberry.type
class Review:
    id: strawberry.ID
    stars: int
    body: str


@strawberry.type
class Product:
    id: strawberry.ID
    name: str
    price: float
    owner_id: strawberry.ID

    @strawberry.field
    def reviews(self, first: int = 2) -> list[Review]:
        return [Review(id=strawberry.ID(f"{self.id}-{n}"), stars=(int(self.id) + n) % 5 + 1, body=f"review {n}")
                for n in range(first)]


@strawberry.interface
class Node:
    id: strawberry.ID


@strawberry.type
class Category(Node):
    title: str


SearchResult = Annotated[Product | Review, strawberry.union("SearchResult")]


def product(pid: str) -> Product | None:
    number = int(pid) if pid.isdigit() else 0
    if not 1 <= number <= 500:
        return None
    return Product(id=strawberry.ID(pid), name=f"product {pid}", price=number * 1.5,
                   owner_id=strawberry.ID(str(number % 7 + 1)))


@strawberry.type
class Query:
    @strawberry.field
    async def product(self, id: strawberry.ID, delay: float = 0.0) -> Product | None:
        await asyncio.sleep(delay or DELAY)
        return product(id)

    @strawberry.field
    async def products(self, ids: list[strawberry.ID]) -> list[Product | None]:
        await asyncio.sleep(DELAY)
        return [product(pid) for pid in ids]

    @strawberry.field
    async def top_products(self, first: int = 3) -> list[Product]:
        await asyncio.sleep(DELAY)
        return [p for p in (product(str(n)) for n in range(1, first + 1)) if p]

    @strawberry.field
    def search(self, text: str) -> list[SearchResult]:
        return [product("1"), Review(id=strawberry.ID("r1"), stars=5, body=text)]  # type: ignore[list-item]

    @strawberry.field
    def node(self, id: strawberry.ID) -> Node:
        return Category(id=id, title=f"category {id}")

    @strawberry.field
    def whoami(self, info: Info) -> str | None:
        return info.context["request"].headers.get("authorization")

    @strawberry.field
    def broken(self) -> str:
        raise ValueError("catalog exploded")


@strawberry.type
class Mutation:
    @strawberry.mutation
    def rename(self, id: strawberry.ID, name: str) -> Product | None:
        found = product(id)
        if found:
            found.name = name
        return found


schema = strawberry.Schema(query=Query, mutation=Mutation, types=[Category])


class Counting:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = {}
        headers = dict(scope["headers"])
        CALLS.append({"query": payload.get("query"), "variables": payload.get("variables"),
                      "authorization": headers.get(b"authorization", b"").decode() or None})
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()  # type: ignore[no-any-return]
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def calls(request: Request) -> Response:
    if request.method == "DELETE":
        CALLS.clear()
    return JSONResponse({"count": len(CALLS), "requests": CALLS})


app = Starlette(routes=[Route("/calls", calls, methods=["GET", "DELETE"]),
                        Route("/graphql", Counting(GraphQL(schema)))])

if __name__ == "__main__":
    import uvicorn

    DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
