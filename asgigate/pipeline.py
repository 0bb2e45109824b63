"""The request lifecycle, top to bottom, and the one hook runner.

    Gateway.__call__ → edge middleware → Lifecycle.handle         one request, from the ASGI call to the log line
      exchange = Exchange(scope, context)                         the per-request context (asgigate.exchange)
      reply = ReplySend(send, ...)                                request id (asgigate._request_id) on the reply;
                                                                  status, bytes; HTTP/1.0 framing (asgigate._http10)
      try:
        exchange.path = request_path(scope)                       normalized (asgigate._paths), or 400
        route = table.match(exchange)                             first match wins, or 404 / 405 (asgigate.routing)
        await route.app(exchange, receive, reply)                 the route's chain, compiled at build:
          HookStage: the hook runner                                request hooks in order, then the inner stage
            └ ASGI layer (Middleware, Policy.wrap)                  with the response hooks carried by its send
              └ HookStage → ... → target                            (reversed, run on the response start)
      except → ErrorBoundary.send_error                           exception → error reply (asgigate._boundary)
      finally: access log line, metrics, exchange parted from the scope   (asgigate.accesslog, asgigate.metrics)

A `Policy` is one concern at the edge, with a request hook and a response hook. It stops the chain explicitly:
`on_request` returns a Response to answer locally, or raises a GatewayError to refuse. `on_response` sees the
response head (status, headers) on the way out, in reverse order, for upstream, local and error replies alike. A
policy that must touch bodies overrides `wrap` instead. Ordering rules are declared, not numbered: `requires`
names policy types that must run earlier on the same chain, `after` names policy types that must run earlier *if
present*. They are checked at build time (`check_order`).

A route's chain:

    gateway-wide policies (minus the route's `skip`) → group policies → route policies → target

Consecutive hook policies share one `HookStage`, the one hook runner: the chain's outermost policies and those
between ASGI layers alike. Its response hooks travel with the reply, in the `send` it hands on, never on the
exchange: the outermost stage hands them to the lifecycle's `ReplySend` (so they run after an HTTP/1.0 reply's
framing, on the reply the client gets, with no send wrapper of their own), an inner one wraps its `send` in a
`HookedSend`. A hook that raises or returns a reply stops the chain there: only the response hooks of the
policies before it run. A policy that overrides `wrap` or a Starlette `Middleware` becomes an ASGI layer of its own
at its place in the list; an error raised inside one is rendered inside it, so that layer sees the error reply like
any other reply.

Nothing here knows a feature: request ids, forwarding, the access log, metrics and error replies are values the
gateway binds at build (`Lifecycle(...)`), and policies and targets plug in through the chain.

No inlined fast path: the chain's outermost hook stage runs in a coroutine of its own like every other. Measured
with ``bash benchmarks/run.sh --instructions`` (callgrind, instructions per request) against the gateway whose
`_handle` ran the outermost hooks itself (main at b86d94b): plain proxy 239,577 → 239,142, request ids and access
log 272,232 → 271,799, memory rate limit 291,702 → 296,472 (+1.6 %). Of the rate limit's 4,800, about half is that
coroutine (a copy of the runner inlined in `Lifecycle.handle` measured 2,650 less in process) and about half its
pending headers kept in `exchange.state` rather than in a field of the exchange (2,600 in process).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.responses import Response

from ._boundary import forget_frames
from ._http10 import HTTP10, length_framed
from ._paths import request_path
from .accesslog import log_access
from .errors import ClientDisconnected, ConfigurationError, GatewayError
from .exchange import SCOPE_KEY, Exchange, GatewayContext
from .types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from ._boundary import ErrorBoundary
    from ._request_id import RequestIds
    from .accesslog import AccessLog
    from .metrics import Metrics
    from .routing import Route, RouteTable
    from .targets.base import Target

__all__ = ["Policy", "ResponseHead"]

Stage = Callable[[Exchange, Receive, Send], Awaitable[None]]
ResponseHook = Callable[[Exchange, "ResponseHead"], Awaitable[None]]
SendError = Callable[[Exchange, Exception, Receive, Send], Awaitable[None]]


# --- the lifecycle ------------------------------------------------------------------------------------------------


class Lifecycle:
    """How a built gateway serves one request, from the ASGI call to the access log line.

    Made by `Gateway.build` from plain values: the route table, the `GatewayContext` every exchange gets, the
    request id settings (None: no ids), the error boundary, the access log (None: off; a sink or the logger),
    the metrics registry and the HTTP/1.0 buffer limit.
    """

    __slots__ = ("access_log", "context", "errors", "http10_limit", "log_sink", "metrics", "request_ids", "table")

    def __init__(
        self,
        table: RouteTable,
        context: GatewayContext,
        errors: ErrorBoundary,
        *,
        request_ids: RequestIds | None,
        access_log: bool,
        log_sink: AccessLog | None,
        metrics: Metrics | None,
        http10_limit: int,
    ) -> None:
        self.table = table
        self.context = context
        self.errors = errors
        self.request_ids = request_ids
        self.access_log = access_log
        self.log_sink = log_sink
        self.metrics = metrics
        self.http10_limit = http10_limit

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, self.context)  # type: ignore[arg-type]  # an ASGI scope is a dict
        scope[SCOPE_KEY] = exchange
        if scope.get("http_version") in HTTP10:
            # no chunked framing for this client: every reply with a body needs a Content-Length (see _http10)
            reply: ReplySend = LengthFramedReply(send, exchange, self.request_ids, self.http10_limit)
        else:
            reply = ReplySend(send, exchange, self.request_ids)
        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            exchange.path = request_path(scope)
            route = self.table.match(exchange)
            await route.app(exchange, receive, reply)
        except ClientDisconnected as exc:
            self.errors.disconnected(exchange, exc)
        except Exception as exc:
            if exchange.response_started:
                self.errors.log_error(exchange, exc)
                raise  # the response is under way: abort the connection rather than truncate silently
            try:
                await self.errors.send_error(exchange, exc, receive, reply)
            except ClientDisconnected as gone:  # the error reply found the client gone
                self.errors.disconnected(exchange, gone)
        finally:
            if self.access_log:
                log_access(exchange, self.log_sink)
            if metrics is not None:
                metrics.finished(exchange)
            # The scope and the exchange refer to each other: part them, so that a finished request is freed by
            # reference counting alone, not left (with its headers and body parts) for a full garbage collection.
            del scope[SCOPE_KEY]
            if exchange.error is not None:
                forget_frames(exchange.error)


class ReplySend:
    """The `send` a request's chain is handed, around the server's.

    On the response start it runs the response hooks it carries (those of the chain's outermost hook policies,
    handed to it by their `HookStage`) and puts the request id on it; it counts the status and the bytes once the
    server took them, and turns a server's failure to send into `ClientDisconnected`. It also gives the exchange
    its request id.
    """

    __slots__ = ("exchange", "hooks", "request_id", "request_ids", "send")

    def __init__(self, send: Send, exchange: Exchange, request_ids: RequestIds | None) -> None:
        self.send = send
        self.exchange = exchange
        self.hooks: Sequence[ResponseHook] = ()
        self.request_ids = request_ids
        self.request_id = b""
        if request_ids is not None:
            self.request_id = request_id = request_ids.for_request(exchange.scope)
            exchange.request_id = request_id.decode("latin-1")

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.hooks:
                head = ResponseHead(message)
                for hook in self.hooks:
                    await hook(self.exchange, head)
            if self.request_id:
                self.request_ids.stamp(message, self.request_id)  # type: ignore[union-attr]
        try:
            await self.send(message)
        except Exception as exc:
            if not client_gone(exc):
                raise
            raise ClientDisconnected(f"sending to the client failed: {exc}") from None
        # Counted only once the server took the message: a response whose start could not be sent has not
        # started, and a send that failed sent nothing.
        exchange = self.exchange
        if kind == "http.response.body":
            exchange.bytes_sent += len(message.get("body", b""))
        elif kind == "http.response.start":
            exchange.status = message["status"]
        elif kind == "websocket.close" and not exchange.status:
            exchange.status = 403


class LengthFramedReply(ReplySend):
    """The `ReplySend` of an HTTP/1.0 request: the reply is length-framed (see asgigate._http10) before the hooks
    and the server see it, so a reply held back and then given up on never reaches them."""

    __slots__ = ("framed",)

    def __init__(self, send: Send, exchange: Exchange, request_ids: RequestIds | None, limit: int) -> None:
        super().__init__(send, exchange, request_ids)
        self.framed = length_framed(super().__call__, exchange.scope, limit)

    async def __call__(self, message: Message) -> None:
        await self.framed(message)


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


# --- the hook runner ----------------------------------------------------------------------------------------------


class HookStage:
    """The one hook runner: a run of consecutive hook policies, around the inner stage.

    Called, it runs the request hooks in order, then the inner stage with a `send` carrying the response hooks of
    the policies whose request phase ran, in reverse (`_send`): they see the response start, and an ASGI layer
    around this stage sees the response as the hooks leave it. A hook that returns a reply, or raises, stops the
    chain there; the reply or the error reply goes out through the response hooks of the policies before it. An
    error from the inner stage is rendered here too, through every response hook, unless the response has started
    (then it is raised on, to abort the connection).
    """

    __slots__ = ("inner", "policies", "request_hooks", "response_hooks", "send_error")

    def __init__(self, policies: list[Policy], inner: Stage, send_error: SendError) -> None:
        self.policies = policies
        self.inner = inner
        self.send_error = send_error
        self.request_hooks = [(i, p.on_request) for i, p in enumerate(policies) if p.uses_on_request()]
        # response_hooks[i]: the response hooks of policies[:i], in reverse (the ones whose request phase ran)
        self.response_hooks: list[tuple[ResponseHook, ...]] = [
            tuple(p.on_response for p in reversed(policies[:i]) if p.uses_on_response())
            for i in range(len(policies) + 1)
        ]

    async def __call__(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        for i, hook in self.request_hooks:
            try:
                reply = await hook(exchange)
            except ClientDisconnected:
                raise  # nobody to reply to: the lifecycle records it
            except Exception as exc:
                await self.send_error(exchange, exc, receive, self._send(exchange, send, i))
                return
            if reply is not None:
                if exchange.reason is None:
                    exchange.reason = "local_reply"
                await reply(exchange.scope, receive, self._send(exchange, send, i))
                return
        hooked = self._send(exchange, send, len(self.policies))
        try:
            await self.inner(exchange, receive, hooked)
        except ClientDisconnected:
            raise
        except Exception as exc:
            if exchange.response_started:
                raise
            await self.send_error(exchange, exc, receive, hooked)

    def _send(self, exchange: Exchange, send: Send, i: int) -> Send:
        """`send` carrying the response hooks of the policies before the i-th."""
        hooks = self.response_hooks[i]
        if not hooks:
            return send
        if isinstance(send, ReplySend):
            # The chain's outermost stage: the lifecycle's reply carries the hooks (no wrapper of our own), and
            # runs them after an HTTP/1.0 reply's framing, so they see the reply the client gets.
            send.hooks = hooks
            return send
        return HookedSend(send, exchange, hooks)

    def __repr__(self) -> str:
        return f"HookStage({self.policies!r})"


class HookedSend:
    """A `send` that carries response hooks: they run, in the order given, on the response start it passes on."""

    __slots__ = ("exchange", "hooks", "send")

    def __init__(self, send: Send, exchange: Exchange, hooks: Sequence[ResponseHook]) -> None:
        self.send = send
        self.exchange = exchange
        self.hooks = hooks

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            head = ResponseHead(message)  # the hooks' loop is written out here and in ReplySend: a coroutine less
            for hook in self.hooks:
                await hook(self.exchange, head)
        await self.send(message)


# --- what a policy is and sees -----------------------------------------------------------------------------------


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


PolicyLike = Policy | Middleware
ErrorRenderer = Callable[[Exchange, GatewayError], Awaitable[Response] | Response]


# --- compiling a chain (build time) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainEntry:
    origin: str  # "gateway", "group" or "route"
    policy: PolicyLike

    def label(self) -> str:
        if isinstance(self.policy, Middleware):
            cls = self.policy.cls
            return f"{getattr(cls, '__name__', cls)} (ASGI middleware)"
        return repr(self.policy)


def chain_for(route: Route, gateway_policies: Sequence[PolicyLike]) -> list[ChainEntry]:
    """The route's policies in run order, with `skip` applied to gateway-wide and group policies."""

    def kept(policy: PolicyLike) -> bool:
        kind = policy.cls if isinstance(policy, Middleware) else type(policy)
        return not any(isinstance(kind, type) and issubclass(kind, skipped) for skipped in route.skip)

    entries = [ChainEntry("gateway", p) for p in gateway_policies if kept(p)]
    entries += [ChainEntry("group", p) for p in route.group_policies if kept(p)]
    entries += [ChainEntry("route", p) for p in route.policies]
    return entries


