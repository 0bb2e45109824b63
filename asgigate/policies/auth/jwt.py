"""BearerAuth: JWT access tokens verified at the edge (RFC 7519, RFC 9068, RFC 6750).

Verification order, cheapest and most suspicious first: size, shape (three base64url segments), header (an
allowed `alg`; no `jku`/`x5u`/`jwk`/`x5c`, since keys only ever come from the configured source; no `crit`,
since no extension is understood; `typ` when configured), key by `kid`, signature (joserfc), then claims
(`iss`, `aud`, `exp`, `nbf`, `iat` with leeway). Every failure is the same 401 `invalid_token` reply; what went
wrong is only logged (`internal`). A verified token is cached until it expires, so a client that repeats its
token pays for one signature check.
"""

from __future__ import annotations

import binascii
import json
import re
import sys
import time
from base64 import urlsafe_b64decode
from collections.abc import Callable, Iterable, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx
from joserfc import jws
from joserfc.errors import JoseError

from ..._cache import BoundedCache, json_size
from ..._frozen import Frozen
from ...errors import ConfigurationError, ExpiredToken, InvalidToken
from ._jwks import KEY_TYPES, KeyInput, RemoteKeys, StaticKeys
from .base import Authenticator, Identity, read_token, scopes_of, token_sources, with_error

if TYPE_CHECKING:
    from ...exchange import Exchange

__all__ = ["BearerAuth"]

SEGMENT = re.compile(rb"^[A-Za-z0-9_-]+$")
# Header parameters that would let the token choose its own key; never honoured, so refused outright.
KEY_SOURCE_HEADERS = ("jku", "x5u", "jwk", "x5c")


def b64json(segment: bytes) -> Any:
    if not SEGMENT.match(segment):
        raise ValueError("not base64url")
    return json.loads(urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))


