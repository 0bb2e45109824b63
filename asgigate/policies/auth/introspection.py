"""IntrospectionAuth: opaque access tokens checked with the issuer's introspection endpoint (RFC 7662).

The gateway authenticates to the endpoint as its own client. Active tokens are cached (by their SHA-256, not
the token itself) until the earlier of their `exp` and `cache_ttl`, so a revoked token is refused at the latest
`cache_ttl` seconds later. When the endpoint cannot answer, requests are refused with 503 (504 when it timed
out; fail closed): an unverifiable token is never let through, and a 401 would make clients throw away tokens
that may be good. One httpx client is kept for the calls and closed with the gateway.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx

from ..._cache import BoundedCache, json_size
from ..._frozen import Frozen
from ..._httpx import PolicyClient, translate
from ...errors import ConfigurationError, InvalidToken, UpstreamUnavailable
from ._discovery import discover_endpoint
from ._oauth import AUTH_METHODS, form_post, require_authlib
from .base import Authenticator, Identity, read_token, scopes_of, token_sources

if TYPE_CHECKING:
    from ...exchange import Exchange

__all__ = ["IntrospectionAuth"]

logger = logging.getLogger("asgigate.auth")


class _Endpoint:
    """The introspection endpoint an IntrospectionAuth found by discovery (its run-time state)."""

    __slots__ = ("url",)

    def __init__(self, url: str | None) -> None:
        self.url = url


class IntrospectionAuth(Frozen, Authenticator):
    """``IntrospectionAuth(issuer="https://idp.example.com", client_id="gateway", client_secret=...)``.

    `endpoint` is the introspection URL; without it, it is read from the issuer's discovery document
    (``introspection_endpoint``). The gateway authenticates with HTTP Basic (`auth_method="client_secret_basic"`)
    or form fields (``"client_secret_post"``). `audience`, when given, must be in the response's `aud`;
    `issuer`, when the response names one, must match. `token_from` is as for `BearerAuth`. Active tokens are
    cached for `cache_ttl` seconds, at most `cache_size` of them in `cache_bytes` (the memory their answers take),
    least recently used first out.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        endpoint: str | None = None,
        issuer: str | None = None,
        audience: str | Iterable[str] | None = None,
        auth_method: str = "client_secret_basic",
        token_from: str | Iterable[str] = "header",
        optional: bool = False,
        cache_ttl: float = 60.0,
        cache_size: int = 10_000,
        cache_bytes: int = 32 * 1024 * 1024,
        timeout: float | httpx.Timeout = 5.0,
        max_token_bytes: int = 8192,
        clock: Callable[[], float] = time.time,
    ) -> None:
        require_authlib("IntrospectionAuth")
        if endpoint is None and issuer is None:
            raise ConfigurationError("IntrospectionAuth needs the endpoint, or the issuer to discover it from.")
        if endpoint is not None and not endpoint.startswith(("https://", "http://")):
            raise ConfigurationError(f"IntrospectionAuth endpoint {endpoint!r} is not an http(s) URL.")
        if auth_method not in AUTH_METHODS:
            raise ConfigurationError("IntrospectionAuth auth_method is 'client_secret_basic' or 'client_secret_post'.")
        if not client_id or not client_secret:
            raise ConfigurationError("IntrospectionAuth needs the gateway's client_id and client_secret.")
        if cache_size < 0 or cache_bytes < 0:
            raise ConfigurationError("IntrospectionAuth cache_size and cache_bytes must not be negative.")
        self.endpoint = endpoint
        self.issuer = issuer
        self.audience = (audience,) if isinstance(audience, str) else tuple(audience) if audience else ()
        self.client_id = client_id
        self._client_secret = client_secret
        self.auth_method = auth_method
        self._sources = token_sources("IntrospectionAuth", token_from)
        self.places = tuple((kind, name) for _, kind, name in self._sources)
        self.token_from = tuple(spec for spec, _, _ in self._sources)
        self.optional = optional
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self.timeout = timeout
        self.max_token_bytes = max_token_bytes
        self._clock = clock
        # Shared caches, not per-request state.
        self._endpoint = _Endpoint(endpoint)  # the endpoint, as given or as discovered from the issuer
        # the introspection answers of active tokens, by the token's digest: the answer's size is the IdP's, the
        # number of tokens a client's, so the cache is bounded by both
        self._active: BoundedCache[bytes, tuple[Identity, float]] = BoundedCache(
            cache_bytes if cache_size and cache_ttl > 0 else 0, max_entries=cache_size or None)
        self._http = PolicyClient(timeout=timeout)

    async def authenticate(self, exchange: Exchange) -> Identity | None:
        token = read_token(exchange, self._sources)
        if token is None:
            return None
        return await self.verify(token)

    async def verify(self, token: str) -> Identity:
        if not token or len(token) > self.max_token_bytes:
            raise InvalidToken(internal="token empty or too large")
        now = self._clock()
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        cached = self._active.get(digest)
        if cached is not None:
            if now < cached[1]:
                return cached[0]
            self._active.pop(digest)
        answer = await self._introspect(token)
        identity = self._identity(answer, now)
        until = now + self.cache_ttl
        if identity.expires_at is not None:
            until = min(until, identity.expires_at)
        self._active.put(digest, (identity, until), json_size(identity.claims) + 1024)
        return identity

    def _identity(self, answer: Mapping[str, Any], now: float) -> Identity:
        if answer.get("active") is not True:
            raise InvalidToken(internal="token not active")
        token_type = answer.get("token_type")
        if token_type is not None and str(token_type).lower() not in ("bearer", "access_token"):
            raise InvalidToken(internal=f"token_type {token_type!r}")
        if self.issuer is not None and answer.get("iss", self.issuer) != self.issuer:
            raise InvalidToken(internal="wrong issuer")
        if self.audience:
            aud = answer.get("aud")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(a in self.audience for a in audiences):
                raise InvalidToken(internal="wrong audience")
        exp = answer.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float | None):
            raise InvalidToken(internal="exp is not a number")
        if exp is not None and now >= exp:
            raise InvalidToken(internal="expired")
        subject, client = answer.get("sub"), answer.get("client_id")
        return Identity(
            subject=subject if isinstance(subject, str) else None,
            claims=MappingProxyType(dict(answer)),
            scopes=scopes_of(answer),
            client_id=client if isinstance(client, str) else None,
            method="introspection",
            expires_at=float(exp) if exp is not None else None,
        )

    async def _introspect(self, token: str) -> Mapping[str, Any]:
        body = urlencode({"token": token, "token_type_hint": "access_token"})
        try:
            client = self._http.get()
            endpoint = self._discovered or await self._discover(client)
            response = await form_post(client, endpoint, body, client_id=self.client_id,
                                       client_secret=self._client_secret, auth_method=self.auth_method)
            if response.status_code == 400:
                # The token is the only thing the client controls: a request refused as invalid (say,
                # `unsupported_token_type` for a JWT) means the token is not one this endpoint vouches for.
                raise InvalidToken(internal=f"introspection refused the token: {response.text[:200]}")
            response.raise_for_status()
            answer = response.json()
        except (httpx.HTTPError, ValueError) as error:
            logger.warning("token introspection at %s failed: %s", self.endpoint or self.issuer, error)
            raise translate(error, stage="introspection", upstream=self.endpoint or self.issuer,
                            detail="The token could not be checked.", dependency=True) from None
        if not isinstance(answer, Mapping):
            raise UpstreamUnavailable("The token could not be checked.", stage="introspection")
        return answer

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _discover(self, client: httpx.AsyncClient) -> str:
        assert self.issuer is not None
        endpoint = await discover_endpoint(client, self.issuer, "introspection_endpoint")
        self._endpoint.url = endpoint
        return endpoint

    @property
    def _discovered(self) -> str | None:
        return self._endpoint.url

    def _config(self) -> tuple[Any, ...]:
        return (self.endpoint, self.issuer, self.audience, self.client_id, self._client_secret, self.auth_method,
                self.token_from, self.optional, self.cache_ttl)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntrospectionAuth) and self._config() == other._config()

    def __hash__(self) -> int:
        return hash(self._config())

    def __repr__(self) -> str:
        parts = [f"endpoint={self.endpoint!r}" if self.endpoint else f"issuer={self.issuer!r}",
                 f"client_id={self.client_id!r}"]
        if self.audience:
            parts.append(f"audience={self.audience[0]!r}" if len(self.audience) == 1 else
                         f"audience={list(self.audience)!r}")
        return f"IntrospectionAuth({', '.join(parts)})"