def format_chain(route: Route, entries: Sequence[ChainEntry]) -> str:
    lines = [f"{route.describe_match()}  [{route.name}]"]
    for n, entry in enumerate(entries, 1):
        lines.append(f"  {n}. {entry.label()}  ({entry.origin})")
    lines.append(f"  -> {route.target!r}")
    return "\n".join(lines)


def check_order(route: Route, entries: Sequence[ChainEntry]) -> None:
    for i, entry in enumerate(entries):
        policy = entry.policy
        if not isinstance(policy, Policy):
            if not isinstance(policy, Middleware):
                raise ConfigurationError(
                    f"{policy!r} is neither a Policy nor a starlette Middleware, on route:\n"
                    + format_chain(route, entries)
                )
            continue
        before = [e.policy for e in entries[:i]]
        later = [e.policy for e in entries[i + 1 :]]
        for needed in type(policy).requires:
            if not any(isinstance(p, needed) for p in before):
                raise ConfigurationError(
                    f"{type(policy).__name__} requires {needed.__name__} to run before it, on route:\n"
                    + format_chain(route, entries)
                )
        for earlier in type(policy).after:
            if any(isinstance(p, earlier) for p in later):
                raise ConfigurationError(
                    f"{type(policy).__name__} must run after {earlier.__name__}, on route:\n"
                    + format_chain(route, entries)
                )


