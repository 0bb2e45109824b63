"""asgigate: build your own edge API gateway or backend-for-frontend as ordinary Python code."""

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
from .policies.faults import FaultInjection
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
from .upstream import Upstream

__version__ = "0.1.0"

__all__ = [
    "App",
    "BadGateway",
    "BadRequest",
    "ClientError",
    "ConfigurationError",
    "Direct",
    "ErrorReplies",
    "Exchange",
    "ExpiredToken",
    "FaultInjected",
    "FaultInjection",
    "Forbidden",
    "Gateway",
    "GatewayError",
    "Group",
    "Handler",
    "InsufficientScope",
    "InvalidBody",
    "InvalidPath",
    "InvalidToken",
    "JSONResponse",
    "MethodNotAllowed",
    "Mock",
    "Mount",
    "NotFound",
    "PayloadTooLarge",
    "Policy",
    "ProblemResponse",
    "Proxy",
    "QuotaExceeded",
    "RateLimited",
    "Redirect",
    "Reply",
    "RequestTerminated",
    "ResponseHead",
    "Route",
    "Target",
    "Terminate",
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
    "problem_response",
]
