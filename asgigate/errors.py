"""The gateway's errors: one tree, each class with an HTTP status and a stable machine-readable code.

    GatewayError                        500 internal_error
    ├── ClientError                     400 bad_request
    │   ├── BadRequest                  400 bad_request
    │   │   ├── InvalidPath             400 invalid_path
    │   │   ├── InvalidBody             400 invalid_body
    │   │   └── InvalidRequest          400 invalid_request
    │   ├── Unauthorized                401 unauthorized
    │   │   └── InvalidToken            401 invalid_token
    │   │       └── ExpiredToken        401 expired_token
    │   ├── Forbidden                   403 forbidden
    │   │   └── InsufficientScope       403 insufficient_scope
    │   ├── NotFound                    404 no_route
    │   ├── MethodNotAllowed            405 method_not_allowed
    │   ├── NotAcceptable               406 not_acceptable
    │   ├── PayloadTooLarge             413 payload_too_large
    │   ├── UnsupportedMediaType        415 unsupported_media_type
    │   └── RateLimited                 429 rate_limited
    │       └── QuotaExceeded           429 quota_exceeded
    ├── RequestTerminated               503 request_terminated
    ├── FaultInjected                   503 fault_injected
    └── UpstreamError                   502 bad_gateway
        ├── BadGateway                  502 bad_gateway
        │   ├── UpstreamConnectError    502 upstream_connect_failed
        │   ├── UpstreamProtocolError   502 upstream_protocol_error
        │   └── UpstreamResponseTooLarge 502 upstream_response_too_large
        ├── UpstreamErrorResponse       502 upstream_error_response
        ├── GrpcStatusError             502 grpc_status
        ├── UpstreamUnavailable         503 upstream_unavailable
        └── UpstreamTimeout             504 upstream_timeout

    ConfigurationError                  raised while building a gateway; never an HTTP reply
    ClientDisconnected (an OSError)     the client went away mid-request; nothing is left to reply to

`code` is the stable reason that clients, logs and metrics see. `RequestTerminated`, `FaultInjected`,
`UpstreamErrorResponse` and `GrpcStatusError` take their status per instance (the drawn one is their default);
every other class has one status. `detail` is safe to show to a client; anything internal goes into `internal`
(logged, never rendered). `headers` are protocol headers (`Allow`, `Retry-After`, `WWW-Authenticate`,
`RateLimit-*`): every error reply carries them, whatever its body format. Every error the gateway replies with goes
through one renderer (see `asgigate.replies`); once a response has started, an error aborts the connection instead.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .routing import Route

__all__ = [
    "BadGateway",
    "BadRequest",
    "ClientDisconnected",
    "ClientError",
    "ConfigurationError",
    "ExpiredToken",
    "FaultInjected",
    "Forbidden",
    "GatewayError",
    "GrpcStatusError",
    "InsufficientScope",
    "InvalidBody",
    "InvalidPath",
    "InvalidRequest",
    "InvalidToken",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "RequestTerminated",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamErrorResponse",
    "UpstreamProtocolError",
    "UpstreamResponseTooLarge",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class GatewayError(Exception):
    """Base of every error the gateway turns into a reply.

    `reason` is what the access log and metrics record for the reply (`exchange.reason`); it is the `code`
    unless the raiser gives a finer one (a `Terminate` policy's `reason="maintenance"`).
    """

    # Plain class attributes rather than ClassVars: the few errors whose status is chosen per instance
    # (RequestTerminated, FaultInjected, UpstreamErrorResponse) set them on the instance.
    status_code: int = 500
    title: str = "Internal Server Error"
    code: ClassVar[str] = "internal_error"

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
        self.reason: str = self.code
        super().__init__(detail or self.title)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


def _set_status(error: GatewayError, status: int, title: str | None) -> None:
    if not 400 <= status <= 599:
        raise ValueError(f"{type(error).__name__} status {status} is not a 4xx or 5xx status.")
    error.status_code = status
    try:
        error.title = title or HTTPStatus(status).phrase
    except ValueError:
        error.title = title or ("Client Error" if status < 500 else "Server Error")


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


class InvalidBody(BadRequest):
    """The request body cannot be used: malformed JSON, a failed schema check, a wrong length."""

    code = "invalid_body"
    title = "Invalid Request Body"


class InvalidRequest(BadRequest):
    """The request carries its credentials ambiguously: more than one where a policy verifies one (two
    `Authorization` lines, a header token and a query token, a cookie twice). RFC 6750 3.1 `invalid_request`;
    `challenge` is sent as `WWW-Authenticate` (``""`` sends none)."""

    code = "invalid_request"
    title = "Invalid Request"
    default_challenge: ClassVar[str] = 'Bearer error="invalid_request"'

    def __init__(
        self,
        detail: str | None = None,
        *,
        challenge: str | None = None,
        headers: dict[str, str] | None = None,
        internal: str | None = None,
    ) -> None:
        challenge = self.default_challenge if challenge is None else challenge
        super().__init__(detail, headers=_challenged(headers, challenge), internal=internal)


class Unauthorized(ClientError):
    """No usable credentials. `challenge` is sent as `WWW-Authenticate` (RFC 9110 11.6.1)."""

    status_code = 401
    code = "unauthorized"
    title = "Unauthorized"
    default_challenge: ClassVar[str | None] = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        challenge: str | None = None,
        headers: dict[str, str] | None = None,
        internal: str | None = None,
    ) -> None:
        super().__init__(detail, headers=_challenged(headers, challenge or self.default_challenge), internal=internal)


class InvalidToken(Unauthorized):
    """A bearer token was sent but is not valid (RFC 6750 `invalid_token`)."""

    code = "invalid_token"
    title = "Invalid Token"
    default_challenge = 'Bearer error="invalid_token"'


class ExpiredToken(InvalidToken):
    code = "expired_token"
    title = "Expired Token"
    default_challenge = 'Bearer error="invalid_token", error_description="The access token expired"'


class Forbidden(ClientError):
    status_code = 403
    code = "forbidden"
    title = "Forbidden"


class InsufficientScope(Forbidden):
    """The token is valid but lacks a required scope (RFC 6750 `insufficient_scope`)."""

    code = "insufficient_scope"
    title = "Insufficient Scope"

    def __init__(
        self,
        detail: str | None = None,
        *,
        scope: str | None = None,
        headers: dict[str, str] | None = None,
        internal: str | None = None,
    ) -> None:
        merged = dict(headers) if headers else {}
        challenge = 'Bearer error="insufficient_scope"' + (f', scope="{scope}"' if scope else "")
        merged.setdefault("www-authenticate", challenge)
        super().__init__(detail, headers=merged, internal=internal)


class NotFound(ClientError):
    status_code = 404
    code = "no_route"
    title = "Not Found"

    # Set by the route table on a miss under a path a route claims (see `Route.claims_404`): that route's
    # `errors=` render the reply. None: the gateway's.
    route: Route | None = None


class MethodNotAllowed(ClientError):
    status_code = 405
    code = "method_not_allowed"
    title = "Method Not Allowed"

    # Set by the route table when the route that has the path claims its 405s (see `Route.claims_405`).
    route: Route | None = None

    def __init__(self, allow: list[str], detail: str | None = None) -> None:
        self.allow = sorted(set(allow))
        super().__init__(detail, headers={"allow": ", ".join(self.allow)})


class NotAcceptable(ClientError):
    """None of the media types the request's Accept header allows can be produced."""

    status_code = 406
    code = "not_acceptable"
    title = "Not Acceptable"


class PayloadTooLarge(ClientError):
    status_code = 413
    code = "payload_too_large"
    title = "Payload Too Large"


class UnsupportedMediaType(ClientError):
    """The request body's Content-Type is not one the route accepts."""

    status_code = 415
    code = "unsupported_media_type"
    title = "Unsupported Media Type"


class RateLimited(ClientError):
    """Too many requests; `retry_after` (seconds) becomes `Retry-After`, `headers` carry `RateLimit-*`."""

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


class QuotaExceeded(RateLimited):
    """A longer-term allowance (a daily or monthly quota) is used up, as opposed to a short-term rate."""

    code = "quota_exceeded"
    title = "Quota Exceeded"


class RequestTerminated(GatewayError):
    """The gateway refuses matching requests on purpose (maintenance, a retired API version): any 4xx/5xx."""

    status_code = 503
    code = "request_terminated"
    title = "Service Unavailable"

    def __init__(
        self,
        detail: str | None = None,
        *,
        status: int = 503,
        title: str | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        _set_status(self, status, title)
        super().__init__(detail, headers=headers)
        if reason:
            self.reason = reason


class FaultInjected(GatewayError):
    """A request aborted on purpose by fault injection, with the configured status."""

    status_code = 503
    code = "fault_injected"
    title = "Service Unavailable"

    def __init__(self, detail: str | None = None, *, status: int = 503) -> None:
        _set_status(self, status, None)
        super().__init__(detail)


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


class UpstreamResponseTooLarge(BadGateway):
    """A response is larger than the gateway will hold or pass on (a reply to an HTTP/1.0 client must be sent
    whole, with its length: see `Gateway(http10_buffer_limit=...)`)."""

    code = "upstream_response_too_large"


class UpstreamErrorResponse(UpstreamError):
    """The upstream answered with an error that a `Proxy(intercept_errors=...)` rule replaces by the gateway's own
    reply (its body is discarded, never shown). `upstream_status` is what the upstream said; `status_code` is
    what the client gets: the same status, or the one the rule maps it to."""

    code = "upstream_error_response"

    def __init__(
        self,
        detail: str | None = None,
        *,
        upstream_status: int,
        status: int | None = None,
        upstream: str | None = None,
    ) -> None:
        self.upstream_status = upstream_status
        _set_status(self, status or upstream_status, None)
        super().__init__(
            detail, stage="response_status", upstream=upstream, internal=f"upstream answered {upstream_status}"
        )


class GrpcStatusError(UpstreamError):
    """A gRPC backend answered a transcoded call with a non-OK status: the HTTP status is the one google.rpc.Code
    documents for it (NOT_FOUND 404, UNAVAILABLE 503, ...); `details` are the JSON forms of the status details
    (from grpc-status-details-bin); `reason` is `grpc_<code name>` (`grpc_not_found`)."""

    code = "grpc_status"

    def __init__(
        self,
        grpc_code: int,
        grpc_message: str,
        *,
        status: int,
        code_name: str,
        details: list[dict[str, object]] | None = None,
        response_headers: dict[str, str] | None = None,
        upstream: str | None = None,
    ) -> None:
        self.grpc_code = grpc_code
        self.grpc_message = grpc_message
        self.details = list(details or [])
        self.response_headers = dict(response_headers or {})
        _set_status(self, status, None)
        super().__init__(grpc_message or None, stage="grpc_status", upstream=upstream,
                         internal=f"gRPC status {code_name}: {grpc_message}")
        self.reason = f"grpc_{code_name.lower()}"


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


class ClientDisconnected(OSError):
    """The client went away: sending to it failed, or it disconnected while its request was being read.

    Never an HTTP reply (there is no one to send it to): the gateway records `client_disconnected` as the
    request's reason, logs it at DEBUG, and makes no second attempt to answer. An `OSError`, as the ASGI
    specification asks of a server's own send-after-disconnect error.
    """


def _challenged(headers: dict[str, str] | None, challenge: str | None) -> dict[str, str]:
    """`headers` with `challenge` as `WWW-Authenticate`, unless they carry one already."""
    merged = dict(headers) if headers else {}
    if challenge and "www-authenticate" not in {name.lower() for name in merged}:
        merged["www-authenticate"] = challenge
    return merged
