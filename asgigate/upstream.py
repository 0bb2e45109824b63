"""Upstream: one backend origin, its connection pool for the proxy, and an httpx client for everything else."""

from __future__ import annotations

import ssl as ssl_module
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._http1 import ConnectionPool

__all__ = ["Upstream"]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0, pool=5.0)


def as_timeout(value: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    return httpx.Timeout(value)


class Upstream:
    """A backend origin such as ``Upstream("http://users:8080/api", timeout=2.0)``.

    The proxy's data path uses a purpose-built HTTP/1.1 connection pool (see asgigate._http1); calls made from
    code (auth, GraphQL resolvers, health checks) use `client`, a pooled httpx.AsyncClient on the same origin.
    Both open lazily and are closed by the gateway's lifespan.
    """

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
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"Upstream URL {url!r} must be http:// or https:// with a host.")
        if parts.query or parts.fragment:
            raise ConfigurationError(f"Upstream URL {url!r} must not have a query or fragment.")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if default_port else f"{host}:{self.port}"
        self.name = name or self.authority
        self.timeout = as_timeout(timeout)
        self.total_timeout = total_timeout
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.verify = verify
        self._pool: ConnectionPool | None = None
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
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            from ._http1 import ConnectionPool

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
            self._client = httpx.AsyncClient(
                base_url=self.url,
                timeout=self.timeout,
                verify=self.verify,
                limits=httpx.Limits(max_connections=self.max_connections),
            )
        return self._client

    async def aclose(self) -> None:
        pool, client = self._pool, self._client
        self._pool = self._client = None
        if pool is not None:
            await pool.aclose()
        if client is not None:
            await client.aclose()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Upstream):
            return NotImplemented
        return (self.url, self.name, self.timeout, self.total_timeout) == (
            other.url,
            other.name,
            other.timeout,
            other.total_timeout,
        )

    def __hash__(self) -> int:
        return hash((self.url, self.name))

    def __repr__(self) -> str:
        return f"Upstream({self.url!r}, name={self.name!r})"
