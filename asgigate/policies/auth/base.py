"""Identity, the Authenticator base policy, and AnyAuth (several authenticators on one route).

An authenticator's one extension point is `authenticate(exchange)`: return an `Identity` when the request
carries valid credentials, `None` when it carries none of the kind the authenticator reads, and raise an
`Unauthorized` error (usually `InvalidToken`) when it carries credentials that are not valid. Credentials are
read with `credential()` (or `read_token` for bearer tokens), which refuses a request that carries more than one
(400 `InvalidRequest`), so that the credential checked is the only one forwarded. The policy hook
then sets `exchange.identity` or refuses with 401 and the authenticator's `WWW-Authenticate` challenge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookies import _unquote
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..._frozen import Frozen
from ...errors import ConfigurationError, InvalidRequest, Unauthorized
from ...pipeline import Policy

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
    parsed: dict[tuple[str, str], tuple[str, str, str]] = {}
    for spec in specs:
        kind, _, name = spec.partition(":")
        if kind not in TOKEN_SOURCES or (kind != "header" and not name):
            raise ConfigurationError(
                f"{owner} token_from {spec!r} must be 'header', 'header:<name>', 'cookie:<name>' or 'query:<name>'."
            )
        name = (name or "authorization").lower() if kind == "header" else name
        parsed.setdefault((kind, name), (spec, kind, name))  # a place named twice is read (and counted) once
    return tuple(parsed.values())


# --- one credential per request -------------------------------------------------------------------------------
# A policy that checks one copy of a credential while the request carries another lets the unchecked one reach
# the upstream, which may read the last copy, or join them (RFC 9110 5.3 joins repeated lines with commas,
# though `Authorization` is not a list header). So every place a policy reads a credential from is read in
# full, every copy counted, and a request with more than one is refused (RFC 6750 3.1 `invalid_request`).


def presented(exchange: Exchange, kind: str, name: str) -> list[str]:
    """Every value a request carries in one place: each `name` header line (`name` in lower case, as ASGI gives
    header names), each `name` cookie across all `Cookie` lines (HTTP/2 sends one line per cookie), or each
    `name` query parameter."""
    if kind == "query":
        return exchange.query_params.getlist(name) if exchange.scope.get("query_string") else []
    cookie = kind == "cookie"
    wanted = b"cookie" if cookie else name.encode("latin-1")
    values: list[str] = []
    for key, raw in exchange.scope["headers"]:
        if key == wanted:
            if cookie:
                values += cookies_named(raw.decode("latin-1"), name)
            else:
                values.append(raw.decode("latin-1"))
    return values


def cookies_named(line: str, name: str) -> list[str]:
    """The values of the cookies called `name` in one `Cookie` line, parsed as Starlette parses them."""
    if name not in line:
        return []
    found = []
    for chunk in line.split(";"):
        key, equals, value = chunk.partition("=")
        if equals and key.strip() == name:
            found.append(_unquote(value.strip()))
    return found


def with_error(challenge: str, error: str) -> str:
    """One challenge with an RFC 6750 `error` parameter: ``Bearer`` -> ``Bearer error="invalid_request"``."""
    scheme, _, params = challenge.partition(" ")
    return f'{scheme} {params + ", " if params else ""}error="{error}"'


def ambiguous(what: str, places: str, challenge: str | None = None) -> InvalidRequest:
    return InvalidRequest(f"The request carries more than one {what}.", challenge=challenge,
                          internal=f"more than one {what} in {places}")


def only_one(exchange: Exchange, places: Sequence[tuple[str, str]], what: str,
             challenge: str | None = None) -> str | None:
    """The one value the request carries in `places` ((kind, name) pairs, see `presented`), or None when it
    carries none; a request with more than one is refused with 400 `invalid_request` (`challenge` sent as
    `WWW-Authenticate`; the default is Bearer's, ``""`` sends none)."""
    found: str | None = None
    for kind, name in places:
        for value in presented(exchange, kind, name):
            if found is not None:
                raise ambiguous(what, ", ".join(f"{k} {n}" for k, n in places), challenge)
            found = value
    return found


def read_token(exchange: Exchange, sources: tuple[tuple[str, str, str], ...],
               challenge: str | None = None) -> str | None:
    """The bearer token a request carries in one of `sources`, or None. A request with a token in more than one
    of them, or with a place repeated (two `Authorization` lines, whatever their schemes), is refused with 400
    `invalid_request`: the token checked must be the only one that goes upstream."""
    token: str | None = None
    for _, kind, name in sources:
        values = presented(exchange, kind, name)
        if not values:
            continue
        if len(values) > 1:
            raise ambiguous("access token", f"{kind} {name}", challenge)
        value = values[0]
        if kind == "header":
            if name == "authorization":
                scheme, _, value = value.partition(" ")
                if scheme.lower() != "bearer":
                    continue  # another scheme's credentials: not a bearer token, left for others to judge
            value = value.strip()
        if token is not None:
            raise ambiguous("access token", ", ".join(spec for spec, _, _ in sources), challenge)
        token = value
    return token


class Authenticator(Policy):
    """Base of the policies that set `exchange.identity`. Subclasses implement `authenticate`.

    `optional=True` lets requests without credentials through with `exchange.identity` left as it was
    (`None`); credentials that are present but invalid are still refused.
    """

    optional: bool = False
    # Where the authenticator reads credentials, as (kind, name) pairs (see `presented`): under `AnyAuth`, a
    # credential in one of these places next to the one another authenticator accepted makes the request
    # ambiguous. An authenticator that leaves it empty takes no part in that check.
    places: tuple[tuple[str, str], ...] = ()

    @property
    def challenge(self) -> str:
        """The `WWW-Authenticate` value sent when credentials are missing."""
        return "Bearer"

    def credential(self, exchange: Exchange, *places: str) -> str | None:
        """The one credential the request carries in `places` (``"header:x-api-key"``, ``"query:api_key"``,
        ``"cookie:sid"``), or None. A request with more than one (the header twice, a header and a query
        parameter, the cookie twice) is refused with 400 `invalid_request`, the challenge with
        ``error="invalid_request"``: the credential checked must be the only one that reaches the upstream."""
        parsed = [(kind, name.lower() if kind == "header" else name)
                  for kind, _, name in (place.partition(":") for place in places)]
        return only_one(exchange, parsed, "credential", with_error(self.challenge, "invalid_request"))

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


class AnyAuth(Frozen, Authenticator):
    """``AnyAuth(BearerAuth(...), ApiKeyAuth(...))``: the first authenticator that succeeds wins.

    Each is tried in order. When none succeeds, the first error of one that found (invalid) credentials is
    raised; when none found credentials at all, the reply is 401 with every challenge. When one succeeds while the
    request also carries a credential in another one's `places` (an API key next to an accepted bearer token, or a
    refused token next to an accepted key), the request is refused with 400 `invalid_request`: the unchecked
    credential would otherwise reach the upstream. Authenticators that read the same place (`BearerAuth` and
    `IntrospectionAuth` on `Authorization`) share one credential, which is not ambiguous.
    """

    def __init__(self, *authenticators: Authenticator, optional: bool = False) -> None:
        if not authenticators:
            raise ConfigurationError("AnyAuth needs at least one authenticator.")
        for item in authenticators:
            if not isinstance(item, Authenticator):
                raise ConfigurationError(f"AnyAuth takes authenticators, not {item!r}.")
        self.authenticators = tuple(authenticators)
        self.optional = optional
        self.places = tuple(dict.fromkeys(place for item in authenticators for place in item.places))

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
                self._alone(exchange, authenticator)
                return identity
        if refused is not None:
            raise refused
        return None

    async def aclose(self) -> None:
        """Close every authenticator's resources (the gateway only sees this one in the chain)."""
        for authenticator in self.authenticators:
            await authenticator.aclose()

    def _alone(self, exchange: Exchange, accepted: Authenticator) -> None:
        """Refuse a request that carries, besides the credential `accepted` checked, one for another authenticator."""
        read = set(accepted.places)
        for other in self.authenticators:
            if other is accepted:
                continue
            for kind, name in other.places:
                if (kind, name) not in read and presented(exchange, kind, name):
                    raise ambiguous("kind of credential", f"{kind} {name}, besides what {accepted!r} accepted",
                                    with_error(accepted.challenge, "invalid_request"))

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
