"""asgigate: build your own edge API gateway or backend-for-frontend as ordinary Python code."""

from typing import TYPE_CHECKING, Any

from .accesslog import AccessLog
from .errors import (
    BadGateway,
    BadRequest,
    ClientDisconnected,
    ClientError,
    ConfigurationError,
    ExpiredToken,
    FaultInjected,
    Forbidden,
    GatewayError,
    GrpcStatusError,
    InsufficientScope,
    InvalidBody,
    InvalidPath,
    InvalidRequest,
    InvalidToken,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    RequestTerminated,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamConnectError,
    UpstreamError,
    UpstreamErrorResponse,
    UpstreamProtocolError,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .exchange import Exchange
from .gateway import Gateway
from .metrics import Counter, Gauge, Histogram, Metrics
from .pipeline import Policy, ResponseHead
from .policies.auth import (
    AnyAuth,
    ApiKeyAuth,
    Authenticator,
    Authorize,
    ClientCredentials,
    Consumer,
    ForwardAuth,
    ForwardIdentity,
    Identity,
    IntrospectionAuth,
    hash_api_key,
)
from .policies.faults import FaultInjection
from .policies.ratelimit import (
    ConcurrencyLimit,
    Key,
    Limit,
    LimitUsage,
    Plan,
    RateLimit,
    RateLimitStore,
    by_client_ip,
    by_client_network,
    by_header,
    by_route,
    by_subject,
)
from .policies.terminate import Terminate
from .replies import ErrorReplies, Reply
from .responses import JSONResponse, ProblemResponse, problem_response
from .routing import Group, Mount, Route
from .targets.base import App, Handler, Target
from .targets.direct import Direct, Redirect
from .targets.mock import Mock
from .targets.proxy import Proxy
from .targets.upstream_errors import UpstreamErrors
from .testing import BackgroundServer, serve_in_thread
from .upstream import Upstream

if TYPE_CHECKING:
    from .graphql import (
        BackendCallError,
        BatchLoader,
        DeGraphQL,
        Extend,
        GraphQL,
        GraphQLContext,
        GraphQLCost,
        GraphQLLimits,
        GrpcBackend,
        GrpcBatch,
        PersistedQueries,
        RemoteSchema,
        RestBatch,
        Safelist,
        batch_loader,
    )
    from .grpc import Descriptors, GrpcService, GrpcUpstream, JsonOptions, MethodSettings, compile_protos
    from .policies.auth.jwt import BearerAuth
    from .policies.auth.oidc_login import (
        CookieSessions,
        MemorySessions,
        OIDCLogin,
        RedisSessions,
        SessionAuth,
        TokenRelay,
    )

__version__ = "0.1.0"

__all__ = [
    "AccessLog",
    "AnyAuth",
    "ApiKeyAuth",
    "App",
    "Authenticator",
    "Authorize",
    "BackendCallError",
    "BackgroundServer",
    "BadGateway",
    "BadRequest",
    "BatchLoader",
    "BearerAuth",
    "ClientCredentials",
    "ClientDisconnected",
    "ClientError",
    "ConcurrencyLimit",
    "ConfigurationError",
    "Consumer",
    "CookieSessions",
    "Counter",
    "DeGraphQL",
    "Descriptors",
    "Direct",
    "ErrorReplies",
    "Exchange",
    "ExpiredToken",
    "Extend",
    "FaultInjected",
    "FaultInjection",
    "Forbidden",
    "ForwardAuth",
    "ForwardIdentity",
    "Gateway",
    "GatewayError",
    "Gauge",
    "GraphQL",
    "GraphQLContext",
    "GraphQLCost",
    "GraphQLLimits",
    "Group",
    "GrpcBackend",
    "GrpcBatch",
    "GrpcService",
    "GrpcStatusError",
    "GrpcUpstream",
    "Handler",
    "Histogram",
    "Identity",
    "InsufficientScope",
    "IntrospectionAuth",
    "InvalidBody",
    "InvalidPath",
    "InvalidRequest",
    "InvalidToken",
    "JSONResponse",
    "JsonOptions",
    "Key",
    "Limit",
    "LimitUsage",
    "MemorySessions",
    "MethodNotAllowed",
    "MethodSettings",
    "Metrics",
    "Mock",
    "Mount",
    "NotAcceptable",
    "NotFound",
    "OIDCLogin",
    "PayloadTooLarge",
    "PersistedQueries",
    "Plan",
    "Policy",
    "ProblemResponse",
    "Proxy",
    "QuotaExceeded",
    "RateLimit",
    "RateLimitStore",
    "RateLimited",
    "Redirect",
    "RedisSessions",
    "RemoteSchema",
    "Reply",
    "RequestTerminated",
    "ResponseHead",
    "RestBatch",
    "Route",
    "Safelist",
    "SessionAuth",
    "Target",
    "Terminate",
    "TokenRelay",
    "Unauthorized",
    "UnsupportedMediaType",
    "Upstream",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamErrorResponse",
    "UpstreamErrors",
    "UpstreamProtocolError",
    "UpstreamResponseTooLarge",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "__version__",
    "batch_loader",
    "by_client_ip",
    "by_client_network",
    "by_header",
    "by_route",
    "by_subject",
    "compile_protos",
    "hash_api_key",
    "problem_response",
    "serve_in_thread",
]


_AUTH_EXTRA = frozenset({"BearerAuth", "CookieSessions", "MemorySessions", "OIDCLogin", "RedisSessions",
                         "SessionAuth", "TokenRelay"})
_GRAPHQL_EXTRA = frozenset({"BackendCallError", "BatchLoader", "DeGraphQL", "Extend", "GraphQL", "GraphQLContext",
                            "GraphQLCost", "GraphQLLimits", "GrpcBackend", "GrpcBatch", "PersistedQueries",
                            "RemoteSchema", "RestBatch", "Safelist", "batch_loader"})
_GRPC_EXTRA = frozenset({"Descriptors", "GrpcService", "GrpcUpstream", "JsonOptions", "MethodSettings",
                         "compile_protos"})


def __getattr__(name: str) -> Any:
    if name in _AUTH_EXTRA:  # imported on first use: they need the `auth` extra (joserfc)
        from .policies import auth

        return getattr(auth, name)
    if name in _GRPC_EXTRA:  # imported on first use: they need the `grpc` extra (grpcio, protobuf)
        from . import grpc

        return getattr(grpc, name)
    if name in _GRAPHQL_EXTRA:  # imported on first use: they need the `graphql` extra (strawberry-graphql)
        from . import graphql

        return getattr(graphql, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
