"""Gateway: subclass it once per gateway or BFF; the instance is the ASGI app.

    ASGI server → Gateway.__call__
      └ edge middleware        `middleware()`: plain ASGI, outer → inner; sees every reply, errors included
        └ error boundary       request id, access log, GatewayError / exception → render_error()
          └ route table        `routes()`: first match wins; none → 404 / 405
            └ policy chain     `policies()` + group policies + route policies, request hooks in order
              └ target         Proxy | Direct | Redirect | Mount | an ASGI app | an async handler
      response hooks run in reverse order, for local and error replies too

The gateway is the declaration (the hooks below), the build (`build()` compiles every route's chain and binds
the settings a request needs into a `Lifecycle`), `describe()` and the lifespan. Each request is handed to the
lifecycle (`asgigate.pipeline`), which serves it top to bottom.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from starlette.middleware import Middleware
from starlette.responses import Response

from . import _http10
from ._boundary import ErrorBoundary
from ._default_reply import default_reply
from ._forwarding import TrustedProxies
from ._frozen import twin
from ._request_id import RequestIds
from .accesslog import AccessLog
from .errors import ConfigurationError, GatewayError
from .exchange import Exchange, GatewayContext
from .metrics import Metrics
from .pipeline import Lifecycle, Policy, PolicyLike, chain_for, check_order, compile_chain, format_chain
from .replies import ErrorRendering, ErrorReplies, ErrorsLike, as_replies
from .routing import Group, Route, RouteTable
from .types import ASGIApp, Receive, Scope, Send
from .upstreams import BaseUpstream

__all__ = ["Gateway"]

logger = logging.getLogger("asgigate")


class _RoutesHook:
    """The `routes()` hook as seen on an instance: callable as usual, but an empty sequence to Starlette.

    Starlette's `Mount` treats a mounted app's `routes` attribute as its sub-routes when building URLs
    (`url_for`). A gateway's routes are not Starlette routes, so to Starlette the hook must look empty,
    otherwise `url_for` in a parent app that mounts a gateway would fail.
    """

    __slots__ = ("func", "instance")

    def __init__(self, func: Callable[[Any], Sequence[Route | Group]], instance: Any) -> None:
        self.func = func
        self.instance = instance

    def __call__(self) -> Sequence[Route | Group]:
        return self.func(self.instance)

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __bool__(self) -> bool:
        return False


class _RoutesDescriptor:
    __slots__ = ("func",)

    def __init__(self, func: Callable[[Any], Sequence[Route | Group]]) -> None:
        self.func = func

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self.func
        return _RoutesHook(self.func, instance)


class Gateway:
    """Declare `routes()`, and optionally `policies()` (every matched route) and `middleware()` (edge).

    Keyword options:
    - `request_id`: give every request an id, passed upstream and returned in `request_id_header`.
    - `trust_request_id`: keep a well-formed incoming id; by default only from trusted proxies.
    - `access_log`: one JSON line per request on the "asgigate.access" logger, or into an `AccessLog`
      (buffered, much cheaper per line).
    - `trusted_proxies`: addresses/networks whose X-Forwarded-* / Forwarded headers are believed.
    - `max_body_size`: default request body limit for proxied routes (None: no limit, bodies stream).
    - `http10_buffer_limit`: a reply to an HTTP/1.0 request that has no Content-Length (a stream) is held back
      up to this many bytes and sent with one, since such a client cannot read chunked framing; a larger one
      is a 502 `upstream_response_too_large`.
    - `debug`: error replies for unexpected exceptions include the traceback. Never in production.
    - `errors`: how the gateway's own error replies look, for every route (a `Reply` template, a function
      `(exchange, error) -> Response`, or `ErrorReplies` per error/status); groups and routes refine it.
    - `metrics`: a `Metrics` registry that counts every request (by route, method, status and reason) and
      times it; serve it with ``Route("/metrics", self.metrics.endpoint())``.
    """

    def __init__(
        self,
        *,
        request_id: bool = True,
        request_id_header: str = "x-request-id",
        trust_request_id: bool | None = None,
        access_log: bool | AccessLog = True,
        trusted_proxies: Sequence[str] = (),
        max_body_size: int | None = None,
        http10_buffer_limit: int = _http10.DEFAULT_LIMIT,
        debug: bool = False,
        errors: ErrorsLike | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.request_id = request_id
        self.request_id_header = request_id_header.lower()
        self.trust_request_id = trust_request_id
        self.access_log = bool(access_log)
        # None: lines go through `logging` ("asgigate.access"); an AccessLog: buffered, far cheaper per line.
        self.access_log_sink = access_log if isinstance(access_log, AccessLog) else None
        try:
            self.trusted_proxies = TrustedProxies(trusted_proxies)
        except ValueError as exc:
            raise ConfigurationError(f"trusted_proxies: {exc}") from None
        self.max_body_size = max_body_size
        if http10_buffer_limit < 0:
            raise ConfigurationError(f"http10_buffer_limit must be a number of bytes, got {http10_buffer_limit!r}.")
        self.http10_buffer_limit = http10_buffer_limit
        self.debug = debug
        self.errors = errors
        self.metrics = metrics
        self._context: GatewayContext | None = None
        self._lifecycle: Lifecycle | None = None
        self._entry: ASGIApp | None = None
        self._table: RouteTable | None = None
        self._chains: list[str] = []
        self._upstreams: list[BaseUpstream] = []
        self._policies: list[Policy] = []  # every distinct policy of the chains, in build order: closed at shutdown

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("routes")
        if inspect.isfunction(declared):
            cls.routes = _RoutesDescriptor(declared)  # type: ignore[method-assign,assignment]

    # --- declaration hooks ----------------------------------------------------------------------------------

    def routes(self) -> Sequence[Route | Group]:
        return []

    def policies(self) -> Sequence[PolicyLike]:
        """Policies for every matched route, outer → inner. A route drops one with `skip={Type}`."""
        return []

    def middleware(self) -> Sequence[Middleware]:
        """Edge middleware: plain ASGI around everything, routing and error replies included."""
        return []

    async def startup(self) -> None:
        """Runs at ASGI lifespan startup, after the gateway was built."""

    async def shutdown(self) -> None:
        """Runs at ASGI lifespan shutdown, before upstream pools are closed."""

    async def render_error(self, exchange: Exchange, error: GatewayError) -> Response:
        """The last word on error replies, after the `errors=` settings of the route, its groups and the gateway.

        RFC 9457 problem+json by default, or a readable HTML page for clients that prefer HTML (browsers).
        """
        return await default_reply(exchange, error)

    # --- build ----------------------------------------------------------------------------------------------

    def build(self) -> None:
        """Flatten routes, compile every chain, check ordering rules. Raises ConfigurationError."""
        if self._entry is not None:
            return
        gateway_policies = list(self.policies())
        routes: list[Route] = []
        for item in self.routes():
            if isinstance(item, Group):
                routes.extend(item.flatten())
            elif isinstance(item, Route):
                # the gateway's own copy (as a group's routes are): what the build sets on it (the compiled
                # chain) must not reach another gateway that was given the same Route
                routes.append(twin(item))
            else:
                raise ConfigurationError(f"routes() returned {item!r}, which is neither a Route nor a Group.")
        names: dict[str, Route] = {}
        upstreams: dict[int, BaseUpstream] = {}
        chains = []
        gateway_errors = self._error_levels([("the gateway", self.errors)])
        # An overridden render_error has the last word; otherwise the built-in reply has it.
        fallback = self.render_error if type(self).render_error is not Gateway.render_error else None
        boundary = ErrorBoundary(ErrorRendering(gateway_errors, fallback), debug=self.debug)
        registered: set[int] = set()  # components whose metrics are registered (a policy may serve many routes)
        policies: dict[int, Policy] = {}  # by identity: equal policies are still separate objects to close
        for route in routes:
            if route.name in names and route.name != route.path:
                raise ConfigurationError(f"Two routes are named {route.name!r}.")
            names[route.name] = route
            entries = chain_for(route, gateway_policies)
            check_order(route, entries)
            # the target as bound to this route (the route's own copy when it resolved something for it)
            served = route.target.bind(route, self)
            route.app = compile_chain(entries, route.target if served is None else served, boundary.send_error)
            levels = self._error_levels(
                [(f"route {route.name!r}", route.errors)]
                + [(f"group {group!r} (route {route.name!r})", errors) for group, errors in route.group_errors]
            )
            boundary.routes[route] = ErrorRendering(levels + gateway_errors, fallback)
            chains.append(format_chain(route, entries))
            for chained in entries:
                if isinstance(chained.policy, Policy):
                    policies.setdefault(id(chained.policy), chained.policy)
            if self.metrics is not None:
                for component in [entry.policy for entry in entries] + [route.target]:
                    if id(component) not in registered and hasattr(component, "register_metrics"):
                        registered.add(id(component))
                        component.register_metrics(self.metrics)
            for upstream in route.target.upstreams():
                upstreams[id(upstream)] = upstream
        for value in vars(self).values():
            if isinstance(value, BaseUpstream):
                upstreams[id(value)] = value
        self._table = RouteTable(routes)
        self._chains = chains
        self._upstreams = list(upstreams.values())
        self._policies = list(policies.values())
        context = self.context
        self._lifecycle = Lifecycle(
            self._table,
            context,
            boundary,
            request_ids=RequestIds(context.request_id_header, self.trust_request_id, self.trusted_proxies)
            if self.request_id
            else None,
            access_log=self.access_log,
            log_sink=self.access_log_sink,
            metrics=self.metrics,
            http10_limit=self.http10_buffer_limit,
        )
        entry: ASGIApp = self._lifecycle.handle
        for mw in reversed(list(self.middleware())):
            if not isinstance(mw, Middleware):
                raise ConfigurationError(f"middleware() must return starlette Middleware objects, got {mw!r}.")
            entry = mw.cls(entry, *mw.args, **mw.kwargs)
        self._entry = entry

    @staticmethod
    def _error_levels(settings: Sequence[tuple[str, ErrorsLike | None]]) -> list[ErrorReplies]:
        """The `errors=` settings that are set, closest first, each checked (ConfigurationError names where)."""
        levels = []
        for where, value in settings:
            replies = as_replies(value, where)
            if replies is not None:
                levels.append(replies)
        return levels

    @property
    def context(self) -> GatewayContext:
        """What a request needs to know of this gateway, as plain values (see `Exchange.context`)."""
        if self._context is None:
            header = self.request_id_header.encode("latin-1") if self.request_id else b""
            self._context = GatewayContext(self.trusted_proxies, header, self)
        return self._context

    async def send_error(self, exchange: Exchange, exc: Exception, receive: Receive, send: Send) -> None:
        """Send the error reply for `exc`, as this gateway renders it for the exchange's route (see
        asgigate._boundary): for a target that catches an error of its own but wants the gateway's reply."""
        self.build()
        await self._lifecycle.errors.send_error(exchange, exc, receive, send)  # type: ignore[union-attr]

    def describe(self) -> str:
        """Every route with its policy chain in run order and its target: what runs, in which order."""
        self.build()
        lines = [f"{type(self).__name__}"]
        for mw in self.middleware():
            lines.append(f"  edge: {getattr(mw.cls, '__name__', mw.cls)}")
        lines.append("")
        lines.extend(chain + "\n" for chain in self._chains)
        claims = self._table.describe_claims() if self._table is not None else []
        if claims:
            lines.extend([*claims, ""])
        if self._upstreams:
            lines.append("upstreams: " + ", ".join(u.describe() for u in self._upstreams))
        return "\n".join(lines).rstrip() + "\n"

    @property
    def upstreams(self) -> list[BaseUpstream]:
        self.build()
        return list(self._upstreams)

    # --- lifespan -------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Use as a parent app's lifespan when this gateway is mounted: ``FastAPI(lifespan=gw.lifespan)``."""
        self.build()
        await self._start_upstreams()
        await self.startup()
        try:
            yield
        finally:
            await self.aclose()

    async def _start_upstreams(self) -> None:
        """Lifespan startup, before `startup()`: each upstream's `start()` (connections still open on first use)."""
        for upstream in self._upstreams:
            await upstream.start()

    async def aclose(self) -> None:
        """Lifespan shutdown: `shutdown()`, then every policy's `aclose()` (last built first), then the upstreams."""
        try:
            await self.shutdown()
        finally:
            for policy in reversed(self._policies):
                try:
                    await policy.aclose()
                except Exception:  # one policy failing to let go must not keep the others' resources open
                    logger.exception("%s.aclose() failed at gateway shutdown", type(policy).__name__)
            for upstream in self._upstreams:
                await upstream.aclose()
            if self.access_log_sink is not None:
                self.access_log_sink.flush()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            self.build()
            await self._start_upstreams()
            await self.startup()
        except Exception as exc:
            logger.error("gateway startup failed: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        try:
            await self.aclose()
        except Exception as exc:
            await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.shutdown.complete"})

    # --- requests -------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self._entry is None:
            self.build()
        await self._entry(scope, receive, send)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} gateway>"
