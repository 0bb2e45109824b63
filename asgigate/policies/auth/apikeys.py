"""API keys mapped to consumers. Keys are stored hashed: configuration never holds a usable key.

API keys are long random strings, so one SHA-256 is the right hash (a slow password hash would only slow every
request down). ``hash_api_key("...")`` gives the ``"sha256:<hex>"`` form that `Consumer` takes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..._frozen import Frozen
from ...errors import ConfigurationError, Unauthorized
from ._scope import remove_query_param
from .base import EMPTY, Authenticator, Identity

if TYPE_CHECKING:
    from ...exchange import Exchange

__all__ = ["ApiKeyAuth", "Consumer", "hash_api_key"]

HASHED = re.compile(r"^sha256:[0-9a-f]{64}$")


def hash_api_key(key: str) -> str:
    """The stored form of an API key: ``"sha256:" + hex digest``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Consumer:
    """Who an API key belongs to: ``Consumer("mobile-app", keys=[hash_api_key(k)], metadata={"plan": "gold"})``.

    `keys` are hashed keys (several, so a key can be rotated without downtime); `scopes` are granted to the
    identity like a token's scopes; `metadata` is for later policies (a rate-limit plan, a tenant).
    """

    name: str
    keys: tuple[str, ...] = ()
    scopes: frozenset[str] = frozenset()
    metadata: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def __post_init__(self) -> None:
        keys = (self.keys,) if isinstance(self.keys, str) else tuple(self.keys)
        if not self.name:
            raise ConfigurationError("A Consumer needs a name.")
        for key in keys:
            if not isinstance(key, str) or not HASHED.match(key):
                raise ConfigurationError(
                    f"Consumer {self.name!r}: keys are stored hashed; give hash_api_key(key) ('sha256:<hex>'), "
                    "never the key itself."
                )
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "scopes", frozenset(self.scopes))
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    def __hash__(self) -> int:
        return hash((self.name, self.keys))

    def __repr__(self) -> str:
        return f"Consumer({self.name!r}, {len(self.keys)} key{'s' if len(self.keys) != 1 else ''})"


class ApiKeyAuth(Frozen, Authenticator):
    """``ApiKeyAuth([Consumer(...), ...], header="x-api-key")``; ``query="api_key"`` reads a query parameter too.

    The identity's `subject` is the consumer's name, `consumer` the `Consumer`, `claims` its metadata.
    `hide_credentials` (the default) removes the key from the request before it is forwarded, so upstreams and
    their logs never see it. An unknown key is 401 with reason `invalid_api_key`; a request with more than one
    key (the header twice, or the header and the query parameter) is 400 `invalid_request`.
    """

    def __init__(
        self,
        consumers: Iterable[Consumer],
        *,
        header: str | None = "x-api-key",
        query: str | None = None,
        hide_credentials: bool = True,
        optional: bool = False,
    ) -> None:
        self.consumers = tuple(consumers)
        if header is None and query is None:
            raise ConfigurationError("ApiKeyAuth needs a header or a query parameter to read the key from.")
        self.header = header.lower() if header else None
        self.query = query
        self.hide_credentials = hide_credentials
        self.optional = optional
        # Both places are read whichever has the key: a key in each (or one twice) is refused, not half-checked.
        self._places = ([f"header:{self.header}"] if self.header else []) + ([f"query:{query}"] if query else [])
        self.places = tuple((kind, name) for kind, _, name in (place.partition(":") for place in self._places))
        self._by_hash: dict[str, Consumer] = {}
        for consumer in self.consumers:
            if not isinstance(consumer, Consumer):
                raise ConfigurationError(f"ApiKeyAuth takes Consumer objects, not {consumer!r}.")
            for key in consumer.keys:
                other = self._by_hash.setdefault(key.removeprefix("sha256:"), consumer)
                if other is not consumer:
                    raise ConfigurationError(f"Consumers {other.name!r} and {consumer.name!r} share an API key.")

    @property
    def challenge(self) -> str:
        return f'ApiKey header="{self.header}"' if self.header else f'ApiKey query="{self.query}"'

    async def authenticate(self, exchange: Exchange) -> Identity | None:
        key = self.credential(exchange, *self._places)
        if key is None:
            return None
        consumer = self._by_hash.get(hashlib.sha256(key.encode()).hexdigest())
        if consumer is None:
            error = Unauthorized("The API key is not valid.", challenge=self.challenge)
            error.reason = "invalid_api_key"
            raise error
        if self.hide_credentials:
            if self.header:
                exchange.replace_headers([self.header.encode()])
            if self.query:
                remove_query_param(exchange, self.query)
        return Identity(subject=consumer.name, claims=consumer.metadata, scopes=consumer.scopes,
                        method="api_key", consumer=consumer)

    def _config(self) -> tuple[Any, ...]:
        return (self.consumers, self.header, self.query, self.hide_credentials, self.optional)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKeyAuth) and self._config() == other._config()

    def __hash__(self) -> int:
        return hash(self._config())

    def __repr__(self) -> str:
        where = [f"header={self.header!r}"] if self.header else []
        if self.query:
            where.append(f"query={self.query!r}")
        names = [c.name for c in self.consumers]
        return f"ApiKeyAuth({names!r}, {', '.join(where)}{', optional=True' if self.optional else ''})"
