"""GraphQL for BFFs on strawberry: serve a schema through the gateway, call backends from resolvers in one line,
batch without N+1, compose remote GraphQL services, and protect the endpoint (limits, cost, persisted queries).

Needs the ``graphql`` extra (strawberry-graphql); gRPC backends also need the ``grpc`` extra.
"""

from typing import TYPE_CHECKING, Any

from .backends import BackendCallError
from .context import GraphQLContext
from .degraphql import DeGraphQL
from .loaders import BatchLoader, GrpcBatch, RestBatch, batch_loader
from .persisted import PersistedQueries, Safelist
from .protection import GraphQLCost, GraphQLLimits
from .remote import Extend, RemoteSchema
from .target import GraphQL

if TYPE_CHECKING:
    from .grpc import GrpcBackend

__all__ = [
    "BackendCallError",
    "BatchLoader",
    "DeGraphQL",
    "Extend",
    "GraphQL",
    "GraphQLContext",
    "GraphQLCost",
    "GraphQLLimits",
    "GrpcBackend",
    "GrpcBatch",
    "PersistedQueries",
    "RemoteSchema",
    "RestBatch",
    "Safelist",
    "batch_loader",
]


def __getattr__(name: str) -> Any:
    if name == "GrpcBackend":  # imported on first use: it needs the `grpc` extra (grpcio, protobuf)
        from .grpc import GrpcBackend

        return GrpcBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
