"""Exchange: everything the gateway knows about one request while it is being served."""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request

if TYPE_CHECKING:
    from .errors import GatewayError
    from .gateway import Gateway
    from .routing import Route

SCOPE_KEY = "asgigate.exchange"


class Exchange:
    """Per-request context, shared by the route table, every policy and the target.

    Found in the ASGI scope under ``scope["asgigate.exchange"]`` (see `Exchange.of`), so plain ASGI middleware
    and mounted apps can reach it too. Policies keep per-request data here, never on themselves.
    """

    __slots__ = (
        "_headers",
        "_query",
        "_request",
        "_state",
        "bytes_received",
        "bytes_sent",
        "client_ip",
        "error",
        "gateway",
        "identity",
        "params",
        "path",
        "raw_params",
        "reason",
        "request_id",
        "route",
        "scope",
        "started_at",
        "status",
        "upstream",
        "upstream_ms",
    )

    def __init__(self, scope: dict[str, Any], gateway: Gateway) -> None:
        self.scope = scope
        self.gateway = gateway
        self.started_at = time.perf_counter()
        self.route: Route | None = None
        self.path = ""  # normalized matching form, see asgigate._paths
        self.params: dict[str, Any] = {}
        self.raw_params: dict[str, str] = {}
        self.request_id = ""
        self.identity: Any = None  # set by authentication policies
        self.client_ip: str | None = None
        self.status = 0  # 0 until the response has started
        self.bytes_sent = 0
        self.bytes_received = 0
        self.upstream: str | None = None
        self.upstream_ms: float | None = None
        self.reason: str | None = None  # machine-readable reason of a reply the gateway made itself
        self.error: GatewayError | None = None
        self._headers: Headers | None = None
        self._query: QueryParams | None = None
        self._request: Request | None = None
        self._state: dict[str, Any] | None = None

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
        """A Starlette Request over the same scope (its body can be read only by one party)."""
        if self._request is None:
            self._request = Request(self.scope)
        return self._request

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