class BearerAuth(Frozen, Authenticator):
    """Verifies JWT bearer tokens and sets `exchange.identity`.

    ``BearerAuth(issuer="https://idp.example.com", audience="orders-api")`` discovers the keys from the issuer;
    ``jwks_uri=`` names the key set directly; ``keys=`` gives static keys (a JWKS dict, JWKs, PEM strings).
    `algorithms` is the explicit allowlist (never ``none``; HMAC only with static keys, never mixed with public
    key algorithms). `leeway` is the clock skew allowed on `exp`, `nbf` and `iat`, in seconds. `typ` requires a
    header type (``"at+jwt"`` for RFC 9068 access tokens). `token_from` is where the token is read:
    ``"header"`` (``Authorization: Bearer``), ``"header:X-Token"``, ``"cookie:access_token"``,
    ``"query:access_token"``; a request with a token in more than one of them, or one of them twice, is
    refused with 400 `invalid_request`. `max_token_bytes` refuses larger tokens before any parsing; `cache_size`
    (entries) and `cache_bytes` (the memory its tokens and their claims take) bound the verified-token cache,
    least recently used first out. `clock` (Unix seconds; default `time.time`) is the time tokens are checked
    against; when given, the key set's age (`jwks_ttl`, `min_refresh_interval`) is reckoned by it too (default:
    `time.monotonic`), so a test moves one clock forward instead of sleeping.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Iterable[str],
        algorithms: Iterable[str] = ("RS256", "ES256"),
        keys: KeyInput | Sequence[KeyInput] | None = None,
        jwks_uri: str | None = None,
        leeway: float = 30.0,
        require: Iterable[str] = ("exp",),
        typ: str | None = None,
        token_from: str | Iterable[str] = "header",
        realm: str | None = None,
        optional: bool = False,
        max_token_bytes: int = 8192,
        cache_size: int = 10_000,
        cache_bytes: int = 32 * 1024 * 1024,
        jwks_ttl: float = 600.0,
        min_refresh_interval: float = 30.0,
        timeout: float | httpx.Timeout = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not issuer:
            raise ConfigurationError("BearerAuth needs the issuer its tokens must come from.")
        audiences = (audience,) if isinstance(audience, str) else tuple(audience)
        if not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise ConfigurationError("BearerAuth needs the audience (or audiences) its tokens must be for.")
        allowed = tuple(dict.fromkeys(algorithms))
        unknown = [alg for alg in allowed if alg not in KEY_TYPES]
        if not allowed or unknown:
            raise ConfigurationError(
                f"BearerAuth algorithms {list(allowed)!r}: use some of {sorted(KEY_TYPES)} ('none' is never allowed)."
            )
        hmac = [alg for alg in allowed if alg.startswith("HS")]
        if hmac and (len(hmac) != len(allowed) or keys is None):
            raise ConfigurationError(
                "BearerAuth: HMAC algorithms (HS*) need static keys= and cannot be mixed with public key algorithms."
            )
        if keys is not None and jwks_uri is not None:
            raise ConfigurationError("BearerAuth takes keys= or jwks_uri=, not both.")
        if leeway < 0 or max_token_bytes < 64 or cache_size < 0 or cache_bytes < 0:
            raise ConfigurationError(
                "BearerAuth leeway, max_token_bytes, cache_size and cache_bytes must be sensible values.")
        self.issuer = issuer
        self.audience = audiences
        self.algorithms = allowed
        self.leeway = leeway
        self.require = tuple(require)
        self.typ = typ
        self._sources = token_sources("BearerAuth", token_from)
        self.places = tuple((kind, name) for _, kind, name in self._sources)
        self.token_from = tuple(spec for spec, _, _ in self._sources)
        self.realm = realm
        self.optional = optional
        self.max_token_bytes = max_token_bytes
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self._keys: StaticKeys | RemoteKeys = (
            StaticKeys(keys) if keys is not None
            else RemoteKeys(issuer, jwks_uri=jwks_uri, ttl=jwks_ttl, min_refresh_interval=min_refresh_interval,
                            timeout=timeout, clock=clock or time.monotonic)
        )
        self._registry = jws.JWSRegistry(algorithms=list(allowed), strict_check_header=False)
        self._registry.max_header_length = self._registry.max_payload_length = max_token_bytes
        self._clock = clock or time.time
        # Shared cache of verified tokens (token -> identity), not per-request state. A client holding many valid
        # tokens fills it; their claims take up to twenty times the token's bytes, so it is bounded by bytes.
        self._verified: BoundedCache[str, Identity] = BoundedCache(
            cache_bytes if cache_size else 0, max_entries=cache_size or None)

    @property
    def challenge(self) -> str:
        return f'Bearer realm="{self.realm}"' if self.realm else "Bearer"

    def _refuse(self, why: str) -> InvalidToken:
        challenge = f'Bearer realm="{self.realm}", error="invalid_token"' if self.realm else None
        return InvalidToken(challenge=challenge, internal=why)

    def token(self, exchange: Exchange) -> str | None:
        """The token the request carries in one of the configured places (400 `invalid_request` for more than one)."""
        return read_token(exchange, self._sources, with_error(self.challenge, "invalid_request"))

    async def authenticate(self, exchange: Exchange) -> Identity | None:
        token = self.token(exchange)
        if token is None:
            return None
        return await self.verify(token)

    async def verify(self, token: str) -> Identity:
        """The identity of a valid token; raises `InvalidToken` (or `ExpiredToken`) for anything else."""
        now = self._clock()
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at is None or now < cached.expires_at + self.leeway:
                return cached
            self._verified.pop(token)
        identity = await self._verify(token, now)
        self._verified.put(token, identity, sys.getsizeof(token) + json_size(identity.claims) + 1024)
        return identity

    async def _verify(self, token: str, now: float) -> Identity:
        if len(token) > self.max_token_bytes:
            raise self._refuse("token too large")
        raw = token.encode("ascii", "replace")
        parts = raw.split(b".")
        if len(parts) != 3:
            raise self._refuse("not a JWS compact token")
        try:
            header = b64json(parts[0])
            if not SEGMENT.match(parts[1]) or not SEGMENT.match(parts[2]):
                raise ValueError("not base64url")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise self._refuse("malformed token header") from None
        if not isinstance(header, dict):
            raise self._refuse("malformed token header")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise self._refuse(f"algorithm {alg!r} not allowed")
        for name in KEY_SOURCE_HEADERS:
            if name in header:
                raise self._refuse(f"token header carries {name!r}")
        if "crit" in header:
            raise self._refuse("token header has crit extensions")
        if self.typ is not None:
            typ = header.get("typ")
            if not isinstance(typ, str) or typ.lower().removeprefix("application/") != self.typ.lower():
                raise self._refuse(f"token typ {typ!r} is not {self.typ!r}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise self._refuse("kid is not a string")
        key = await self._keys.find(kid, alg)
        if key is None:
            raise self._refuse(f"no key for kid {kid!r} and {alg}")
        try:
            signed = jws.deserialize_compact(raw, key, algorithms=[alg], registry=self._registry)
            claims = json.loads(signed.payload)
        except (JoseError, ValueError, TypeError) as error:
            raise self._refuse(f"signature or payload: {type(error).__name__}") from None
        if not isinstance(claims, dict):
            raise self._refuse("payload is not a JSON object")
        return self._check_claims(claims, now)

    def _check_claims(self, claims: dict[str, Any], now: float) -> Identity:
        for name in self.require:
            if name not in claims:
                raise self._refuse(f"claim {name!r} missing")
        if claims.get("iss") != self.issuer:
            raise self._refuse("wrong issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(a in self.audience for a in audiences if isinstance(a, str)):
            raise self._refuse("wrong audience")
        times = {}
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._refuse(f"claim {name!r} is not a number")
            times[name] = float(value)
        if "nbf" in times and now + self.leeway < times["nbf"]:
            raise self._refuse("not valid yet")
        if "iat" in times and now + self.leeway < times["iat"]:
            raise self._refuse("issued in the future")
        exp = times.get("exp")
        if exp is not None and now >= exp + self.leeway:
            raise ExpiredToken(internal="token expired")
        client = claims.get("client_id", claims.get("azp"))
        subject = claims.get("sub")
        return Identity(
            subject=subject if isinstance(subject, str) else None,
            claims=MappingProxyType(claims),
            scopes=scopes_of(claims),
            client_id=client if isinstance(client, str) else None,
            method="jwt",
            expires_at=exp,
        )

    async def aclose(self) -> None:
        """Close the client that fetches the issuer's keys (at gateway shutdown)."""
        await self._keys.aclose()

    def _config(self) -> tuple[Any, ...]:
        return (self.issuer, self.audience, self.algorithms, self.leeway, self.require, self.typ, self.token_from,
                self.realm, self.optional, self.max_token_bytes, repr(self._keys))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BearerAuth) and self._config() == other._config()

    def __hash__(self) -> int:
        return hash(self._config())

    def __repr__(self) -> str:
        audience = self.audience[0] if len(self.audience) == 1 else list(self.audience)
        parts = [f"issuer={self.issuer!r}", f"audience={audience!r}", f"algorithms={list(self.algorithms)!r}"]
        if isinstance(self._keys, StaticKeys):
            parts.append(f"keys={len(self._keys.keyset)}")
        if self.typ:
            parts.append(f"typ={self.typ!r}")
        if self.token_from != ("header",):
            parts.append(f"token_from={list(self.token_from)!r}")
        if self.optional:
            parts.append("optional=True")
        return f"BearerAuth({', '.join(parts)})"
