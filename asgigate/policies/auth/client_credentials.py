"""ClientCredentials: the gateway calls an upstream on its own behalf, with a token it obtains and caches.

The token comes from the OAuth 2.0 client_credentials grant (RFC 6749 4.4) and is reused until shortly before it
expires (`refresh_before`); one fetch serves all the requests that arrive meanwhile (single flight). The token
replaces the request's `Authorization` header on its way to the upstream: it is the gateway that calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ..._frozen import Frozen
from ..._httpx import PolicyClient, translate
from ...errors import ConfigurationError
from ...pipeline import Policy
from ._discovery import discover_endpoint
from ._oauth import AUTH_METHODS, require_authlib, token_request

if TYPE_CHECKING:
    from starlette.responses import Response

    from ...exchange import Exchange

__all__ = ["ClientCredentials"]

logger = logging.getLogger("asgigate.auth")


class _CurrentToken:
    """A ClientCredentials' run-time state: the token it holds, until when, and the endpoint it comes from."""

    __slots__ = ("lock", "token", "url", "valid_until")

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.token: str | None = None
        self.valid_until = float("-inf")
        self.lock: asyncio.Lock | None = None


class ClientCredentials(Frozen, Policy):
    """``ClientCredentials(issuer="https://idp.example.com", client_id="gateway", client_secret=..., scope="orders")``.

    `token_url` is the token endpoint; without it, it is read from the issuer's discovery document.
    `scope`, `resource` (RFC 8707) and `extra` form fields go with the request; `auth_method` is
    ``"client_secret_basic"`` (default) or ``"client_secret_post"``. The token is sent as ``Bearer`` in `header`
    (``authorization`` by default). When no token can be obtained, the request is refused with 503.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        token_url: str | None = None,
        issuer: str | None = None,
        scope: str | None = None,
        resource: str | None = None,
        extra: Mapping[str, str] | None = None,
        auth_method: str = "client_secret_basic",
        header: str = "authorization",
        refresh_before: float = 30.0,
        timeout: float | httpx.Timeout = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        require_authlib("ClientCredentials")
        if token_url is None and issuer is None:
            raise ConfigurationError("ClientCredentials needs the token_url, or the issuer to discover it from.")
        if not client_id or not client_secret:
            raise ConfigurationError("ClientCredentials needs the gateway's client_id and client_secret.")
        if auth_method not in AUTH_METHODS:
            raise ConfigurationError("ClientCredentials auth_method is 'client_secret_basic' or 'client_secret_post'.")
        self.client_id = client_id
        self._client_secret = client_secret
        # The shared token and the token endpoint (discovered from the issuer when not given): run-time state, in
        # an object of its own, that every request reuses until the token is near expiry.
        self._current = _CurrentToken(token_url)
        self.issuer = issuer
        self.scope = scope
        self.resource = resource
        self.extra = dict(extra or {})
        self.auth_method = auth_method
        self.header = header.lower()
        self.refresh_before = refresh_before
        self.timeout = timeout
        self._clock = clock
        self._http = PolicyClient(timeout=timeout)  # one client for every token request, closed with the gateway

    @property
    def token_url(self) -> str | None:
        """The token endpoint: as given, or as discovered from the issuer (None until then)."""
        return self._current.url

    async def on_request(self, exchange: Exchange) -> Response | None:
        token = await self.token()
        exchange.replace_headers([self.header.encode()], [(self.header.encode(), f"Bearer {token}".encode())])
        return None

    async def token(self) -> str:
        """The current access token, fetched when there is none or it is about to expire."""
        current = self._current
        if current.token is not None and self._clock() < current.valid_until:
            return current.token
        if current.lock is None:
            current.lock = asyncio.Lock()
        async with current.lock:  # single flight: the first caller fetches, the others reuse its token
            if current.token is not None and self._clock() < current.valid_until:
                return current.token
            token, lifetime = await self._fetch()
            current.token = token
            current.valid_until = self._clock() + max(0.0, lifetime - self.refresh_before)
            return token

    async def _fetch(self) -> tuple[str, float]:
        params = dict(self.extra)
        if self.scope:
            params["scope"] = self.scope
        if self.resource:
            params["resource"] = self.resource
        try:
            client = self._http.get()
            url = self.token_url or await self._discover(client)
            response = await token_request(client, url, "client_credentials", params, client_id=self.client_id,
                                           client_secret=self._client_secret, auth_method=self.auth_method)
            response.raise_for_status()
            body = response.json()
            token = body["access_token"]
            if not isinstance(token, str) or not token or str(body.get("token_type", "")).lower() != "bearer":
                raise ValueError("the token response has no bearer access_token")
            expires_in = body.get("expires_in", 300)
            lifetime = float(expires_in) if isinstance(expires_in, int | float) else 300.0
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            logger.warning("client_credentials token for %s failed: %s", self.client_id, error)
            raise translate(error, stage="client_credentials", upstream=self.token_url or self.issuer,
                            detail="The gateway could not authenticate to the service.", dependency=True) from None
        return token, lifetime

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _discover(self, client: httpx.AsyncClient) -> str:
        assert self.issuer is not None
        endpoint = await discover_endpoint(client, self.issuer, "token_endpoint")
        self._current.url = endpoint
        return endpoint

    def _config(self) -> tuple[Any, ...]:
        return (self.client_id, self._client_secret, self.issuer, self.scope, self.resource,
                tuple(sorted(self.extra.items())), self.auth_method, self.header)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientCredentials) and self._config() == other._config()

    def __hash__(self) -> int:
        return hash(self._config())

    def __repr__(self) -> str:
        parts = [f"issuer={self.issuer!r}" if self.issuer else f"token_url={self.token_url!r}",
                 f"client_id={self.client_id!r}"]
        if self.scope:
            parts.append(f"scope={self.scope!r}")
        if self.resource:
            parts.append(f"resource={self.resource!r}")
        return f"ClientCredentials({', '.join(parts)})"
