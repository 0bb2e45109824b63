"""A whole ASGI application (Starlette, FastAPI, another Gateway) served under a path prefix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._frozen import Frozen
from .._paths import decode_param, encode
from .base import Target

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..types import Receive, Send

__all__: list[str] = []  # internal: the target of a `Mount`


class MountedApp(Frozen, Target):
    """The mounted app sees `root_path` extended by the prefix, as under Starlette's own Mount."""

    def __init__(self, app: Callable[..., Awaitable[None]], prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        scope: dict[str, Any] = dict(exchange.scope)
        root = scope.get("root_path", "")
        # The app routes on what the gateway matched (normalized), never on the raw request path.
        scope["path"] = root + decode_param(exchange.path)
        scope["raw_path"] = (root + encode(exchange.path)).encode("latin-1")
        scope["root_path"] = root + self.prefix
        scope.pop("path_params", None)
        # A parent Starlette router cannot see through the gateway, so the app is its own top level for
        # url_for: it resolves names with its own router, relative to its own root.
        scope.pop("router", None)
        scope["app_root_path"] = scope["root_path"]
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return f"Mount({self.prefix!r}, {getattr(self.app, '__qualname__', type(self.app).__name__)})"
