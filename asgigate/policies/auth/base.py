"""Identity, the Authenticator base policy, and AnyAuth (several authenticators on one route).

An authenticator's one extension point is `authenticate(exchange)`: return an `Identity` when the request
carries valid credentials, `None` when it carries none of the kind the authenticator reads, and raise an
`Unauthorized` error (usually `InvalidToken`) when it carries credentials that are not valid. The policy hook
then sets `exchange.identity` or refuses with 401 and the authenticator's `WWW-Authenticate` challenge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError, Unauthorized
from ...policy import Policy

if TYPE_CHECKING:
    from starlette.responses import Response

    from ...exchange import Exchange

__all__ = ["AnyAuth", "Authenticator", "Identity"]

EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Identity:
    """Who made the request, as verified by an authenticator; found on `exchange.identity`.

    `subject` is the token's `sub` (or the API key consumer's name), `claims` the verified token claims (or
    the consumer's metadata), `scopes` the granted scopes, `client_id` the OAuth client (`client_id` or `azp`
    claim), `method` what authenticated it (`"jwt"`, `"api_key"`), and `consumer` the API key consumer.
    """

    subject: str | None
    claims: Mapping[str, Any] = field(default_factory=lambda: EMPTY, repr=False)
    scopes: frozenset[str] = frozenset()
    client_id: str | None = None
    method: str = "jwt"
    consumer: Any = None
    expires_at: float | None = field(default=None, repr=False)

    def claim(self, name: str, default: Any = None) -> Any:
        """A claim by name; a dotted name reaches into nested objects (``"realm_access.roles"``)."""
        return lookup(self.claims, name, default)


def lookup(claims: Mapping[str, Any], name: str, default: Any = None) -> Any:
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """`scope` (RFC 9068, space-separated) or `scp` (a list or a string, as some IdPs send it)."""
    value = claims.get("scope", claims.get("scp"))
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


TOKEN_SOURCES = ("header", "cookie", "query")


def token_sources(owner: str, token_from: str | Iterable[str]) -> tuple[tuple[str, str, str], ...]:
    """Parse `token_from` specs ("header", "header:X-Token", "cookie:name", "query:name") at build time."""
    specs = (token_from,) if isinstance(token_from, str) else tuple(token_from)
    if not specs:
        raise ConfigurationError(f"{owner} token_from names no place to read the token from.")
    parsed = []
    for spec in specs:
        kind, _, name = spec.partition(":")
        if kind not in TOKEN_SOURCES or (kind != "header" and not name):
            raise ConfigurationError(
                f"{owner} token_from {spec!r} must be 'header', 'header:<name>', 'cookie:<name>' or 'query:<name>'."
            )
        parsed.append((spec, kind, (name or "authorization").lower() if kind == "header" else name))
    return tuple(parsed)


def read_token(exchange: Exchange, sources: tuple[tuple[str, str, str], ...]) -> str | None:
    """The bearer token a request carries, from the first place in `sources` that has one."""
    for _, kind, name in sources:
        if kind == "header":
            wanted = name.encode("latin-1")
            value: str | None = None
            for key, raw in exchange.scope["headers"]:  # the first one, as Headers.get gives, without building it
                if key == wanted:
                    value = raw.decode("latin-1")
                    break
            if value is None:
                continue
            if name == "authorization":
                scheme, _, credentials = value.partition(" ")
                if scheme.lower() != "bearer":
                    continue
                value = credentials
            return value.strip()
        found = exchange.request.cookies.get(name) if kind == "cookie" else exchange.query_params.get(name)
        if found is not None:
            return found
    return None


class Authenticator(Policy):
    """Base of the policies that set `exchange.identity`. Subclasses implement `authenticate`.

    `optional=True` lets requests without credentials through with `exchange.identity` left as it was
    (`None`); credentials that are present but invalid are still refused.
    """

    optional: bool = False

    @property
    def challenge(self) -> str:
        """The `WWW-Authenticate` value sent when credentials are missing."""
        return "Bearer"

    async def authenticate(self, exchange: Exchange) -> Identity | None:
        """The request's identity, None when it carries no credentials; raise Unauthorized for bad ones."""
        raise TypeError(f"{type(self).__name__} must implement authenticate()")

    async def on_request(self, exchange: Exchange) -> Response | None:
        identity = await self.authenticate(exchange)
        if identity is None:
            if self.optional:
                return None
            raise Unauthorized("Authentication is required.", challenge=self.challenge)
        exchange.identity = identity
        return None


class AnyAuth(Authenticator):
    """``AnyAuth(BearerAuth(...), ApiKeyAuth(...))``: the first authenticator that succeeds wins.

    Each is tried in order. When none succeeds, the first error of one that found (invalid) credentials is
    raised; when none found credentials at all, the reply is 401 with every challenge.
    """

    def __init__(self, *authenticators: Authenticator, optional: bool = False) -> None:
        if not authenticators:
            raise ConfigurationError("AnyAuth needs at least one authenticator.")
        for item in authenticators:
            if not isinstance(item, Authenticator):
                raise ConfigurationError(f"AnyAuth takes authenticators, not {item!r}.")
        self.authenticators = tuple(authenticators)
        self.optional = optional

    @property
    def challenge(self) -> str:
        return ", ".join(dict.fromkeys(a.challenge for a in self.authenticators))

    async def authenticate(self, exchange: Exchange) -> Identity | None:
        refused: Unauthorized | None = None
        for authenticator in self.authenticators:
            try:
                identity = await authenticator.authenticate(exchange)
            except Unauthorized as error:
                refused = refused or error
                continue
            if identity is not None:
                return identity
        if refused is not None:
            raise refused
        return None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AnyAuth)
            and (self.authenticators, self.optional) == (other.authenticators, other.optional)
        )

    def __hash__(self) -> int:
        return hash((AnyAuth, self.authenticators, self.optional))

    def __repr__(self) -> str:
        inner = ", ".join(repr(a) for a in self.authenticators)
        return f"AnyAuth({inner}{', optional=True' if self.optional else ''})"
