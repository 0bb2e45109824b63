"""Target: what a route ends in. One method to implement: `handle(exchange, receive, send)`."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from .._frozen import Frozen
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..gateway import Gateway
    from ..metrics import Metrics
    from ..routing import Route
    from ..types import Receive, Send
    from ..upstreams import BaseUpstream

__all__ = ["App", "Handler", "Target"]


class Target:
    """Base class of route targets (Proxy, Direct, Redirect, a mounted app, a handler)."""

    def bind(self, route: Route, gateway: Gateway) -> Target | None:
        """Called once per route at build time: check the target against the route, and return what serves it.

        Raise ConfigurationError for a route the target cannot serve. A target may serve many routes, in several
        gateways, so `bind` never changes `self`: values resolved for one route (a template checked against its
        parameters, a default taken from the gateway) go into the object it returns, often ``self._replace(...)``
        for a library target, whose `handle` then serves that route. The default returns `self`, as is. Returning
        None (what a `bind` written for asgigate 0.x does) also means `self`.
        """
        return self

    def upstreams(self) -> list[BaseUpstream]:
        """Upstreams this target uses, so the gateway opens and closes their pools."""
        return []

    def register_metrics(self, metrics: Metrics) -> None:
        """Called once at build when the gateway has `metrics`: register this target's own series there."""

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        raise ConfigurationError(f"{type(self).__name__} does not implement handle()")


class Handler(Frozen, Target):
    """An async function `handler(exchange) -> Response` as a target."""

    def __init__(self, func: Callable[[Exchange], Awaitable[Response]]) -> None:
        self.func = func

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        exchange.give_body(receive)
        response = await self.func(exchange)
        await response(exchange.scope, receive, send)

    def __repr__(self) -> str:
        return f"Handler({getattr(self.func, '__qualname__', self.func)!r})"


class App(Frozen, Target):
    """A plain ASGI app as the target of a single route; it sees the gateway's scope unchanged."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        await self.app(exchange.scope, receive, send)

    def __repr__(self) -> str:
        return f"App({getattr(self.app, '__qualname__', type(self.app).__name__)})"


def as_target(value: Any) -> Target:
    if isinstance(value, Target):
        return value
    if not callable(value):
        raise ConfigurationError(f"Route target {value!r} is neither a Target, an ASGI app nor a handler.")
    func = value if inspect.isfunction(value) or inspect.ismethod(value) else getattr(value, "__call__", value)  # noqa: B004
    try:
        positional = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        positional = []
    if len(positional) == 1:
        return Handler(value)
    return App(value)
