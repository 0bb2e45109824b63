"""Exchange: everything the gateway knows about one request while it is being served."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request

if TYPE_CHECKING:
    from .errors import GatewayError
    from .gateway import Gateway
    from .pipeline import ResponseHead
    from .routing import Route
    from .types import Receive

__all__ = ["Exchange"]

SCOPE_KEY = "asgigate.exchange"


class Exchange:
    """Per-request context, shared by the route table, every policy and the target.

    Found in the ASGI scope under ``scope["asgigate.exchange"]`` (see `Exchange.of`), so plain ASGI middleware
    and mounted apps can reach it too. Policies keep per-request data here, never on themselves.
    """

    # Class-level defaults: a request only pays for the attributes that are actually set on it.
    route: Route | None = None
    path: str = ""  # normalized matching form, see asgigate._paths
    raw_params: Mapping[str, str] = MappingProxyType({})  # matching form; `params` has the typed values
    request_id: str = ""
    identity: Any = None  # set by authentication policies
    _client_ip: str | bool | None = False  # False: not worked out yet
    status: int = 0  # 0 until the response has started
    bytes_sent: int = 0
    bytes_received: int = 0
    upstream: str | None = None
    upstream_ms: float | None = None
    reason: str | None = None  # machine-readable reason of a reply the gateway made itself
    error: GatewayError | None = None
    # response hooks of the chain's outermost policies, run by the gateway on the response start (see pipeline)
    response_hooks: Sequence[Callable[[Exchange, ResponseHead], Awaitable[None]]] = ()
    # the rate limit headers to send: the tightest limit any RateLimit saw (see asgigate.policies.ratelimit)
    _ratelimit: tuple[Any, ...] | None = None
    _headers: Headers | None = None
    _query: QueryParams | None = None
    _request: Request | None = None
    _receive: Receive | None = None
    _state: dict[str, Any] | None = None
    _params: dict[str, Any] | None = None

    def __init__(self, scope: dict[str, Any], gateway: Gateway) -> None:
        self.scope = scope
        self.gateway = gateway
        self.started_at = time.perf_counter()

    @property
    def client_ip(self) -> str | None:
        """The client's address: the peer, or with trusted proxies the rightmost untrusted X-Forwarded-For hop."""
        ip = self._client_ip
        if ip is False:
            ip = self._client_ip = self.gateway.client_address(self.scope)
        return ip  # type: ignore[return-value]

    @client_ip.setter
    def client_ip(self, value: str | None) -> None:
        self._client_ip = value

    @property
    def params(self) -> dict[str, Any]:
        """The matched route's parameters, typed (`{id:int}` gives an int), converted on first use."""
        if self._params is None:
            route = self.route
            self._params = route.template.convert(self.raw_params) if route is not None else {}
        return self._params

    @params.setter
    def params(self, value: dict[str, Any]) -> None:
        self._params = value

    @staticmethod
    def of(scope: dict[str, Any]) -> Exchange:
        exchange: Exchange = scope[SCOPE_KEY]
        return exchange

    @property
    def method(self) -> str:
        method: str = self.scope.get("method", "GET")
        return method

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(scope=self.scope)
        return self._headers

    @property
    def query_params(self) -> QueryParams:
        if self._query is None:
            self._query = QueryParams(self.scope.get("query_string", b""))
        return self._query

    @property
    def request(self) -> Request:
        """A Starlette Request over the same scope. In a handler (`handler(exchange) -> Response`) its body can be
        read (``await exchange.request.json()``); in a policy only its head, since the body is the target's."""
        if self._request is None:
            self._request = Request(self.scope) if self._receive is None else Request(self.scope, self._receive)
        return self._request

    def give_body(self, receive: Receive) -> None:
        """Let `request` read the body from `receive`: for a target that hands the body to code of the user's."""
        self._receive = receive
        self._request = None  # one made before had no body to read

    @property
    def state(self) -> dict[str, Any]:
        """Free-form per-request storage for policies and handlers."""
        if self._state is None:
            self._state = {}
        return self._state

    @property
    def response_started(self) -> bool:
        return self.status != 0

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started_at) * 1000.0

    def __repr__(self) -> str:
        route = self.route.name if self.route else None
        return f"<Exchange {self.method} {self.path or self.scope.get('path')} route={route} id={self.request_id}>"


def is_trusted(address: str | None, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