def compile_chain(entries: Sequence[ChainEntry], target: Target, send_error: SendError) -> Stage:
    """A route's chain as one stage, called by the lifecycle: hook runs as `HookStage`, the rest as ASGI layers."""
    stage: Stage = target.handle
    run: list[Policy] = []
    for entry in reversed(entries):
        policy = entry.policy
        if isinstance(policy, Policy) and not policy.uses_wrap():
            run.append(policy)
            continue
        if run:
            stage = HookStage(list(reversed(run)), stage, send_error)
            run = []
        inner = _to_asgi(_guarded(stage, send_error))
        if isinstance(policy, Middleware):
            stage = _from_asgi(policy.cls(inner, *policy.args, **policy.kwargs))
        else:
            stage = _from_asgi(policy.wrap(inner))
            if policy.uses_on_request() or policy.uses_on_response():
                run.append(policy)  # its hooks run around its own wrapper
    if run:
        stage = HookStage(list(reversed(run)), stage, send_error)
    return stage


def _guarded(stage: Stage, send_error: SendError) -> Stage:
    """Render errors raised inside an ASGI layer right there, so the layer sees the error reply like any other."""

    async def guarded(exchange: Exchange, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept"):
                started = True
            await send(message)

        try:
            await stage(exchange, receive, tracking_send)
        except ClientDisconnected:
            raise
        except Exception as exc:
            if started or exchange.response_started:
                raise
            await send_error(exchange, exc, receive, send)

    return guarded


def _to_asgi(stage: Stage) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await stage(scope[SCOPE_KEY], receive, send)

    return app


def _from_asgi(app: ASGIApp) -> Stage:
    async def stage(exchange: Exchange, receive: Receive, send: Send) -> None:
        await app(exchange.scope, receive, send)

    return stage
