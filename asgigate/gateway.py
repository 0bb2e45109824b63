"""Gateway: subclass it once per gateway or BFF; the instance is the ASGI app.

    ASGI server → Gateway.__call__
      └ edge middleware        `middleware()`: plain ASGI, outer → inner; sees every reply, errors included
        └ error boundary       request id, access log, GatewayError / exception → render_error()
          └ route table        `routes()`: first match wins; none → 404 / 405
            └ policy chain     `policies()` + group policies + route policies, request hooks in order
              └ target         Proxy | Direct | Redirect | Mount | an ASGI app | an async handler
      response hooks run in reverse order, for local and error replies too
"""

from __future__ import annotations

import contextlib
import inspect
import ipaddress
import logging
import os
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import orjson
from starlette.middleware import Middleware
from starlette.responses import Response

from . import _http10
from ._default_reply import default_reply
from ._frozen import twin
from ._http10 import HTTP10
from ._paths import encode, normalize
from .accesslog import AccessLog
from .errors import (
    ClientDisconnected,
    ClientError,
    ConfigurationError,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    UpstreamError,
)
from .exchange import SCOPE_KEY, Exchange, is_trusted
from .metrics import Metrics
from .pipeline import HookStage, Policy, PolicyLike, ResponseHead, chain_for, check_order, compile_chain, format_chain
from .replies import ErrorRendering, ErrorReplies, ErrorsLike, as_replies
from .routing import Group, Route, RouteTable
from .types import ASGIApp, Message, Receive, Scope, Send
from .upstreams import BaseUpstream

__all__ = ["Gateway"]

logger = logging.getLogger("asgigate")
access_logger = logging.getLogger("asgigate.access")

_ID_BATCH = 256
_fresh_ids: list[bytes] = []  # request ids made ahead: one getrandom() call per 256 requests, not one each
os.register_at_fork(after_in_child=_fresh_ids.clear)  # a forked worker must not hand out its parent's ids


def new_request_id() -> bytes:
    """24 hex digits (96 bits) from the operating system's CSPRNG."""
    if not _fresh_ids:
        block = os.urandom(12 * _ID_BATCH).hex().encode()
        _fresh_ids.extend([block[i : i + 24] for i in range(0, len(block), 24)])
    return _fresh_ids.pop()


def client_gone(exc: BaseException) -> bool:
    """Whether an exception raised by the server's `send` means the connection is over, not a misused send.

    The ASGI specification asks servers for an `OSError`. uvicorn raises what its transport or parser does when
    it has ended the connection itself, for instance by answering a malformed request pipelined behind this one
    with a 400 while this response was still being produced: under uvloop a RuntimeError for the closed
    transport, with h11 h11's LocalProtocolError for a connection past its last response.
    """
    if isinstance(exc, OSError):
        return True
    text = str(exc)
    if isinstance(exc, RuntimeError):
        return "handler is closed" in text  # uvloop
    return type(exc).__name__ == "LocalProtocolError" and (  # h11
        "state=MUST_CLOSE" in text or "state=CLOSED" in text or "state=ERROR" in text
    )


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


