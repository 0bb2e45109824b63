"""Verification keys: static (JWKS, JWK, PEM) or fetched from an issuer and cached.

`RemoteKeys` discovers the JWKS URI from ``{issuer}/.well-known/openid-configuration`` (or is given it), and
keeps the key set in memory. It refreshes the set in the background once it is older than `ttl` while still
serving the keys it has, refetches at once when a token names a `kid` it does not know (at most once per
`min_refresh_interval`, so a stream of made-up kids cannot turn the gateway against the IdP), and keeps serving
the cached keys when the IdP cannot be reached. Fetches use a short-lived httpx client: they are rare, and it
spares the policy a lifecycle of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey, import_key

from ..._httpx import PolicyClient, translate
from ...errors import ConfigurationError, UpstreamError, UpstreamUnavailable

__all__ = ["KeySet", "RemoteKeys", "StaticKeys", "load_keys"]

logger = logging.getLogger("asgigate.auth")

# Which key type (and EC curve) each JWS algorithm verifies with.
KEY_TYPES: dict[str, tuple[type[Key], str | None]] = {
    "RS256": (RSAKey, None), "RS384": (RSAKey, None), "RS512": (RSAKey, None),
    "PS256": (RSAKey, None), "PS384": (RSAKey, None), "PS512": (RSAKey, None),
    "ES256": (ECKey, "P-256"), "ES384": (ECKey, "P-384"), "ES512": (ECKey, "P-521"), "ES256K": (ECKey, "secp256k1"),
    "EdDSA": (OKPKey, None), "Ed25519": (OKPKey, "Ed25519"),
    "HS256": (OctKey, None), "HS384": (OctKey, None), "HS512": (OctKey, None),
}

MAX_DOCUMENT_BYTES = 1_000_000

KeyInput = Key | Mapping[str, Any] | str | bytes


def fits(key: Key, alg: str) -> bool:
    """Whether `key` may verify a signature made with `alg` (type, curve, and the key's own alg/use)."""
    kind, curve = KEY_TYPES.get(alg, (None, None))
    if kind is None or not isinstance(key, kind):
        return False
    if curve is not None and key.get("crv") != curve:
        return False
    if key.get("alg") not in (None, alg):
        return False
    return key.get("use") in (None, "sig")


class KeySet:
    """An immutable set of public verification keys, looked up by `kid` (and algorithm)."""

    __slots__ = ("by_kid", "keys", "unnamed")

    def __init__(self, keys: Iterable[Key]) -> None:
        self.keys: tuple[Key, ...] = tuple(keys)
        self.by_kid: dict[str, list[Key]] = {}
        self.unnamed = tuple(key for key in self.keys if key.kid is None)
        for key in self.keys:
            if key.kid is not None:
                self.by_kid.setdefault(key.kid, []).append(key)

    def find(self, kid: str | None, alg: str) -> Key | None:
        """The key for a token header: by `kid`, else the one key without a kid that fits the algorithm."""
        candidates = self.by_kid.get(kid, []) if kid is not None else self.keys
        if not candidates:  # keys without a kid (PEM keys, some JWKS) serve any kid, when unambiguous
            candidates = self.unnamed
        fitting = [key for key in candidates if fits(key, alg)]
        return fitting[0] if len(fitting) == 1 else None

    def kids(self) -> list[str]:
        return sorted(self.by_kid)

    def __len__(self) -> int:
        return len(self.keys)


def _public(key: Key) -> Key:
    if isinstance(key, OctKey):
        return key
    return import_key(dict(key.as_dict(private=False)))


def _from_pem(data: bytes) -> Key:
    try:
        loaded: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            loaded = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as error:
            raise ConfigurationError("A key is neither a JWK nor a PEM public or private key.") from error
    if isinstance(loaded, rsa.RSAPublicKey):
        return RSAKey.import_key(loaded)
    if isinstance(loaded, ec.EllipticCurvePublicKey):
        return ECKey.import_key(loaded)
    if isinstance(loaded, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return OKPKey.import_key(loaded)
    raise ConfigurationError(f"Unsupported PEM key type {type(loaded).__name__}.")


def _jwks_keys(document: Any) -> list[Key]:
    """The usable keys of a JWKS document; keys of unknown types or for encryption are skipped (RFC 7517 5)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: list[Key] = []
    for data in document["keys"]:
        if not isinstance(data, Mapping) or data.get("use") not in (None, "sig"):
            continue
        try:
            keys.append(_public(import_key(dict(data))))
        except (JoseError, ValueError, TypeError, KeyError):
            continue
    return keys


def load_keys(keys: KeyInput | Sequence[KeyInput]) -> KeySet:
    """Static keys: a JWKS dict, a JWK dict, a PEM string or bytes, a joserfc key, or a list of those."""
    items: Sequence[KeyInput] = (
        [keys] if isinstance(keys, Key | Mapping | str | bytes) else list(keys)
    )
    loaded: list[Key] = []
    for item in items:
        if isinstance(item, Key):
            loaded.append(_public(item))
        elif isinstance(item, Mapping) and "keys" in item:
            loaded.extend(_jwks_keys(item))
        elif isinstance(item, Mapping):
            try:
                loaded.append(_public(import_key(dict(item))))
            except (JoseError, ValueError, TypeError, KeyError) as error:
                raise ConfigurationError(f"Invalid JWK: {error}") from error
        elif isinstance(item, str | bytes):
            loaded.append(_from_pem(item.encode() if isinstance(item, str) else item))
        else:
            raise ConfigurationError(f"Unsupported key {item!r}.")
    if not loaded:
        raise ConfigurationError("No usable verification keys were given.")
    return KeySet(loaded)


class StaticKeys:
    """Keys given in code or configuration; never refreshed."""

    def __init__(self, keys: KeyInput | Sequence[KeyInput]) -> None:
        self.keyset = load_keys(keys)

    async def find(self, kid: str | None, alg: str) -> Key | None:
        return self.keyset.find(kid, alg)

    async def aclose(self) -> None:
        """Nothing to close: the keys were given."""

    def __repr__(self) -> str:
        return f"StaticKeys({len(self.keyset)} keys)"


class RemoteKeys:
    """The issuer's published keys, discovered, cached and refreshed (see the module docstring)."""

    def __init__(
        self,
        issuer: str,
        *,
        jwks_uri: str | None = None,
        ttl: float = 600.0,
        min_refresh_interval: float = 30.0,
        timeout: float | httpx.Timeout = 5.0,
        verify: Any = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or min_refresh_interval < 0:
            raise ConfigurationError("RemoteKeys ttl must be positive and min_refresh_interval not negative.")
        self.issuer = issuer
        self.jwks_uri = jwks_uri
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self.verify = verify
        self._clock = clock
        # A shared cache, not per-request state: every request benefits from one fetch.
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._discovered_uri: str | None = jwks_uri
        self._lock: asyncio.Lock | None = None
        self._background: asyncio.Task[None] | None = None
        self._failure: UpstreamError | None = None  # why the last fetch failed
        self._http = PolicyClient(timeout=timeout, verify=verify)  # one client for every fetch, closed by aclose()

    async def aclose(self) -> None:
        """Stop a background refresh and close the client (the owning policy's `aclose()` calls this)."""
        background, self._background = self._background, None
        if background is not None and not background.done():
            background.cancel()
            try:
                await background
            except asyncio.CancelledError:
                pass
        await self._http.aclose()

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    async def find(self, kid: str | None, alg: str) -> Key | None:
        now = self._clock()
        if self._keys is None:
            await self._refresh(now)
        elif now - self._fetched_at > self.ttl and now - self._attempted_at >= self.min_refresh_interval:
            # Stale: serve what we have, refresh in the background.
            if self._background is None or self._background.done():
                self._background = asyncio.create_task(self._refresh(now))
        keys = self._keys
        if keys is None:
            if self._failure is not None:  # why the last fetch failed: a timeout is a 504, as everywhere
                raise type(self._failure)(self._failure.detail, stage="jwks", upstream=self.issuer,
                                          internal=self._failure.internal)
            raise UpstreamUnavailable(
                "The identity provider's signing keys are not available.", stage="jwks", upstream=self.issuer
            )
        key = keys.find(kid, alg)
        if key is None and kid is not None and now - self._attempted_at >= self.min_refresh_interval:
            await self._refresh(now)  # an unknown kid may be a key the IdP just rotated in
            key = self._keys.find(kid, alg) if self._keys is not None else None
        return key

    async def _refresh(self, requested_at: float) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._attempted_at >= requested_at or (
                self._keys is None and requested_at - self._attempted_at < self.min_refresh_interval
            ):
                return  # someone else fetched meanwhile, or a failed fetch is too recent to retry
            self._attempted_at = self._clock()
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as error:
                logger.warning("could not fetch the signing keys of %s: %s", self.issuer, error,
                               extra={"issuer": self.issuer})
                self._failure = translate(error, stage="jwks", upstream=self.issuer, dependency=True,
                                          detail="The identity provider's signing keys are not available.")
                return
            self._failure = None
            self._keys = keys
            self._fetched_at = self._clock()

    async def _get_json(self, client: httpx.AsyncClient, url: str) -> Any:
        response = await client.get(url, headers={"accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url} answered a document over {MAX_DOCUMENT_BYTES} bytes")
        return response.json()

    async def _fetch(self) -> KeySet:
        client = self._http.get()
        if self._discovered_uri is None:
            metadata = await self._get_json(client, self.discovery_url)
            if not isinstance(metadata, Mapping) or metadata.get("issuer") != self.issuer:
                raise ValueError(f"the discovery document of {self.issuer} names another issuer")
            uri = metadata.get("jwks_uri")
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                raise ValueError(f"the discovery document of {self.issuer} has no jwks_uri")
            self._discovered_uri = uri
        keys = _jwks_keys(await self._get_json(client, self._discovered_uri))
        if not keys:
            raise ValueError(f"{self._discovered_uri} has no usable signing keys")
        return KeySet(keys)

    def __repr__(self) -> str:
        return f"RemoteKeys({self.jwks_uri or self.discovery_url!r})"
