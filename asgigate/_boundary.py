"""The error boundary: how an exception becomes the gateway's error reply, and what is logged about it.

Every error reply goes through `ErrorBoundary.send_error`: the lifecycle's (`asgigate.pipeline.Lifecycle`), the
hook runner's for a refusing policy (`HookStage`) and the one inside each ASGI layer of a chain. The reply is
rendered by the `errors=` settings of the matched route, its groups and the gateway, resolved at build
(`asgigate.replies.ErrorRendering`), and finally `Gateway.render_error`.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING

from .errors import ClientDisconnected, ClientError, GatewayError, MethodNotAllowed, NotFound, UpstreamError

if TYPE_CHECKING:
    from .exchange import Exchange
    from .replies import ErrorRendering
    from .routing import Route
    from .types import Receive, Send

__all__ = ["ErrorBoundary", "forget_frames"]

logger = logging.getLogger("asgigate")


class ErrorBoundary:
    """A built gateway's error replies: `default` before a route matched, `routes` per route (filled at build)."""

    __slots__ = ("debug", "default", "routes")

    def __init__(self, default: ErrorRendering, *, debug: bool = False) -> None:
        self.default = default
        self.routes: dict[Route, ErrorRendering] = {}
        self.debug = debug

    async def send_error(self, exchange: Exchange, exc: Exception, receive: Receive, send: Send) -> None:
        """Send the error reply for `exc`: a GatewayError keeps its status and code, any other exception is logged
        with its traceback and answered 500 `internal_error` (with the traceback in the reply under `debug`).

        A `ClientDisconnected` gets no reply: it is raised again, for the lifecycle to record."""
        if isinstance(exc, ClientDisconnected):
            try:
                raise exc
            finally:
                del exc  # else this frame, kept by the traceback, would keep the exception: a reference cycle
        if isinstance(exc, GatewayError):
            error = exc
            if isinstance(exc, UpstreamError) or exc.internal:
                self.log_error(exchange, exc)
        else:
            logger.error(
                "unhandled exception [request_id=%s route=%s]",
                exchange.request_id,
                exchange.route.name if exchange.route else None,
                exc_info=exc,
            )
            detail = "".join(traceback.format_exception(exc)) if self.debug else None
            error = GatewayError(detail)
        exchange.error = error
        exchange.reason = getattr(error, "reason", None) or error.code
        if exchange.scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008 if error.status_code < 500 else 1011})
            return
        # a route table miss that a route claims (see Route.claims_404) is rendered as that route renders errors
        route = exchange.route
        if route is None and isinstance(error, (NotFound, MethodNotAllowed)):
            route = error.route
        rendering = self.routes.get(route, self.default) if route is not None else self.default
        response = await rendering.render(exchange, error)
        await response(exchange.scope, receive, send)

    @staticmethod
    def log_error(exchange: Exchange, exc: Exception) -> None:
        """Log an error the client is told about (or, once the response started, cannot be told about)."""
        if isinstance(exc, GatewayError):
            # What a client got wrong is routine, and any client could fill the log with it: INFO at most.
            logger.log(
                logging.INFO if isinstance(exc, ClientError) else logging.WARNING,
                "%s [request_id=%s route=%s upstream=%s stage=%s] %s",
                exc.code,
                exchange.request_id,
                exchange.route.name if exchange.route else None,
                getattr(exc, "upstream", None),
                getattr(exc, "stage", None),
                exc.internal or exc.detail or "",
            )
        else:
            logger.error("error after the response started [request_id=%s]", exchange.request_id, exc_info=exc)

    @staticmethod
    def disconnected(exchange: Exchange, exc: ClientDisconnected) -> None:
        """Record a client that went away: no error reply, and no traceback (a client hanging up is routine)."""
        exchange.reason = "client_disconnected"
        logger.debug("client disconnected [request_id=%s]: %s", exchange.request_id, exc)


def forget_frames(error: BaseException) -> None:
    """Drop the tracebacks of a finished request's error and of the exceptions chained to it.

    A traceback holds the frames it passed through, and they hold the exchange that holds the error: a
    reference cycle that only a full garbage collection would free, with the request's scope and headers.
    The traceback was logged already, if it was worth logging.
    """
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 32:
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
        seen += 1
