"""Authentication and authorization at the edge: JWT bearer tokens, API keys, rules, identity forwarding,
browser login (OIDC relying party) with token relay.

`BearerAuth`, `OIDCLogin`, `SessionAuth` and `TokenRelay` need the `auth` extra (``pip install 'asgigate[auth]'``,
for joserfc); they are imported on first use, so the rest works without it.
"""

from typing import TYPE_CHECKING, Any

from .apikeys import ApiKeyAuth, Consumer, hash_api_key
from .base import AnyAuth, Authenticator, Identity
from .client_credentials import ClientCredentials
from .forward import ForwardAuth
from .identity import ForwardIdentity
from .introspection import IntrospectionAuth
from .rules import Authorize

if TYPE_CHECKING:
    from .jwt import BearerAuth
    from .oidc_login import CookieSessions, MemorySessions, OIDCLogin, RedisSessions, SessionAuth, TokenRelay

__all__ = [
    "AnyAuth",
    "ApiKeyAuth",
    "Authenticator",
    "Authorize",
    "BearerAuth",
    "ClientCredentials",
    "Consumer",
    "CookieSessions",
    "ForwardAuth",
    "ForwardIdentity",
    "Identity",
    "IntrospectionAuth",
    "MemorySessions",
    "OIDCLogin",
    "RedisSessions",
    "SessionAuth",
    "TokenRelay",
    "hash_api_key",
]


_LOGIN = frozenset({"CookieSessions", "MemorySessions", "OIDCLogin", "RedisSessions", "SessionAuth", "TokenRelay"})


def __getattr__(name: str) -> Any:
    if name == "BearerAuth" or name in _LOGIN:
        try:
            from . import jwt, oidc_login
        except ImportError as error:  # pragma: no cover - depends on the installed extras
            raise ImportError(f"{name} needs joserfc: pip install 'asgigate[auth]'") from error
        return getattr(oidc_login if name in _LOGIN else jwt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
