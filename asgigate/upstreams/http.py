"""Upstream: one HTTP backend origin, its connection pool for the proxy, and an httpx client for everything else.

With `app=` both go to an ASGI app in the same process instead (see `_asgi.py`): no sockets, the same streaming and
the same error replies as over the network, for tests of a gateway and for gateways fronting an app of their own.
"""

from __future__ import annotations

import ssl as ssl_module
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx

from ..errors import ConfigurationError
from .base import BaseUpstream

if TYPE_CHECKING:
    from .._http1 import ConnectionPool
    from ..types import ASGIApp
    from ._asgi import AsgiPool

__all__ = ["ResponseStream", "Upstream"]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0, pool=5.0)


class ResponseStream(Protocol):
    """What the proxy reads from either data path (`_http1.UpstreamResponse`, `_asgi.AsgiResponse`)."""

    status: int
    headers: list[tuple[bytes, bytes]]

    @property
    def complete(self) -> bool: ...

    async def receive(self) -> bytes: ...

    async def aclose(self) -> None: ...


def as_timeout(value: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    return httpx.Timeout(value)


class Upstream(BaseUpstream):
    """An HTTP backend origin such as ``Upstream("http://users:8080/api", timeout=2.0)``.

    The proxy's data path uses a purpose-built HTTP/1.1 connection pool (see asgigate._http1); calls made from
    code (auth, GraphQL resolvers, health checks) use `client`, a pooled httpx.AsyncClient on the same origin.
    Both open lazily and are closed by the gateway's lifespan.

    `app` sends both to an ASGI app in this process instead of over the network (the URL still gives the Host,
    the base path and the scheme the app sees); `transport` gives `client` an httpx transport of your own
    (``httpx.MockTransport``, say) while the proxy path keeps the network or `app`.
    """

    kind = "an HTTP upstream"

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        total_timeout: float | None = None,
        max_connections: int = 512,
        max_idle: int = 256,
        idle_timeout: float = 30.0,
        verify: ssl_module.SSLContext | bool = True,
        app: ASGIApp | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"Upstream URL {url!r} must be http:// or https:// with a host.")
        if parts.query or parts.fragment:
            raise ConfigurationError(f"Upstream URL {url!r} must not have a query or fragment.")
        if app is not None and not callable(app):
            raise ConfigurationError(f"Upstream app= takes an ASGI app, got {app!r}.")
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise ConfigurationError(f"Upstream transport= takes an httpx.AsyncBaseTransport, got {transport!r}.")
        host_name = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = port == (443 if parts.scheme == "https" else 80)
        host = f"[{host_name}]" if ":" in host_name else host_name
        super().__init__(url, scheme=parts.scheme, host=host_name, port=port,
                         authority=host if default_port else f"{host}:{port}", name=name)
        self.base_path = parts.path.rstrip("/")
        self.timeout = as_timeout(timeout)
        self.total_timeout = total_timeout
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.verify = verify
        self.app = app
        self.transport = transport
        self._pool: ConnectionPool | AsgiPool | None = None
        self._client: httpx.AsyncClient | None = None

    def _ssl_context(self) -> ssl_module.SSLContext | None:
        if self.scheme != "https":
            return None
        if isinstance(self.verify, ssl_module.SSLContext):
            return self.verify
        context = ssl_module.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl_module.CERT_NONE
        return context

    @property
    def pool(self) -> ConnectionPool | AsgiPool:
        """The proxy's data path: the HTTP/1.1 pool, or the in-process one when `app` is given."""
        if self._pool is None:
            if self.app is not None:
                from ._asgi import AsgiPool

                self._pool = AsgiPool(self.app, self)
                return self._pool
            from .._http1 import ConnectionPool

            self._pool = ConnectionPool(
                self.host,
                self.port,
                ssl=self._ssl_context(),
                server_hostname=self.host if self.scheme == "https" else None,
                max_connections=self.max_connections,
                max_idle=self.max_idle,
                idle_timeout=self.idle_timeout,
                connect_timeout=self.timeout.connect,
                pool_timeout=self.timeout.pool,
                name=self.name,
            )
        return self._pool

    @property
    def client(self) -> httpx.AsyncClient:
        """An httpx client for calls made from code, with this upstream's base URL and timeouts."""
        if self._client is None:
            options: dict[str, Any] = {}
            if self.transport is not None:
                options["transport"] = self.transport
            elif self.app is not None:
                # Like a server in front of the app: an exception in it is a 500 reply, not raised in the caller.
                options["transport"] = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            self._client = httpx.AsyncClient(
                base_url=self.url,
                timeout=self.timeout,
                verify=self.verify,
                limits=httpx.Limits(max_connections=self.max_connections),
                **options,
            )
        return self._client

    async def aclose(self) -> None:
        pool, client = self._pool, self._client
        self._pool = self._client = None
        if pool is not None:
            await pool.aclose()
        if client is not None:
            await client.aclose()

    def _config(self) -> tuple[Any, ...]:
        return (self.url, self.name, self.timeout, self.total_timeout, self.app, self.transport)

    def __repr__(self) -> str:
        extra = ", app=..." if self.app is not None else ""
        return f"Upstream({self.url!r}, name={self.name!r}{extra})"
