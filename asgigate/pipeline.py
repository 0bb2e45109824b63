"""Policies and the policy chain of one route, compiled once at build time.

A `Policy` is one concern at the edge, with a request hook and a response hook. It stops the chain explicitly:
`on_request` returns a Response to answer locally, or raises a GatewayError to refuse. `on_response` sees the
response head (status, headers) on the way out, in reverse order, for upstream, local and error replies alike. A
policy that must touch bodies overrides `wrap` instead. Ordering rules are declared, not numbered: `requires`
names policy types that must run earlier on the same chain, `after` names policy types that must run earlier *if
present*. They are checked at build time (`check_order`).

A route's chain:

    gateway-wide policies (minus the route's `skip`) → group policies → route policies → target

Request hooks run in that order; response hooks run in reverse, for upstream, local and error replies alike.
Consecutive hook policies share one stage (one send wrapper, no extra ASGI layer); a policy that overrides
`wrap` or a Starlette `Middleware` becomes an ASGI layer of its own at its place in the list. A hook that
raises or returns a reply stops the chain there: only the response hooks of the policies before it run. An error
raised inside an ASGI layer is rendered inside it, so that layer sees the error reply like any other reply.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.responses import Response

from .errors import ConfigurationError, GatewayError
from .exchange import SCOPE_KEY, Exchange
from .types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .metrics import Metrics
    from .routing import Route
    from .targets.base import Target

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


PolicyLike = Policy | Middleware
ErrorRenderer = Callable[[Exchange, GatewayError], Awaitable[Response] | Response]
Stage = Callable[[Exchange, Receive, Send], Awaitable[None]]
ResponseHook = Callable[[Exchange, ResponseHead], Awaitable[None]]

logger = logging.getLogger("asgigate")


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


def compile_chain(entries: Sequence[ChainEntry], target: Target) -> Stage:
    stage: Stage = target.handle
    run: list[Policy] = []
    for entry in reversed(entries):
        policy = entry.policy
        if isinstance(policy, Policy) and not policy.uses_wrap():
            run.append(policy)
            continue
        if run:
            stage = HookStage(list(reversed(run)), stage)
            run = []
        inner = _to_asgi(_guarded(stage))
        if isinstance(policy, Middleware):
            stage = _from_asgi(policy.cls(inner, *policy.args, **policy.kwargs))
        else:
            stage = _from_asgi(policy.wrap(inner))
            if policy.uses_on_request() or policy.uses_on_response():
                run.append(policy)  # its hooks run around its own wrapper
    if run:
        # The outermost stage: the gateway runs it itself (see HookStage).
        stage = HookStage(list(reversed(run)), stage)
    return stage


def _guarded(stage: Stage) -> Stage:
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
        except Exception as exc:
            if started or exchange.response_started:
                raise
            await exchange.gateway.send_error(exchange, exc, receive, send)

    return guarded


def _to_asgi(stage: Stage) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await stage(scope[SCOPE_KEY], receive, send)

    return app


def _from_asgi(app: ASGIApp) -> Stage:
    async def stage(exchange: Exchange, receive: Receive, send: Send) -> None:
        await app(exchange.scope, receive, send)

    return stage


def _hooked(exchange: Exchange, send: Send, hooks: Sequence[ResponseHook]) -> Send:
    async def hooked_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            head = ResponseHead(message)
            for hook in hooks:
                await hook(exchange, head)
        await send(message)

    return hooked_send


class HookStage:
    """A run of consecutive hook policies.

    Called, it runs the request hooks, then the inner stage with `send` wrapped, so that the response hooks of
    the policies whose request phase ran see the response start (and an ASGI layer around it sees the response
    as the hooks leave it). The outermost stage of a chain (nothing but the gateway around it) is not called:
    `Gateway._handle` runs its request hooks in its own coroutine and hands the response hooks to its own send
    wrapper on `exchange.response_hooks`, with the same order and error handling: no coroutine layer and no
    send wrapper of the stage's own on any request.
    """

    __slots__ = ("inner", "policies", "request_hooks", "response_hooks")

    def __init__(self, policies: list[Policy], inner: Stage) -> None:
        self.policies = policies
        self.inner = inner
        self.request_hooks = [(i, p.on_request) for i, p in enumerate(policies) if p.uses_on_request()]
        # response_hooks[i]: the response hooks of policies[:i], in reverse (the ones whose request phase ran)
        self.response_hooks: list[list[ResponseHook]] = [
            [p.on_response for p in reversed(policies[:i]) if p.uses_on_response()]
            for i in range(len(policies) + 1)
        ]

    async def __call__(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        for i, hook in self.request_hooks:
            try:
                reply = await hook(exchange)
            except Exception as exc:
                await self._error(exchange, exc, receive, self._send(exchange, send, i))
                return
            if reply is not None:
                if exchange.reason is None:
                    exchange.reason = "local_reply"
                await reply(exchange.scope, receive, self._send(exchange, send, i))
                return
        hooked = self._send(exchange, send, len(self.policies))
        try:
            await self.inner(exchange, receive, hooked)
        except Exception as exc:
            if exchange.response_started:
                raise
            await self._error(exchange, exc, receive, hooked)

    def _send(self, exchange: Exchange, send: Send, i: int) -> Send:
        hooks = self.response_hooks[i]
        return _hooked(exchange, send, hooks) if hooks else send

    @staticmethod
    async def _error(exchange: Exchange, exc: Exception, receive: Receive, send: Send) -> None:
        await exchange.gateway.send_error(exchange, exc, receive, send)
    def __repr__(self) -> str:
        return f"HookStage({self.policies!r})"


def policy_repr(policy: Any) -> str:
    return ChainEntry("", policy).label()
