"""GraphQL for BFFs on strawberry: serve a schema through the gateway, call backends from resolvers in one line,
batch without N+1, compose remote GraphQL services, and protect the endpoint (limits, cost, persisted queries).

Needs the ``graphql`` extra (strawberry-graphql); gRPC backends also need the ``grpc`` extra.
"""

from .backends import BackendCallError
from .context import GraphQLContext
from .degraphql import DeGraphQL
from .grpc import GrpcBackend
from .loaders import BatchLoader, GrpcBatch, RestBatch, batch_loader
from .persisted import PersistedQueries, Safelist
from .protection import GraphQLCost, GraphQLLimits
from .remote import Extend, RemoteSchema
from .target import GraphQL

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
