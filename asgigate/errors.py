"""The gateway's errors: one tree, each class with an HTTP status and a stable machine-readable code.

    GatewayError                        500 internal_error
    ├── ClientError                     400 bad_request
    │   ├── BadRequest                  400 bad_request
    │   │   └── InvalidPath             400 invalid_path
    │   ├── Unauthorized                401 unauthorized
    │   ├── Forbidden                   403 forbidden
    │   ├── NotFound                    404 no_route
    │   ├── MethodNotAllowed            405 method_not_allowed
    │   ├── PayloadTooLarge             413 payload_too_large
    │   └── RateLimited                 429 rate_limited
    └── UpstreamError                   502 bad_gateway
        ├── BadGateway                  502 bad_gateway
        │   ├── UpstreamConnectError    502 upstream_connect_failed
        │   └── UpstreamProtocolError   502 upstream_protocol_error
        ├── UpstreamUnavailable         503 upstream_unavailable
        └── UpstreamTimeout             504 upstream_timeout

    ConfigurationError                  raised while building a gateway; never an HTTP reply

`code` is the stable reason that clients, logs and metrics see. `detail` is safe to show to a client; anything
internal goes into `internal` (logged, never rendered). Every error the gateway replies with goes through
`Gateway.render_error`; once a response has started, an error aborts the connection instead.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadGateway",
    "BadRequest",
    "ClientError",
    "ConfigurationError",
    "Forbidden",
    "GatewayError",
    "InvalidPath",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class GatewayError(Exception):
    """Base of every error the gateway turns into a reply."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal Server Error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        internal: str | None = None,
    ) -> None:
        self.detail = detail
        self.headers: dict[str, str] = dict(headers) if headers else {}
        self.internal = internal
        super().__init__(detail or self.title)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class ClientError(GatewayError):
    """The client's request cannot be served as sent (4xx)."""

    status_code = 400
    code = "bad_request"
    title = "Bad Request"


class BadRequest(ClientError):
    pass


class InvalidPath(BadRequest):
    code = "invalid_path"
    title = "Invalid Request Path"


class Unauthorized(ClientError):
    status_code = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(ClientError):
    status_code = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(ClientError):
    status_code = 404
    code = "no_route"
    title = "Not Found"


class MethodNotAllowed(ClientError):
    status_code = 405
    code = "method_not_allowed"
    title = "Method Not Allowed"

    def __init__(self, allow: list[str], detail: str | None = None) -> None:
        self.allow = sorted(set(allow))
        super().__init__(detail, headers={"allow": ", ".join(self.allow)})


class PayloadTooLarge(ClientError):
    status_code = 413
    code = "payload_too_large"
    title = "Payload Too Large"


class RateLimited(ClientError):
    status_code = 429
    code = "rate_limited"
    title = "Too Many Requests"

    def __init__(
        self, detail: str | None = None, *, retry_after: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.retry_after = retry_after
        merged = dict(headers) if headers else {}
        if retry_after is not None:
            merged["retry-after"] = str(retry_after)
        super().__init__(detail, headers=merged)


class UpstreamError(GatewayError):
    """The upstream could not give a usable response (5xx). `stage` names what failed."""

    status_code = 502
    code = "bad_gateway"
    title = "Bad Gateway"

    def __init__(
        self,
        detail: str | None = None,
        *,
        stage: str | None = None,
        upstream: str | None = None,
        internal: str | None = None,
    ) -> None:
        self.stage = stage
        self.upstream = upstream
        super().__init__(detail, internal=internal)


class BadGateway(UpstreamError):
    pass


class UpstreamConnectError(BadGateway):
    code = "upstream_connect_failed"


class UpstreamProtocolError(BadGateway):
    code = "upstream_protocol_error"


class UpstreamUnavailable(UpstreamError):
    status_code = 503
    code = "upstream_unavailable"
    title = "Service Unavailable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"
    title = "Gateway Timeout"


class ConfigurationError(Exception):
    """A gateway was declared wrongly. Raised at build time, with the whole chain in the message."""
