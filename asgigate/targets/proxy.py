"""Proxy: the streaming reverse proxy target.

Request and response bodies stream both ways with bounded memory; flow control on either side propagates to the
other because nothing is read before the previous chunk was handed on. Hop-by-hop headers (RFC 9110 7.6.1, and
every header the Connection header names) are dropped both ways. The path sent upstream is the one the route
table matched (normalized, canonically encoded); the query string is passed through byte for byte.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import httpx

from .._forwarding import FORWARDING, add_forwarding
from .._frozen import Frozen
from .._http1.pool import POOL_DEFAULT, _PoolDefault
from .._paths import PathTemplate, encode
from ..errors import (
    BadRequest,
    ClientDisconnected,
    ConfigurationError,
    InvalidBody,
    MethodNotAllowed,
    PayloadTooLarge,
    UpstreamTimeout,
)
from ..upstreams.base import BaseUpstream, require_kind
from ..upstreams.http import DEFAULT_TIMEOUT, Upstream, as_timeout
from ._locations import LocationRewrite, RewriteLocation, location_rewriter
from .base import Target
from .intercept_errors import InterceptErrors

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..gateway import Gateway
    from ..routing import Route
    from ..types import Receive, Send
    from ..upstreams.http import ResponseStream

__all__ = ["Proxy"]

logger = logging.getLogger("asgigate.proxy")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Like nginx, the upstream's Date and Server give way to the ones the ASGI server in front writes, so a reply
# never carries two of each.
RESPONSE_HIDDEN = HOP_BY_HOP | {b"date", b"server"}
LOCATIONS = frozenset({b"location", b"content-location"})
# One membership test per response header finds both the headers to drop and the ones to rewrite.
_RESPONSE_SPECIAL = RESPONSE_HIDDEN | LOCATIONS
SMALL_BODY = 64 * 1024
# Connection header values that name no other header: nothing to strip beyond the hop-by-hop set.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade", b"te", b"keep-alive, te", b"te, keep-alive"})
_NOT_CONNECT = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"]
_METHODS: dict[str, bytes] = {}  # request bodies up to this size are read whole: one write upstream, and replayable


class _Cancel:
    """Cancels the serving task when the client disconnects or the total timeout expires.

    Created for every proxied request, so it costs one bare allocation until it is armed.
    """

    task: asyncio.Task[object] | None = None
    reason: str | None = None
    handle: asyncio.TimerHandle | None = None
    watcher: asyncio.Task[None] | None = None

    def fire(self, reason: str) -> None:
        if self.reason is None and self.task is not None:
            self.reason = reason
            self.task.cancel()

    def total_timeout(self, seconds: float) -> None:
        self.task = asyncio.current_task()
        self.handle = asyncio.get_running_loop().call_later(seconds, self.fire, "total_timeout")

    def watch_disconnect(self, receive: Receive) -> None:
        self.task = asyncio.current_task()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.fire("client_disconnected")

        self.watcher = asyncio.get_running_loop().create_task(watch())

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        if self.watcher is not None:
            self.watcher.cancel()
            # The cancelled watcher keeps its CancelledError, whose traceback holds the frame that refers to this
            # object: let go of the task, so that no reference cycle outlives the request.
            self.watcher = None


class Proxy(Frozen, Target):
    """Forward the request to an upstream: ``Proxy(users, strip_prefix="/v1")``.

    - `path`: an upstream path template filled from the route's parameters (``"/api/users/{id}"``);
      `strip_prefix` removes a leading prefix instead. Otherwise the matched path is forwarded as is.
    - `preserve_host`: send the client's Host instead of the upstream's.
    - `timeout`: read/write timeouts for this route (float or httpx.Timeout); `total_timeout` bounds the
      whole exchange, response body included. Connect and pool timeouts belong to the upstream.
    - `max_body_size`: larger request bodies get 413 (declared lengths before anything is sent upstream;
      chunked bodies as soon as they cross the limit, the upstream request then being aborted unfinished).
    - `x_forwarded` / `forwarded`: add X-Forwarded-For/Proto/Host and RFC 7239 Forwarded. Incoming copies are
      kept and extended only when the peer is one of the gateway's trusted proxies.
    - `intercept_errors`: an `InterceptErrors` naming the upstream error statuses that the gateway replaces by its
      own error reply (their bodies are discarded); by default every upstream response is relayed as it is.
      `upstream_errors=` is its deprecated old name.
    - `rewrite_location`: `Location` / `Content-Location` URLs on the upstream's own origin are rewritten to the
      client-facing scheme, host and path (True, the default); False leaves them; a mapping of URL prefixes to
      replacements, or a function ``(exchange, value) -> value``, rewrites them your way instead.
    """

    def __init__(
        self,
        upstream: Upstream,
        *,
        path: str | None = None,
        strip_prefix: str | None = None,
        preserve_host: bool = False,
        timeout: float | httpx.Timeout | None = None,
        total_timeout: float | None = None,
        max_body_size: int | None = None,
        x_forwarded: bool = True,
        forwarded: bool = True,
        intercept_errors: InterceptErrors | None = None,
        rewrite_location: RewriteLocation = True,
        upstream_errors: InterceptErrors | None = None,
    ) -> None:
        if not isinstance(upstream, BaseUpstream):
            raise ConfigurationError(f"Proxy needs an Upstream, got {upstream!r}.")
        # Another kind of upstream (gRPC) is refused at build, where bind() can name the route.
        http = upstream if isinstance(upstream, Upstream) else None
        if path is not None and strip_prefix is not None:
            raise ConfigurationError("Proxy takes either path= or strip_prefix=, not both.")
        self.upstream = upstream
        self.path = path
        self.strip_prefix = strip_prefix.rstrip("/") if strip_prefix else None
        self.preserve_host = preserve_host
        self.timeout = as_timeout(timeout) if timeout is not None else http.timeout if http else DEFAULT_TIMEOUT
        # A route's own timeout may shorten connecting too; otherwise the upstream's pool setting applies.
        self._connect_timeout: float | _PoolDefault | None = (
            self.timeout.connect if timeout is not None else POOL_DEFAULT
        )
        self.total_timeout = total_timeout if total_timeout is not None else http.total_timeout if http else None
        self.max_body_size = max_body_size
        self.x_forwarded = x_forwarded
        self.forwarded = forwarded
        if upstream_errors is not None:
            if intercept_errors is not None:
                raise ConfigurationError(
                    "Proxy takes intercept_errors= or its deprecated old name upstream_errors=, not both."
                )
            warnings.warn("Proxy(upstream_errors=) is deprecated: use intercept_errors=", DeprecationWarning,
                          stacklevel=2)
            intercept_errors = upstream_errors
        if intercept_errors is not None and not isinstance(intercept_errors, InterceptErrors):
            raise ConfigurationError(f"Proxy intercept_errors= takes an InterceptErrors, got {intercept_errors!r}.")
        self.intercept_errors = intercept_errors
        if not (isinstance(rewrite_location, (bool, Mapping)) or callable(rewrite_location)):
            raise ConfigurationError(
                "Proxy rewrite_location= takes True, False, a mapping of URL prefixes or a function, "
                f"got {rewrite_location!r}."
            )
        self.rewrite_location = rewrite_location
        self._rewrite: LocationRewrite | None = None
        self._template: PathTemplate | None = None
        self._host = upstream.authority.encode("latin-1")

    def bind(self, route: Route, gateway: Gateway) -> Proxy:
        """The proxy that serves `route`: a copy holding what was resolved for it (this one stays as it is)."""
        require_kind(self.upstream, Upstream, "Proxy", route, hint=" A gRPC upstream goes with GrpcService.")
        if route.methods is not None and "CONNECT" in route.methods:
            raise ConfigurationError(f"Proxy cannot tunnel CONNECT requests (route {route.path!r}).")
        template: PathTemplate | None = None
        if self.path is not None:
            template = PathTemplate(self.path)
            missing = set(template.names) - set(route.template.names)
            if missing:
                raise ConfigurationError(
                    f"Proxy path {self.path!r} uses {sorted(missing)}, which route {route.path!r} does not capture."
                )
        if self.strip_prefix and not (
            route.path == self.strip_prefix or route.path.startswith(self.strip_prefix + "/")
        ):
            raise ConfigurationError(
                f"Proxy strip_prefix={self.strip_prefix!r} is not a prefix of route path {route.path!r}."
            )
        rewrite = location_rewriter(
            self.rewrite_location,
            upstream=self.upstream,
            route=route,
            strip_prefix=self.strip_prefix,
            template=template,
            preserve_host=self.preserve_host,
        )
        # The request path reads these as plain attributes, as it reads every other setting: no extra work per
        # request for a limit that defaults to the gateway's or a rewriter made for this route.
        return self._replace(
            max_body_size=self.max_body_size if self.max_body_size is not None else gateway.max_body_size,
            _template=template,
            _rewrite=rewrite,
        )

    def upstreams(self) -> list[BaseUpstream]:
        return [self.upstream]

    def upstream_target(self, exchange: Exchange) -> bytes:
        if self._template is not None:
            path = self._template.expand(exchange.raw_params)
        else:
            path = exchange.path
            if self.strip_prefix:
                path = path[len(self.strip_prefix) :] or "/"
        target = self.upstream.base_path + encode(path)
        query: bytes = exchange.scope.get("query_string", b"")
        return target.encode("latin-1") + b"?" + query if query else target.encode("latin-1")

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        if exchange.scope["type"] == "websocket":
            from .websocket import proxy_websocket

            await proxy_websocket(self, exchange, receive, send)
            return
        canceller = _Cancel()
        if self.total_timeout is not None:
            canceller.total_timeout(self.total_timeout)
        try:
            await self._forward(exchange, receive, send, canceller)
        except asyncio.CancelledError:
            if canceller.reason is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if canceller.reason == "total_timeout":
                raise UpstreamTimeout(stage="total", upstream=self.upstream.name) from None
            exchange.reason = "client_disconnected"
        finally:
            canceller.close()

    async def _forward(self, exchange: Exchange, receive: Receive, send: Send, canceller: _Cancel) -> None:
        scope = exchange.scope
        method = scope["method"]
        if method == "CONNECT":
            # A reverse proxy has no tunnel to offer; a 2xx would make the server hand the connection over as one.
            raise MethodNotAllowed(_NOT_CONNECT if exchange.route is None or exchange.route.methods is None
                                   else sorted(exchange.route.methods))
        headers, content_length, chunked = self.request_headers(exchange)
        body: bytes | AsyncIterator[bytes] | None = None
        limit = self.max_body_size
        if content_length is not None:
            if limit is not None and content_length > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
            if content_length <= SMALL_BODY:
                body = await _read_small(receive, content_length) if content_length else None
                exchange.bytes_received = content_length
            else:
                body = _stream_body(exchange, receive, limit)
        elif chunked:
            body = _stream_body(exchange, receive, limit)
        exchange.upstream = self.upstream.name
        pool = self.upstream.pool
        method_bytes = _METHODS.get(method)
        if method_bytes is None:
            method_bytes = method.encode("latin-1")
            if len(_METHODS) < 64 and len(method) <= 32:  # a few known methods, never what a client makes up
                _METHODS[method] = method_bytes
        response: ResponseStream = await pool.request(
            method_bytes,
            self.upstream_target(exchange),
            headers,
            body,
            content_length=content_length if body is not None and not isinstance(body, bytes) else None,
            read_timeout=self.timeout.read,
            write_timeout=self.timeout.write,
            connect_timeout=self._connect_timeout,
        )
        try:
            exchange.upstream_ms = exchange.elapsed_ms()
            if self.intercept_errors is not None:
                await self.intercept_errors.check(response, self.upstream.name)  # raises to replace the reply
            start = {"type": "http.response.start", "status": response.status,
                     "headers": _response_headers(response.headers, exchange, self._rewrite)}
            if response.complete:
                # The whole response is here already (most small replies): one body message, no streaming.
                body = await response.receive()
                await send(start)
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send(start)
            chunk = await response.receive()
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                chunk = await response.receive()
                if chunk:
                    # A streaming response: watch for the client going away so the upstream is not read for nothing.
                    canceller.watch_disconnect(receive)
                    while chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        chunk = await response.receive()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    def request_headers(self, exchange: Exchange) -> tuple[list[tuple[bytes, bytes]], int | None, bool]:
        scope = exchange.scope
        context = exchange.context
        trusted = context.trusted_proxies.trusts_peer(scope)  # else incoming forwarding headers are dropped
        out: list[tuple[bytes, bytes]] = []
        content_length: int | None = None
        chunked = False
        host: bytes | None = None
        connection: bytes | None = None
        prior: dict[bytes, bytes] = {}
        request_id_header = context.request_id_header
        for name, value in scope["headers"]:
            if name in HOP_BY_HOP:
                if name == b"connection":
                    connection = value if connection is None else connection + b"," + value
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                continue
            if name == b"host":
                if host is not None:  # RFC 9112 3.2: which one the upstream would take is anyone's guess
                    raise BadRequest("The request has more than one Host header.")
                host = value
            elif name == b"content-length":
                # (more than 18 digits is more than any body, and int() refuses thousands of them)
                if content_length is not None or not value.isdigit() or len(value) > 18:
                    raise BadRequest("The Content-Length header is invalid.")
                content_length = int(value)
            elif name in FORWARDING:
                if trusted:
                    prior[name] = prior[name] + b", " + value if name in prior else value
            elif name == request_id_header or name == b"expect":
                pass
            else:
                out.append((name, value))
        if connection is not None and connection.lower() not in _PLAIN_CONNECTION:
            named = {token.strip().lower() for token in connection.split(b",")}
            out = [(n, v) for n, v in out if n not in named]
        if chunked:
            content_length = None
        if host is None:
            host = b""
        out.insert(0, (b"host", host if self.preserve_host and host else self._host))
        if exchange.request_id and request_id_header:
            out.append((request_id_header, exchange.request_id.encode("latin-1")))
        if self.x_forwarded or self.forwarded:
            add_forwarding(out, scope, prior, host, self.x_forwarded, self.forwarded)
        return out, content_length, chunked

    def __repr__(self) -> str:
        extra = ""
        if self.path:
            extra = f", path={self.path!r}"
        elif self.strip_prefix:
            extra = f", strip_prefix={self.strip_prefix!r}"
        if self.rewrite_location is not True:
            extra += f", rewrite_location={self.rewrite_location!r}"
        return f"Proxy({self.upstream.name}{extra})"


def _response_headers(
    headers: list[tuple[bytes, bytes]], exchange: Exchange, rewrite: LocationRewrite | None
) -> list[tuple[bytes, bytes]]:
    connection: bytes | None = None
    out = []
    for name, value in headers:
        if name in _RESPONSE_SPECIAL:
            if name in RESPONSE_HIDDEN:
                if name == b"connection":
                    connection = value
                continue
            if rewrite is not None:
                value = rewrite(exchange, value)
        out.append((name, value))
    if connection is not None and connection.lower() not in _PLAIN_CONNECTION:
        named = {token.strip().lower() for token in connection.split(b",")}
        out = [(n, v) for n, v in out if n not in named]
    return out


async def _read_small(receive: Receive, expected: int) -> bytes:
    parts = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        if chunk:
            parts.append(chunk)
            received += len(chunk)
        if not message.get("more_body", False):
            break
    if received != expected:
        raise InvalidBody("The request body does not match its Content-Length.")
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _stream_body(exchange: Exchange, receive: Receive, limit: int | None) -> AsyncIterator[bytes]:
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if limit is not None and total > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
            exchange.bytes_received = total
            yield chunk
        if not message.get("more_body", False):
            return

