"""Policy: one concern at the edge, with a request hook and a response hook.

A policy stops the chain explicitly: `on_request` returns a Response to answer locally, or raises a
GatewayError to refuse. `on_response` sees the response head (status, headers) on the way out, in reverse
order, for upstream, local and error replies alike. A policy that must touch bodies overrides `wrap` instead.

Ordering rules are declared, not numbered: `requires` names policy types that must run earlier on the same
chain, `after` names policy types that must run earlier *if present*. They are checked at build time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.datastructures import MutableHeaders
from starlette.responses import Response

if TYPE_CHECKING:
    from .exchange import Exchange
    from .metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["Policy", "ResponseHead"]


class ResponseHead:
    """The status and headers of a response on its way out; hooks may change both."""

    __slots__ = ("_headers", "message")

    def __init__(self, message: Message) -> None:
        self.message = message
        self._headers: MutableHeaders | None = None

    @property
    def status(self) -> int:
        status: int = self.message["status"]
        return status

    @status.setter
    def status(self, value: int) -> None:
        self.message["status"] = value

    @property
    def headers(self) -> MutableHeaders:
        if self._headers is None:
            raw = self.message.get("headers")
            if not isinstance(raw, list):
                raw = list(raw or [])
                self.message["headers"] = raw
            self._headers = MutableHeaders(raw=raw)
        return self._headers


class Policy:
    """Base class of gateway policies (middleware that knows the matched route)."""

    requires: ClassVar[tuple[type[Policy], ...]] = ()
    after: ClassVar[tuple[type[Policy], ...]] = ()

    async def on_request(self, exchange: Exchange) -> Response | None:
        return None

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        return None

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """Body-level policies override this and return an ASGI app around `app` (the default adds nothing)."""
        return app

    def register_metrics(self, metrics: Metrics) -> None:
        """Called once at build when the gateway has `metrics`: register this policy's own series there."""

    async def aclose(self) -> None:
        """Called once at shutdown, after `Gateway.shutdown()`, before upstreams close: close connections, end tasks."""

    # Build-time introspection, so the pipeline only pays for the hooks a policy really has.
    @classmethod
    def uses_wrap(cls) -> bool:
        return cls.wrap is not Policy.wrap

    @classmethod
    def uses_on_request(cls) -> bool:
        return cls.on_request is not Policy.on_request

    @classmethod
    def uses_on_response(cls) -> bool:
        return cls.on_response is not Policy.on_response

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
