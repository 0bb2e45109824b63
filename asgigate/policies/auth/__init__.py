"""Authentication and authorization at the edge: JWT bearer tokens, API keys, rules, identity forwarding.

`BearerAuth` needs the `auth` extra (``pip install 'asgigate[auth]'``, for joserfc); it is imported on first
use, so the rest works without it.
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

__all__ = [
    "AnyAuth",
    "ApiKeyAuth",
    "Authenticator",
    "Authorize",
    "BearerAuth",
    "ClientCredentials",
    "Consumer",
    "ForwardAuth",
    "ForwardIdentity",
    "Identity",
    "IntrospectionAuth",
    "hash_api_key",
]


def __getattr__(name: str) -> Any:
    if name == "BearerAuth":
        try:
            from .jwt import BearerAuth
        except ImportError as error:  # pragma: no cover - depends on the installed extras
            raise ImportError("BearerAuth needs joserfc: pip install 'asgigate[auth]'") from error
        return BearerAuth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
