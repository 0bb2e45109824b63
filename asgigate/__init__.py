"""asgigate: build your own edge API gateway or backend-for-frontend as ordinary Python code."""

from typing import TYPE_CHECKING, Any

from .accesslog import AccessLog
from .errors import (
    BadGateway,
    BadRequest,
    ClientError,
    ConfigurationError,
    ExpiredToken,
    FaultInjected,
    Forbidden,
    GatewayError,
    InsufficientScope,
    InvalidBody,
    InvalidPath,
    InvalidToken,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    RequestTerminated,
    Unauthorized,
    UpstreamConnectError,
    UpstreamError,
    UpstreamErrorResponse,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .exchange import Exchange
from .gateway import Gateway
from .metrics import Counter, Gauge, Histogram, Metrics
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
from .policy import Policy, ResponseHead
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
    from .policies.auth.jwt import BearerAuth
    from .policies.auth.oidc_login import OIDCLogin, SessionAuth, TokenRelay

__version__ = "0.1.0"

__all__ = [
    "AccessLog",
    "AnyAuth",
    "ApiKeyAuth",
    "App",
    "Authenticator",
    "Authorize",
    "BackgroundServer",
    "BadGateway",
    "BadRequest",
    "BearerAuth",
    "ClientCredentials",
    "ClientError",
    "ConcurrencyLimit",
    "ConfigurationError",
    "Consumer",
    "Counter",
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
    "Gauge",
    "Group",
    "Handler",
    "Histogram",
    "Identity",
    "InsufficientScope",
    "IntrospectionAuth",
    "InvalidBody",
    "InvalidPath",
    "InvalidToken",
    "JSONResponse",
    "Key",
    "Limit",
    "LimitUsage",
    "MethodNotAllowed",
    "Metrics",
    "Mock",
    "Mount",
    "NotFound",
    "OIDCLogin",
    "PayloadTooLarge",
    "Plan",
    "Policy",
    "ProblemResponse",
    "Proxy",
    "QuotaExceeded",
    "RateLimit",
    "RateLimitStore",
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
    "Upstream",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamErrorResponse",
    "UpstreamErrors",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "__version__",
    "by_client_ip",
    "by_client_network",
    "by_header",
    "by_route",
    "by_subject",
    "hash_api_key",
    "problem_response",
    "serve_in_thread",
]


_AUTH_EXTRA = frozenset({"BearerAuth", "OIDCLogin", "SessionAuth", "TokenRelay"})


def __getattr__(name: str) -> Any:
    if name in _AUTH_EXTRA:  # imported on first use: they need the `auth` extra (joserfc)
        from .policies import auth

        return getattr(auth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
