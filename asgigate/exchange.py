"""Exchange: everything the gateway knows about one request while it is being served.

The exchange knows no gateway and no feature. What it needs of the gateway that serves the request (the trusted
proxies, the request id header) is a `GatewayContext` of plain values, made once when the gateway is built. A
feature keeps its per-request data under a key of its own in `state` (``"asgigate.ratelimit"``), or on an object
it owns, never on a field of the exchange.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request

from ._forwarding import TrustedProxies

if TYPE_CHECKING:
    from .errors import GatewayError
    from .routing import Route
    from .types import Receive

__all__ = ["Exchange"]

SCOPE_KEY = "asgigate.exchange"


@dataclass(frozen=True, slots=True)
class GatewayContext:
    """What a request needs to know of the gateway serving it, as plain values bound when the gateway is built.

    - `trusted_proxies`: whose forwarding headers are believed (`Exchange.client_ip`, the proxy's X-Forwarded-*).
    - `request_id_header`: the header that carries the request id, lower case; empty when the gateway gives none.
    - `gateway`: the gateway object itself, for the deprecated `Exchange.gateway` only: the core never calls it.
    """

    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    request_id_header: bytes = b"x-request-id"
    gateway: Any = None


class _HasContext(Protocol):
    @property
    def context(self) -> GatewayContext: ...


_CACHED_BY_HEADERS = ("_headers", "_cookies", "_url")  # what a Starlette Request computes once from the headers
_CACHED_BY_QUERY = ("_query_params", "_url")


class Exchange:
    """Per-request context, shared by the route table, every policy and the target.

    Found in the ASGI scope under ``scope["asgigate.exchange"]`` (see `Exchange.of`), so plain ASGI middleware
    and mounted apps can reach it too. Policies keep per-request data here (`state`, `identity`), never on
    themselves. `context` is the gateway's: a `GatewayContext`, or, in tests, a `Gateway` (its context is used).
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
    _headers: Headers | None = None
    _query: QueryParams | None = None
    _request: Request | None = None
    _receive: Receive | None = None
    _state: dict[str, Any] | None = None
    _params: dict[str, Any] | None = None

    def __init__(self, scope: dict[str, Any], context: GatewayContext | _HasContext) -> None:
        self.scope = scope
        if not isinstance(context, GatewayContext):
            context = context.context  # a Gateway (unit tests build exchanges that way)
        self.context: GatewayContext = context
        self.started_at = time.perf_counter()

    @property
    def client_ip(self) -> str | None:
        """The client's address: the peer, or with trusted proxies the rightmost untrusted X-Forwarded-For hop."""
        ip = self._client_ip
        if ip is False:
            ip = self._client_ip = self.context.trusted_proxies.client_address(self.scope)
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

    def replace_headers(
        self, remove: Iterable[str | bytes] = (), add: Iterable[tuple[str | bytes, str | bytes]] = ()
    ) -> None:
        """Drop every request header named in `remove`, then append `add`: what the layers after this one and the
        upstream see. Names are case-insensitive; `headers` and `request` reflect the change."""
        names = {_latin1(name).lower() for name in remove}
        scope = self.scope
        headers = scope.get("headers", [])
        if names:
            headers = [item for item in headers if item[0].lower() not in names]
        else:
            headers = list(headers)
        headers.extend((_latin1(name).lower(), _latin1(value)) for name, value in add)
        scope["headers"] = headers
        self._headers = None
        self._forget(_CACHED_BY_HEADERS)

    def replace_query(self, query_string: str | bytes) -> None:
        """Replace the raw query string (without the ``?``): what the layers after this one and the upstream see;
        `query_params` and `request` reflect the change."""
        self.scope["query_string"] = _latin1(query_string)
        self._query = None
        self._forget(_CACHED_BY_QUERY)

    def _forget(self, names: tuple[str, ...]) -> None:
        # The Request made before (its body possibly given, or read) is kept: only what it derived from the
        # request head is dropped, to be derived again from the scope on next use.
        request = self._request
        if request is not None:
            cached = vars(request)
            for name in names:
                cached.pop(name, None)

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

    @property
    def gateway(self) -> Any:
        """Deprecated: the gateway serving the request. Its settings a request needs are on `context`."""
        warnings.warn(
            "Exchange.gateway is deprecated: the settings a request needs are on exchange.context",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.context.gateway

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started_at) * 1000.0

    def __repr__(self) -> str:
        route = self.route.name if self.route else None
        return f"<Exchange {self.method} {self.path or self.scope.get('path')} route={route} id={self.request_id}>"


def _latin1(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value
