"""httpx at one boundary: its errors translated into the gateway's, and the long-lived client of a policy.

Every ``except httpx...`` of the package goes through `translate`, so that a failure means the same wherever the
gateway called out. The classes follow what the proxy's own HTTP/1.1 pool raises for the same failure:

    httpx error                               proxy (_http1)                  policy call-out (dependency=True)
    ConnectTimeout, ReadTimeout, WriteTimeout  504 UpstreamTimeout             504 UpstreamTimeout
    PoolTimeout                               503 UpstreamUnavailable (pool)  503 UpstreamUnavailable
    ConnectError                              502 UpstreamConnectError        503 UpstreamUnavailable
    any other (protocol, connection lost)     502 UpstreamProtocolError       503 UpstreamUnavailable

A policy's call-out (an identity provider, an authorization service) is a dependency of the gateway rather than
the upstream the request is for: when it cannot be reached the request cannot be checked, which is a 503 (and a
bad answer from it, a 5xx or a document that does not parse, is too); only a timeout is a 504, as everywhere.
`stage` names the call ("introspection", "jwks", "oidc_token", ...), `upstream` whom it went to.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from .errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

__all__ = ["PolicyClient", "translate"]


def translate(
    error: Exception,
    *,
    stage: str,
    upstream: str | None = None,
    detail: str | None = None,
    dependency: bool = False,
) -> UpstreamError:
    """The gateway error for a failed call out (an httpx error, or a ValueError from a bad answer)."""
    internal = f"{type(error).__name__}: {error}"
    if isinstance(error, httpx.PoolTimeout):
        return UpstreamUnavailable(detail or "The upstream is at its connection limit.", stage=stage,
                                   upstream=upstream, internal=internal)
    if isinstance(error, httpx.TimeoutException):
        return UpstreamTimeout(detail or "The upstream did not respond in time.", stage=stage, upstream=upstream,
                               internal=internal)
    if dependency:
        return UpstreamUnavailable(detail or "The service is not available.", stage=stage, upstream=upstream,
                                   internal=internal)
    if isinstance(error, httpx.ConnectError):
        return UpstreamConnectError(detail or "Could not connect to the upstream.", stage=stage, upstream=upstream,
                                    internal=internal)
    return UpstreamProtocolError(detail or "The upstream sent an invalid response.", stage=stage, upstream=upstream,
                                 internal=internal)


class PolicyClient:
    """The one httpx client of a policy that calls out, opened on first use and closed by the policy's `aclose()`.

    Its connections are reused from request to request. httpx clients belong to the event loop they were used in,
    so a gateway served again in a new loop (tests do) gets a new client; the old one went with its loop.
    """

    def __init__(self, **options: Any) -> None:
        self.options = {"follow_redirects": False, **options}
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.opened = 0  # clients made so far (tests check that calls share one)

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(**self.options)
            self._loop = loop
            self.opened += 1
        return self._client

    @property
    def is_open(self) -> bool:
        return self._client is not None and not self._client.is_closed

    async def aclose(self) -> None:
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    def __repr__(self) -> str:
        return f"PolicyClient(open={self.is_open})"
