"""asgigate: build your own edge API gateway or backend-for-frontend as ordinary Python code."""

from .errors import (
    BadGateway,
    BadRequest,
    ClientError,
    ConfigurationError,
    Forbidden,
    GatewayError,
    InvalidPath,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .exchange import Exchange
from .gateway import Gateway
from .policy import Policy, ResponseHead
from .responses import JSONResponse, ProblemResponse, problem_response
from .routing import Group, Mount, Route
from .targets.base import App, Handler, Target
from .targets.direct import Direct, Redirect
from .targets.proxy import Proxy
from .upstream import Upstream

__version__ = "0.1.0"

__all__ = [
    "App",
    "BadGateway",
    "BadRequest",
    "ClientError",
    "ConfigurationError",
    "Direct",
    "Exchange",
    "Forbidden",
    "Gateway",
    "GatewayError",
    "Group",
    "Handler",
    "InvalidPath",
    "JSONResponse",
    "MethodNotAllowed",
    "Mount",
    "NotFound",
    "PayloadTooLarge",
    "Policy",
    "ProblemResponse",
    "Proxy",
    "RateLimited",
    "Redirect",
    "ResponseHead",
    "Route",
    "Target",
    "Unauthorized",
    "Upstream",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "__version__",
    "problem_response",
]
