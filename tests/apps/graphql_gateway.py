"""A GraphQL gateway with default settings but for the document limits, for tests that run it in its own server
process (its memory is measured from outside). The limits are those of earlier versions (10,000 tokens, any length),
so that documents can be large: the document cache must keep to its byte budget whatever the limits."""

from __future__ import annotations

import strawberry

from asgigate import Gateway, Route
from asgigate.graphql import GraphQL, GraphQLLimits


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
        return [Route("/graphql", GraphQL(strawberry.Schema(query=Query),
                                          limits=GraphQLLimits(max_tokens=10_000, max_query_length=None)))]


app = GraphQLGateway(access_log=False)
