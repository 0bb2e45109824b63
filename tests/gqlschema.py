"""A GraphQL schema for the tests that throw many documents at the gateway (fuzzing, worst-case documents): its
resolvers have no bugs of their own, so any 500 or traceback is the gateway's."""

from __future__ import annotations

from enum import Enum

import strawberry
from graphql import GraphQLError


@strawberry.enum
class Color(Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.input
class Filter:
    name: str | None = None
    ids: list[int] | None = None
    color: Color | None = None


@strawberry.type
class Item:
    id: int

    @strawberry.field
    def children(self, first: int = 2) -> list[Item]:
        return [Item(id=self.id % 1000 * 10 + n) for n in range(max(0, min(first, 3)))]  # ids stay 32-bit

    @strawberry.field
    def parent(self) -> Item:
        return Item(id=self.id // 10)


@strawberry.type
class Query:
    @strawberry.field
    def hello(self, name: str | None = None) -> str:
        return f"hello {name or 'world'}"[:40]

    @strawberry.field
    def item(self, id: int = 1) -> Item:
        return Item(id=id)

    @strawberry.field
    def items(self, first: int = 2, filter: Filter | None = None) -> list[Item]:
        return [Item(id=n) for n in range(max(0, min(first, 3)))]

    @strawberry.field
    def color(self, c: Color = Color.RED) -> Color:
        return c

    @strawberry.field
    def checked(self, n: int | None = None) -> int:
        if n is None:
            raise GraphQLError("n is required here.", extensions={"code": "BAD_USER_INPUT"})
        return n


@strawberry.type
class Mutation:
    @strawberry.mutation
    def echo(self, text: str) -> str:
        return text[:40]


schema = strawberry.Schema(query=Query, mutation=Mutation)
