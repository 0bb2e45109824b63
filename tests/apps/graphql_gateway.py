"""A GraphQL gateway with default settings, for tests that run it in its own server process (its memory is
measured from outside)."""

from __future__ import annotations

import strawberry

from asgigate import Gateway, Route
from asgigate.graphql import GraphQL


@strawberry.type
class Query:
    @strawberry.field
    def total(self, values: list[int]) -> int:
        return sum(values)

    @strawberry.field
    def hello(self) -> str:
        return "world"


class GraphQLGateway(Gateway):
    def routes(self) -> list[Route]:
        return [Route("/graphql", GraphQL(strawberry.Schema(query=Query)))]


app = GraphQLGateway(access_log=False)
