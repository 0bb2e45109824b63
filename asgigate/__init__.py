"""asgigate: build your own edge API gateway or backend-for-frontend as ordinary Python code.

The top level is the core (gateway, routes, targets, policies, upstreams, replies, errors) and the headline policy
or target of each feature. Their building blocks live in the feature's package: `asgigate.policies.ratelimit`
(Limit, Plan, keys, stores), `asgigate.policies.auth` (Identity, Consumer, sessions), `asgigate.graphql`,
`asgigate.grpc`, `asgigate.metrics` (Counter, Gauge, Histogram) and `asgigate.testing` (BackgroundServer).
"""

from typing import TYPE_CHECKING, Any

from . import _deprecated
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
from .metrics import Metrics
from .pipeline import Policy, ResponseHead
from .policies.auth import (
    AnyAuth,
    ApiKeyAuth,
    Authorize,
    ClientCredentials,
    ForwardAuth,
    ForwardIdentity,
    IntrospectionAuth,
)
from .policies.faults import FaultInjection
from .policies.ratelimit import ConcurrencyLimit, RateLimit
from .policies.terminate import Terminate
from .replies import ErrorReplies, Reply
from .responses import JSONResponse, ProblemResponse, problem_response
from .routing import Group, Mount, Route
from .targets.base import App, Handler, Target
from .targets.direct import Direct, Redirect
from .targets.intercept_errors import InterceptErrors
from .targets.mock import Mock
from .targets.proxy import Proxy
from .upstreams import Upstream

if TYPE_CHECKING:
    from .graphql import GraphQL
    from .grpc import GrpcService
    from .policies.auth.jwt import BearerAuth
    from .policies.auth.oidc_login import OIDCLogin, SessionAuth, TokenRelay
    from .upstreams.grpc import GrpcUpstream

__version__ = "0.1.0"

__all__ = [
    "AccessLog",
    "AnyAuth",
    "ApiKeyAuth",
    "App",
    "Authorize",
    "BadGateway",
    "BadRequest",
    "BearerAuth",
    "ClientCredentials",
    "ClientDisconnected",
    "ClientError",
    "ConcurrencyLimit",
    "ConfigurationError",
    "Direct",
    "ErrorReplies",
    "Exchange",
    "ExpiredToken",
    "FaultInjected",
    "FaultInjection",
    "Forbidden",
    "ForwardAuth",
    "ForwardIdentity",
    "Gateway",
    "GatewayError",
    "GraphQL",
    "Group",
    "GrpcService",
    "GrpcStatusError",
    "GrpcUpstream",
    "Handler",
    "InsufficientScope",
    "InterceptErrors",
    "IntrospectionAuth",
    "InvalidBody",
    "InvalidPath",
    "InvalidRequest",
    "InvalidToken",
    "JSONResponse",
    "MethodNotAllowed",
    "Metrics",
    "Mock",
    "Mount",
    "NotAcceptable",
    "NotFound",
    "OIDCLogin",
    "PayloadTooLarge",
    "Policy",
    "ProblemResponse",
    "Proxy",
    "QuotaExceeded",
    "RateLimit",
    "RateLimited",
    "Redirect",
    "Reply",
    "RequestTerminated",
    "ResponseHead",
    "Route",
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
    "UpstreamProtocolError",
    "UpstreamResponseTooLarge",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "__version__",
    "problem_response",
]


_AUTH_EXTRA = frozenset({"BearerAuth", "OIDCLogin", "SessionAuth", "TokenRelay"})
_GRPC_EXTRA = frozenset({"GrpcService", "GrpcUpstream"})

# Names that left the top level (building blocks now in their feature's package) or were renamed: they still
# import from here, with a DeprecationWarning, and are kept out of `__all__` and `dir()`.
_RATELIMIT = "asgigate.policies.ratelimit"
_AUTH = "asgigate.policies.auth"
_GRAPHQL = "asgigate.graphql"
_MOVED = {
    **{name: f"{_RATELIMIT}:{name}" for name in (
        "Key", "Limit", "LimitUsage", "Plan", "RateLimitStore",
        "by_client_ip", "by_client_network", "by_header", "by_route", "by_subject",
    )},
    **{name: f"{_AUTH}:{name}" for name in (
        "Authenticator", "Consumer", "CookieSessions", "Identity", "MemorySessions", "RedisSessions", "hash_api_key",
    )},
    **{name: f"{_GRAPHQL}:{name}" for name in (
        "BackendCallError", "BatchLoader", "DeGraphQL", "Extend", "GraphQLContext", "GraphQLCost", "GraphQLLimits",
        "GrpcBackend", "GrpcBatch", "PersistedQueries", "RemoteSchema", "RestBatch", "Safelist", "batch_loader",
    )},
    **{name: f"asgigate.grpc:{name}" for name in ("Descriptors", "JsonOptions", "MethodSettings", "compile_protos")},
    **{name: f"asgigate.metrics:{name}" for name in ("Counter", "Gauge", "Histogram")},
    **{name: f"asgigate.testing:{name}" for name in ("BackgroundServer", "serve_in_thread")},
    "UpstreamErrors": "asgigate:InterceptErrors",
}
_moved = _deprecated.moved(__name__, _MOVED)


def __getattr__(name: str) -> Any:
    if name in _AUTH_EXTRA:  # imported on first use: they need the `auth` extra (joserfc)
        from .policies import auth

        return getattr(auth, name)
    if name in _GRPC_EXTRA:  # imported on first use: they need the `grpc` extra (grpcio, protobuf)
        from . import grpc

        return getattr(grpc, name)
    if name == "GraphQL":  # imported on first use: it needs the `graphql` extra (strawberry-graphql)
        from .graphql import GraphQL

        return GraphQL
    value = _moved(name)
    if value is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return value