_VALID_ID = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/+=@")


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
        self.request_id_header_bytes = self.request_id_header.encode("latin-1") if request_id else b""
        self.trust_request_id = trust_request_id
        self.access_log = bool(access_log)
        # None: lines go through `logging` ("asgigate.access"); an AccessLog: buffered, far cheaper per line.
        self.access_log_sink = access_log if isinstance(access_log, AccessLog) else None
        try:
            self.trusted_networks = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        except ValueError as exc:
            raise ConfigurationError(f"trusted_proxies: {exc}") from None
        self.max_body_size = max_body_size
        if http10_buffer_limit < 0:
            raise ConfigurationError(f"http10_buffer_limit must be a number of bytes, got {http10_buffer_limit!r}.")
        self.http10_buffer_limit = http10_buffer_limit
        self.debug = debug
        self.errors = errors
        self.metrics = metrics
        self._error_rendering: ErrorRendering | None = None  # before a route matched
        self._route_errors: dict[Route, ErrorRendering] = {}  # per route, resolved at build
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
        route_errors: dict[Route, ErrorRendering] = {}
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
            route.app = compile_chain(entries, route.target if served is None else served)
            levels = self._error_levels(
                [(f"route {route.name!r}", route.errors)]
                + [(f"group {group!r} (route {route.name!r})", errors) for group, errors in route.group_errors]
            )
            route_errors[route] = ErrorRendering(levels + gateway_errors, fallback)
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
        self._error_rendering = ErrorRendering(gateway_errors, fallback)
        self._route_errors = route_errors
        self._chains = chains
        self._upstreams = list(upstreams.values())
        self._policies = list(policies.values())
        entry: ASGIApp = self._handle
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

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, self)  # type: ignore[arg-type]
        scope[SCOPE_KEY] = exchange
        request_id = b""
        if self.request_id:
            request_id = self._request_id(scope)
            exchange.request_id = request_id.decode("latin-1")
        header = self.request_id_header_bytes
        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight.inc()

        async def edge_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                hooks = exchange.response_hooks
                if hooks:
                    head = ResponseHead(message)
                    for hook in hooks:
                        await hook(exchange, head)
                if request_id:
                    headers = list(message.get("headers", ()))
                    for name, _ in headers:
                        if name == header:
                            # Exactly one id goes back: the gateway's (an upstream may echo the one it was sent).
                            headers = [item for item in headers if item[0] != header]
                            break
                    headers.append((header, request_id))
                    message["headers"] = headers
            try:
                await send(message)
            except Exception as exc:
                if not client_gone(exc):
                    raise
                raise ClientDisconnected(f"sending to the client failed: {exc}") from None
            # Counted only once the server took the message: a response whose start could not be sent has not
            # started, and a send that failed sent nothing.
            if kind == "http.response.body":
                exchange.bytes_sent += len(message.get("body", b""))
            elif kind == "http.response.start":
                exchange.status = message["status"]
            elif kind == "websocket.close" and not exchange.status:
                exchange.status = 403

        reply_send: Send = edge_send
        if scope.get("http_version") in HTTP10:
            # no chunked framing for this client: every reply with a body needs a Content-Length (see _http10)
            reply_send = _http10.length_framed(edge_send, scope, self.http10_buffer_limit)
        try:
            raw_path = scope.get("raw_path")
            if raw_path is not None and not scope.get("root_path"):
                exchange.path = normalize(raw_path)
            else:
                exchange.path = self._route_path(scope)
            route = self._table.match(exchange)  # type: ignore[union-attr]
            stage = route.app
            if stage.__class__ is HookStage:
                # the chain's outermost hook policies, run here rather than in a coroutine of their own; an error
                # raised by a hook is rendered below, through the response hooks of the policies before it
                for i, hook in stage.request_hooks:
                    exchange.response_hooks = stage.response_hooks[i]
                    reply = await hook(exchange)
                    if reply is not None:
                        if exchange.reason is None:
                            exchange.reason = "local_reply"
                        await reply(scope, receive, reply_send)
                        return
                exchange.response_hooks = stage.response_hooks[-1]
                await stage.inner(exchange, receive, reply_send)
            else:
                await stage(exchange, receive, reply_send)
        except ClientDisconnected as exc:
            self._disconnected(exchange, exc)
        except Exception as exc:
            if exchange.response_started:
                self._log_error(exchange, exc)
                raise  # the response is under way: abort the connection rather than truncate silently
            try:
                await self.send_error(exchange, exc, receive, reply_send)
            except ClientDisconnected as gone:  # the error reply found the client gone
                self._disconnected(exchange, gone)
        finally:
            if self.access_log:
                self._log_access(exchange)
            if metrics is not None:
                metrics.finished(exchange)
            # The scope and the exchange refer to each other: part them, so that a finished request is freed by
            # reference counting alone, not left (with its headers and body parts) for a full garbage collection.
            del scope[SCOPE_KEY]
            if exchange.error is not None:
                forget_frames(exchange.error)

    def _route_path(self, scope: Scope) -> str:
        raw = scope.get("raw_path")
        root = scope.get("root_path", "")
        if raw is None:
            raw = encode(scope["path"]).encode("latin-1")
        if root:
            root_bytes = root.encode("latin-1")
            if raw.startswith(root_bytes):
                raw = raw[len(root_bytes) :] or b"/"
            else:
                path = scope["path"]
                raw = encode(path[len(root) :] if path.startswith(root) else path).encode("latin-1") or b"/"
        return normalize(raw)

    def _request_id(self, scope: Scope) -> bytes:
        trust = self.trust_request_id
        if trust is None:
            client = scope.get("client")
            trust = bool(self.trusted_networks) and is_trusted(client[0] if client else None, self.trusted_networks)
        if trust:
            header = self.request_id_header_bytes
            for name, value in scope["headers"]:
                if name == header:
                    if 0 < len(value) <= 128 and _VALID_ID.issuperset(value):
                        return bytes(value)
                    break
        return new_request_id()

    def client_address(self, scope: Scope) -> str | None:
        """The client's address for a request: see `Exchange.client_ip`."""
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if not self.trusted_networks or not is_trusted(peer, self.trusted_networks):
            return peer
        hops: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                hops.extend(h.strip() for h in value.decode("latin-1").split(","))
        for hop in reversed(hops):
            if not is_trusted(hop, self.trusted_networks):
                return hop
        return hops[0] if hops else peer

    async def send_error(self, exchange: Exchange, exc: Exception, receive: Receive, send: Send) -> None:
        """Turn any exception into the gateway's error reply, rendered by the route's resolved `errors=` settings
        (route, groups, gateway) and finally `render_error` (see asgigate.replies).

        A `ClientDisconnected` gets no reply: it is raised again, for the gateway to record."""
        if isinstance(exc, ClientDisconnected):
            raise exc
        if isinstance(exc, GatewayError):
            error = exc
            if isinstance(exc, UpstreamError) or exc.internal:
                self._log_error(exchange, exc)
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
        rendering = self._route_errors.get(route) if route is not None else None
        if rendering is None:
            rendering = self._error_rendering or ErrorRendering([], self.render_error)  # not built (yet)
        response = await rendering.render(exchange, error)
        await response(exchange.scope, receive, send)

    @staticmethod
    def _disconnected(exchange: Exchange, exc: ClientDisconnected) -> None:
        # Nothing is left to answer: no error reply, and no traceback (a client hanging up is routine).
        exchange.reason = "client_disconnected"
        logger.debug("client disconnected [request_id=%s]: %s", exchange.request_id, exc)

    def _log_error(self, exchange: Exchange, exc: Exception) -> None:
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

    def _log_access(self, exchange: Exchange) -> None:
        sink = self.access_log_sink
        if sink is None and not access_logger.isEnabledFor(logging.INFO):
            return
        scope = exchange.scope
        record: dict[str, Any] = {
            "ts": time.time(),
            "request_id": exchange.request_id,
            "client": exchange.client_ip,
            "method": scope.get("method", "WS"),
            "path": scope.get("path"),
            "route": exchange.route.name if exchange.route else None,
            "status": exchange.status,
            "bytes_in": exchange.bytes_received,
            "bytes_out": exchange.bytes_sent,
            "duration_ms": int(exchange.elapsed_ms() * 1000.0) / 1000.0,  # whole µs; cheaper than round(x, 3)
            "upstream": exchange.upstream,
            "upstream_ms": int(exchange.upstream_ms * 1000.0) / 1000.0 if exchange.upstream_ms is not None else None,
        }
        if exchange.reason:
            record["reason"] = exchange.reason
        if sink is not None:
            sink.write(orjson.dumps(record))
        else:
            access_logger.info(orjson.dumps(record).decode())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} gateway>"
